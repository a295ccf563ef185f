import FoundationEssentials

/// timm's SwinTransformer up to `forward_features`: patch embedding (a stride-4 convolution,
/// then LayerNorm), stages of Swin blocks (stage i > 0 opens with a patch merging, timm 1.x's
/// `layers.{i}.downsample`), final LayerNorm. No class token: the image embedding is the mean
/// of the final tokens (`pool`). Parameter names are timm's.
public final class SwinTransformer {
    public let config: SwinConfig
    public let patchEmbed: PatchEmbed
    public let embedNorm: LayerNorm
    /// downsamples[i] opens stage i (nil for stage 0).
    public let downsamples: [PatchMerging?]
    public let stages: [[SwinBlock]]
    public let norm: LayerNorm
    public let parameters: [Parameter]
    /// The output of the last forward, (B, g*g, C_final) with g = config.finalGrid, tokens
    /// row-major; valid until the next forward.
    public let output = Tensor([0])
    private let patches = Tensor([0]), tokens = Tensor([0]), grad = Tensor([0])
    private let inference = SwinInferenceScratch()

    /// How the products of every linear layer are computed (the window attention's own
    /// products stay fp32).
    public var precision: Precision = .fp32 {
        didSet {
            patchEmbed.proj.precision = precision
            for d in downsamples { d?.reduction.precision = precision }
            for stage in stages {
                for b in stage {
                    for l in [b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2] { l.precision = precision }
                }
            }
        }
    }

    public init(_ config: SwinConfig, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        let c = config.embedDim
        patchEmbed = PatchEmbed("patch_embed", inChans: config.inChans, dim: c, patch: config.patchSize)
        embedNorm = LayerNorm("patch_embed.norm", c, eps: 1e-5)
        // Stochastic depth grows linearly over all blocks of all stages, as in timm.
        let total = config.depths.reduce(0, +)
        let scratch = BlockScratch()
        var downs: [PatchMerging?] = [], stages: [[SwinBlock]] = [], k = 0
        for i in 0..<config.stages {
            downs.append(i == 0 ? nil : PatchMerging("layers.\(i).downsample", dim: config.dim(i - 1),
                                                      side: config.resolution(i - 1)))
            stages.append((0..<config.depths[i]).map { j in
                let rate = total > 1 ? config.dropPath * Float(k + j) / Float(total - 1) : config.dropPath
                return SwinBlock("layers.\(i).blocks.\(j)", dim: config.dim(i), heads: config.numHeads[i],
                                 side: config.resolution(i), window: config.window(i),
                                 shift: j % 2 == 1 ? config.shift(i) : 0, mlpRatio: config.mlpRatio,
                                 dropPath: rate, scratch: scratch)
            })
            k += config.depths[i]
        }
        downsamples = downs
        self.stages = stages
        norm = LayerNorm("norm", config.numFeatures, eps: 1e-5)
        var ps = patchEmbed.parameters + embedNorm.parameters
        for i in 0..<config.stages {
            ps += downs[i]?.parameters ?? []
            ps += stages[i].flatMap { $0.parameters }
        }
        parameters = ps + norm.parameters
        var rng = RNG(seed: seed)
        initialize(&rng)
    }

    /// timm's init: truncated normal (std 0.02) for linear weights and the relative position
    /// bias tables, zero biases, LayerNorm weight 1 and bias 0.
    private func initialize(_ rng: inout RNG) {
        patchEmbed.proj.initialize(&rng)
        for i in 0..<config.stages {
            downsamples[i]?.reduction.initialize(&rng)
            for b in stages[i] { b.initialize(&rng) }
        }
    }

    public func zeroGrad() { for p in parameters { p.grad.zero() } }

    /// x: (B, in_chans, S, S) normalized, S = img_size -> (B, g*g, C_final) after the final norm.
    @discardableResult
    public func forward(_ x: Tensor, training: Bool = false, rng: inout RNG) throws -> Tensor {
        try checkInput(x)
        patchEmbed.forward(x, into: patches)
        embedNorm.forward(patches, into: tokens)
        var current = tokens
        for i in 0..<config.stages {
            if let d = downsamples[i] { current = d.forward(current) }
            for b in stages[i] { current = b.forward(current, training: training, rng: &rng) }
        }
        norm.forward(current, into: output)
        return output
    }

