/// timm's VisionTransformer up to `forward_features`: patch embedding, class token and
/// position embedding, `depth` pre-norm blocks, final LayerNorm. Parameter names are timm's.
public final class VisionTransformer {
    public let config: ViTConfig
    public let patchEmbed: PatchEmbed
    public let position: PositionEmbedding
    public let blocks: [Block]
    public let norm: LayerNorm
    public let parameters: [Parameter]
    /// The output of the last forward, (B, 1 + h*w, C); valid until the next forward.
    public let output = Tensor([0])
    private let patches = Tensor([0]), tokens = Tensor([0])
    private let grad = Tensor([0]), gradPatches = Tensor([0])
    private let inference = InferenceScratch()
    private var gridShape = (0, 0)

    /// How the products of every linear layer and of attention are computed (the
    /// position-embedding resampling stays fp32).
    public var precision: Precision = .fp32 {
        didSet {
            patchEmbed.proj.precision = precision
            for b in blocks {
                b.attn.precision = precision
                b.mlp.fc1.precision = precision
                b.mlp.fc2.precision = precision
            }
        }
    }

    public init(_ config: ViTConfig, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        let c = config.embedDim
        patchEmbed = PatchEmbed("patch_embed", inChans: config.inChans, dim: c, patch: config.patchSize)
        position = PositionEmbedding(grid: config.grid, dim: c)
        // Stochastic depth grows linearly with depth, as in timm.
        let scratch = BlockScratch()
        blocks = (0..<config.depth).map { i in
            let rate = config.depth > 1 ? config.dropPath * Float(i) / Float(config.depth - 1) : config.dropPath
            return Block("blocks.\(i)", dim: c, heads: config.numHeads, mlpRatio: config.mlpRatio, dropPath: rate,
                         scratch: scratch)
        }
        norm = LayerNorm("norm", c)
        parameters = position.parameters + patchEmbed.parameters
            + blocks.flatMap { $0.parameters } + norm.parameters
        var rng = RNG(seed: seed)
        initialize(&rng)
    }

    /// timm's init: truncated normal (std 0.02) for linear and patch weights, zero biases,
    /// LayerNorm weight 1 and bias 0.
    private func initialize(_ rng: inout RNG) {
        position.initialize(&rng)
        patchEmbed.proj.initialize(&rng)
        for b in blocks {
            for l in [b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2] { l.initialize(&rng) }
        }
    }

    public func zeroGrad() { for p in parameters { p.grad.zero() } }

    /// x: (B, in_chans, H, W) normalized -> (B, 1 + h*w, C) after the final norm.
    @discardableResult
    public func forward(_ x: Tensor, training: Bool = false, rng: inout RNG) throws -> Tensor {
        try checkInput(x)
        let h = x.shape[2] / config.patchSize, w = x.shape[3] / config.patchSize
        gridShape = (h, w)
        patchEmbed.forward(x, into: patches)
        position.forward(patches, h: h, w: w, into: tokens)
        var current = tokens
        for b in blocks { current = b.forward(current, training: training, rng: &rng) }
        norm.forward(current, into: output)
        return output
    }

    /// Inference forward that keeps nothing for backward (as `forward(x)` otherwise): the
    /// blocks update the tokens in place and share one set of intermediate buffers. A
    /// backward must not follow it.
    @discardableResult
    public func infer(_ x: Tensor) throws -> Tensor {
        try checkInput(x)
        let h = x.shape[2] / config.patchSize, w = x.shape[3] / config.patchSize
        gridShape = (h, w)
        patchEmbed.forward(x, into: patches)
        position.forward(patches, h: h, w: w, into: tokens)
        for b in blocks { b.infer(tokens, shared: inference) }
        norm.forward(tokens, into: output, keep: false)
        return output
    }

    /// The last block's attention probabilities of the class token's query, (B, heads, T), from
    /// the last forward (the rows `Attention` keeps in `probs`, in the precision it ran): what
    /// DINO draws as attention maps. Each row sums to 1 over the T = 1 + h*w keys.
    public func classAttention() -> Tensor {
        let p = blocks[blocks.count - 1].attn.probs        // (B, heads, T, T)
        let b = p.shape[0], hN = p.shape[1], t = p.shape[2]
        let out = Tensor([b, hN, t])
        for bh in 0..<(b * hN) { (out.data + bh * t).update(from: p.data + bh * t * t, count: t) }
        return out
    }

    /// Backward of the last forward: accumulates every parameter gradient and, when dx is
    /// given, writes the gradient with respect to the input image.
    public func backward(_ dy: Tensor, inputGrad dx: Tensor? = nil) {
        norm.backward(dy, into: grad)
        for b in blocks.reversed() { b.backward(grad, into: grad) }
        position.backward(grad, into: gradPatches)
        patchEmbed.backward(gradPatches, into: dx)
    }

    /// Checks an input shape (B, in_chans, H, W) against the config and the size limits,
    /// before anything of that size is allocated.
    public func checkInputShape(_ s: [Int]) throws {
        let p = config.patchSize
        try checkBatchLayout(s, inChans: config.inChans)
        try require(s[2] >= p && s[3] >= p && s[2] % p == 0 && s[3] % p == 0,
                    "input size \(s[2])x\(s[3]) must be a positive multiple of the patch size \(p)")
        try require(s[2] <= Limits.inputSide && s[3] <= Limits.inputSide,
                    "input size \(s[2])x\(s[3]) exceeds the limit of \(Limits.inputSide) px per side")
        try Limits.requireMemory(config.activationBytes(batch: s[0], height: s[2], width: s[3]),
                                 for: "a forward of \(s[0]) images of \(s[2])x\(s[3])")
    }
}
