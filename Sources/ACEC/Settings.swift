import ACE
import Glibc

/// Every `PretrainConfig` setting with its default, as JSON (snake_case keys; grid and augment
/// nested): the one copy of the defaults, which Python's `ace.PretrainConfig` reads.
@_cdecl("ace_pretrain_config_defaults")
public func ace_pretrain_config_defaults() -> UnsafePointer<CChar>? { UnsafePointer(pretrainDefaults) }

/// The settings a Swin encoder changes in a pretraining run (its view geometry), as JSON.
@_cdecl("ace_swin_geometry")
public func ace_swin_geometry() -> UnsafePointer<CChar>? { UnsafePointer(swinGeometry) }

/// The encoder presets as a JSON object: name -> width, depth(s) and heads (ViT: `embed_dim`,
/// `depth`, `num_heads`; Swin: `embed_dim`, `depths`, `num_heads` per stage).
@_cdecl("ace_presets")
public func ace_presets() -> UnsafePointer<CChar>? { UnsafePointer(presetShapes) }

private let pretrainDefaults: UnsafeMutablePointer<CChar> = strdup(PretrainConfig.defaultsJSON)!
private let swinGeometry: UnsafeMutablePointer<CChar> = strdup(PretrainConfig.swinGeometry)!
private let presetShapes: UnsafeMutablePointer<CChar> = {
    var shapes: [String: String] = [:]
    for (name, p) in ViTConfig.presets {
        shapes[name] = #"{"depth":\#(p.depth),"embed_dim":\#(p.dim),"num_heads":\#(p.heads)}"#
    }
    for (name, p) in SwinConfig.presets {
        shapes[name] = #"{"depths":\#(p.depths),"embed_dim":\#(p.dim),"num_heads":\#(p.heads)}"#
    }
    return strdup("{" + shapes.keys.sorted().map { "\"\($0)\": \(shapes[$0]!)" }.joined(separator: ", ") + "}")!
}()
