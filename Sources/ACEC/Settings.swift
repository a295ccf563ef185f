import ACE
import Glibc

/// Every `PretrainConfig` setting with its default, as JSON (snake_case keys; grid and augment
/// nested): the one copy of the defaults, which Python's `ace.PretrainConfig` reads.
@_cdecl("ace_pretrain_config_defaults")
public func ace_pretrain_config_defaults() -> UnsafePointer<CChar>? { UnsafePointer(pretrainDefaults) }

/// The encoder presets (ViT and Swin), as a JSON list of names.
@_cdecl("ace_presets")
public func ace_presets() -> UnsafePointer<CChar>? { UnsafePointer(presetNames) }

private let pretrainDefaults: UnsafeMutablePointer<CChar> = strdup(PretrainConfig.defaultsJSON)!
private let presetNames: UnsafeMutablePointer<CChar> =
    strdup("[" + (ViTConfig.presets.keys.sorted() + SwinConfig.presets.keys.sorted())
        .map { "\"\($0)\"" }.joined(separator: ", ") + "]")!
