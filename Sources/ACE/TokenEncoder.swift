import FoundationEssentials

/// What the C ABI and the tools need from an encoder backbone (ViT or Swin): images
/// (B, in_chans, H, W) in, tokens (B, T, C) out after the final norm, explicit backward,
/// timm-named parameters, encoder files.
public protocol TokenEncoder: AnyObject {
    var parameters: [Parameter] { get }
    var configJSON: String { get }
    /// The output of the last forward.
    var output: Tensor { get }
    var precision: Precision { get set }
    func checkInputShape(_ s: [Int]) throws
    func forward(_ x: Tensor, training: Bool, rng: inout RNG) throws -> Tensor
    /// Inference forward; no backward may follow.
    func infer(_ x: Tensor) throws -> Tensor
    func backward(_ dy: Tensor, inputGrad dx: Tensor?)
    func zeroGrad()
    func save(to path: String, extraMetadata: [String: String]) throws
    /// Tokens before the final grid in `output`: a ViT's class token; none for a Swin.
    var prefixTokens: Int { get }
    /// Width of the output tokens.
    var tokenWidth: Int { get }
    /// Every stochastic-depth module, in forward order (pretraining keys their draws per image).
    var dropPaths: [DropPath] { get }
    /// The position parameters DINO's parameter groups decay (a ViT's class token and position
    /// embedding; a Swin's relative position bias tables).
    var positionParameters: [Parameter] { get }
}

extension VisionTransformer: TokenEncoder {
    public var prefixTokens: Int { 1 }
    public var tokenWidth: Int { config.embedDim }
    public var dropPaths: [DropPath] { blocks.flatMap { [$0.dropPath, $0.dropPath2] } }
    public var positionParameters: [Parameter] { [position.cls, position.pos] }
}

extension SwinTransformer: TokenEncoder {
    public var prefixTokens: Int { 0 }
    public var tokenWidth: Int { config.numFeatures }
    public var dropPaths: [DropPath] { stages.joined().flatMap { [$0.dropPath, $0.dropPath2] } }
    public var positionParameters: [Parameter] { stages.joined().map { $0.attn.relativePositionBiasTable } }
}

/// An encoder of a named preset: `swin_*` presets are Swin Transformers (window 7), the
/// others ViTs.
public func makeEncoder(preset: String, inChans: Int, imgSize: Int, dropPath: Float,
                        seed: UInt64) throws -> any TokenEncoder {
    if SwinConfig.presets[preset] != nil {
        return try SwinTransformer(SwinConfig(preset: preset, inChans: inChans, imgSize: imgSize, dropPath: dropPath),
                                   seed: seed)
    }
    guard ViTConfig.presets[preset] != nil else {
        let known = (ViTConfig.presets.keys.sorted() + SwinConfig.presets.keys.sorted()).joined(separator: ", ")
        throw ACEError("unknown preset '\(preset)'; choose one of \(known)")
    }
    return try VisionTransformer(ViTConfig(preset: preset, inChans: inChans, imgSize: imgSize, dropPath: dropPath),
                                 seed: seed)
}

/// An encoder from its config JSON: a Swin config has `depths`, a ViT config `depth`.
public func makeEncoder(configJSON json: String, seed: UInt64) throws -> any TokenEncoder {
    try EncoderSpec(configJSON: json).make(seed: seed)
}

extension EncoderSpec {
    public init(configJSON json: String) throws {
        struct Kind: Decodable { var depths: [Int]? }
        if let kind = try? JSONDecoder().decode(Kind.self, from: Data(json.utf8)), kind.depths != nil {
            self = .swin(try SwinTransformer.config(fromJSON: json))
        } else {
            self = .vit(try VisionTransformer.config(fromJSON: json))
        }
    }
}

/// Loads an encoder file of either backbone (metadata `backbone: swin` for Swin), or the
/// teacher encoder of a training checkpoint.
public func loadEncoder(from path: String) throws -> any TokenEncoder {
    let (metadata, entries) = try Safetensors.read(path)
    if metadata["format"] == Trainer.checkpointFormat {
        guard let json = metadata["encoder_config"] else {
            throw ACEError("training checkpoint \(path) has no encoder config in its metadata")
        }
        let spec = try EncoderSpec(configJSON: json)
        try requirePlausibleSize(parameters: spec.parameterCount, entries: entries, path: path)
        let model = try spec.make(seed: 0)
        var state: [String: (shape: [Int], values: [Float])] = [:]
        for (name, e) in entries where name.hasPrefix("teacher.") {
            state[String(name.dropFirst("teacher.".count))] = (e.shape, e.values)
        }
        try loadParameters(model.parameters, from: state, source: path)
        return model
    }
    if metadata["backbone"] == SwinTransformer.backboneName {
        return try SwinTransformer.load(metadata: metadata, entries: entries, path: path)
    }
    return try VisionTransformer.load(metadata: metadata, entries: entries, path: path)
}

extension TokenEncoder {
    /// Inference forward (no drop path, no randomness needed), keeping what backward needs.
    @discardableResult
    public func forward(_ x: Tensor) throws -> Tensor {
        var rng = RNG(seed: 0)
        return try forward(x, training: false, rng: &rng)
    }

    /// An encoder file: the parameters under timm's names, `metadata` with the format and the
    /// config added.
    func writeEncoderFile(to path: String, metadata: [String: String]) throws {
        var metadata = metadata
        metadata["format"] = "ace-encoder"
        metadata["config"] = configJSON
        try Safetensors.write(parameters.map { ($0.name, $0.shape, UnsafePointer($0.value.data)) },
                              metadata: metadata, to: path)
    }

    /// The shape check, then finiteness: what every forward checks first.
    func checkInput(_ x: Tensor) throws {
        try checkInputShape(x.shape)
        let n = x.count, d = x.data
        var finite = true
        for i in 0..<n where !d[i].isFinite { finite = false; break }
        try require(finite, "input contains NaN or infinite values")
    }
}

/// (B, in_chans, H, W) with a non-empty batch within the limits: the part of an input shape
/// check that every backbone shares.
func checkBatchLayout(_ s: [Int], inChans: Int) throws {
    try require(s.count == 4, "input must be (B, in_chans, H, W), got shape \(s)")
    try require(s[0] > 0, "empty batch")
    try Limits.require(s[0], in: 1...Limits.batch, "batch size")
    try require(s[1] == inChans, "input has \(s[1]) channels, the encoder expects \(inChans)")
}