    /// Inference forward that keeps nothing for backward: the blocks update the tokens in place
    /// and share one set of intermediate buffers. A backward must not follow it.
    @discardableResult
    public func infer(_ x: Tensor) throws -> Tensor {
        try checkInput(x)
        patchEmbed.forward(x, into: patches)
        embedNorm.forward(patches, into: tokens, keep: false)
        var current = tokens
        for i in 0..<config.stages {
            if let d = downsamples[i] { current = d.forward(current, keep: false) }
            for b in stages[i] { b.infer(current, shared: inference) }
        }
        norm.forward(current, into: output, keep: false)
        return output
    }

    /// Backward of the last forward: accumulates every parameter gradient and, when dx is
    /// given, writes the gradient with respect to the input image.
    public func backward(_ dy: Tensor, inputGrad dx: Tensor? = nil) {
        norm.backward(dy, into: grad)
        for i in (0..<config.stages).reversed() {
            for b in stages[i].reversed() { b.backward(grad, into: grad) }
            downsamples[i]?.backward(grad, into: grad)
        }
        embedNorm.backward(grad, into: patches)
        patchEmbed.backward(patches, into: dx)
    }

    /// Checks an input shape (B, in_chans, S, S) against the config and the size limits.
    /// Swin's windows, masks and bias tables are built for one grid: inputs are img_size square.
    public func checkInputShape(_ s: [Int]) throws {
        let size = config.imgSize
        try checkBatchLayout(s, inChans: config.inChans)
        try require(s[2] == size && s[3] == size,
                    "input size \(s[2])x\(s[3]) must be the Swin encoder's img_size \(size)x\(size)")
        try Limits.requireMemory(config.activationBytes(batch: s[0]),
                                 for: "a forward of \(s[0]) images of \(size)x\(size)")
    }
}

/// The image embedding of token encoders without a class token: the mean over tokens,
/// (B, T, C) -> (B, C), as timm's global average pool.
public func meanPool(_ x: Tensor, into y: Tensor) {
    let b = x.shape[0], t = x.shape[1], c = x.shape[2]
    y.reshape([b, c])
    y.zero()
    for i in 0..<b {
        let out = y.data + i * c
        for r in 0..<t {
            let row = x.data + (i * t + r) * c
            for j in 0..<c { out[j] += row[j] }
        }
        for j in 0..<c { out[j] /= Float(t) }
    }
}

/// Backward of `meanPool`: every token receives dy / T. dx (B, T, C).
public func meanPoolBackward(_ dy: Tensor, tokens t: Int, into dx: Tensor) {
    let b = dy.shape[0], c = dy.shape[1]
    dx.reshape([b, t, c])
    let inv = 1 / Float(t)
    for i in 0..<b {
        for r in 0..<t {
            for j in 0..<c { dx[(i * t + r) * c + j] = dy[i * c + j] * inv }
        }
    }
}

/// Encoder files of a Swin: timm-named F32 tensors, the config JSON and `backbone: swin` in
/// the metadata.
extension SwinTransformer {
    public static let backboneName = "swin"

    public var configJSON: String { canonicalJSON(config) }

    public static func config(fromJSON json: String) throws -> SwinConfig {
        try decodeConfig(json, as: SwinConfig.self, what: "Swin encoder") { try $0.validate() }
    }

    public func save(to path: String, extraMetadata: [String: String] = [:]) throws {
        var metadata = extraMetadata
        metadata["backbone"] = Self.backboneName
        try writeEncoderFile(to: path, metadata: metadata)
    }

    /// Loads a Swin encoder file, or the teacher encoder of a training checkpoint (see `loadEncoder`).
    public static func load(from path: String) throws -> SwinTransformer {
        guard let model = try loadEncoder(from: path) as? SwinTransformer else {
            throw ACEError("\(path) is not a Swin encoder file")
        }
        return model
    }

    /// An encoder file's Swin, from the file already read (training checkpoints: `loadEncoder`).
    static func load(metadata: [String: String], entries: [String: Safetensors.Entry],
                     path: String) throws -> SwinTransformer {
        try require(metadata["backbone"] == backboneName, "\(path) is not a Swin encoder file")
        guard let json = metadata["config"] else {
            throw ACEError("checkpoint \(path) has no encoder config in its metadata")
        }
        let cfg = try config(fromJSON: json)
        try requirePlausibleSize(parameters: cfg.parameterCount, entries: entries, path: path)
        let model = try SwinTransformer(cfg)
        try model.loadState(entries.mapValues { ($0.shape, $0.values) }, source: path)
        return model
    }

    /// Replaces every parameter; names, shapes and the set of tensors must match exactly.
    public func loadState(_ state: [String: (shape: [Int], values: [Float])], source: String) throws {
        try loadParameters(parameters, from: state, source: source)
    }
}
