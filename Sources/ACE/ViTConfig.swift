/// The shape of a Vision Transformer: presets as in DESIGN.md, patch 16, pre-norm.
public struct ViTConfig: Codable, Equatable {
    public var preset: String
    public var embedDim: Int
    public var depth: Int
    public var numHeads: Int
    public var patchSize: Int = 16
    public var inChans: Int = 1
    public var imgSize: Int = 224
    public var mlpRatio: Int = 4
    public var dropPath: Float = 0

    enum CodingKeys: String, CodingKey {
        case preset, depth
        case embedDim = "embed_dim", numHeads = "num_heads", patchSize = "patch_size"
        case inChans = "in_chans", imgSize = "img_size", mlpRatio = "mlp_ratio"
        case dropPath = "drop_path"
    }

    public static let presets: [String: (dim: Int, depth: Int, heads: Int)] = [
        "vit_nano": (96, 4, 3),
        "vit_tiny": (192, 12, 3),
        "vit_small": (384, 12, 6),
        "vit_base": (768, 12, 12),
    ]

    public init(preset: String, inChans: Int = 1, imgSize: Int = 224, dropPath: Float = 0) throws {
        guard let p = Self.presets[preset] else {
            throw ACEError("unknown preset '\(preset)'; choose one of \(Self.presets.keys.sorted().joined(separator: ", "))")
        }
        self.preset = preset
        embedDim = p.dim; depth = p.depth; numHeads = p.heads
        self.inChans = inChans; self.imgSize = imgSize; self.dropPath = dropPath
        try validate()
    }

    public func validate() throws {
        try Limits.require(embedDim, in: 1...Limits.width, "embed_dim")
        try Limits.require(depth, in: 1...Limits.depth, "depth")
        try Limits.require(numHeads, in: 1...embedDim, "num_heads")
        try Limits.require(mlpRatio, in: 1...64, "mlp_ratio")
        try Limits.require(patchSize, in: 1...256, "patch_size")
        try Limits.require(imgSize, in: 1...Limits.inputSide, "img_size")
        try require(embedDim % numHeads == 0,
                    "embed_dim \(embedDim) must be a positive multiple of num_heads \(numHeads)")
        try require(inChans == 1 || inChans == 3, "in_chans must be 1 or 3, got \(inChans)")
        try require(patchSize > 0 && imgSize >= patchSize && imgSize % patchSize == 0,
                    "img_size \(imgSize) must be a positive multiple of patch_size \(patchSize)")
        try require(dropPath >= 0 && dropPath < 1, "drop_path must be in [0, 1), got \(dropPath)")
        try Limits.requireMemory(4 * 3 * parameterCount, for: "a \(preset) encoder (embed_dim \(embedDim), depth \(depth))")
    }

    /// Number of weights, as a Double so absurd configs cannot overflow it.
    public var parameterCount: Double {
        let c = Double(embedDim), hidden = Double(mlpRatio) * c, t = Double(grid * grid + 1)
        let perBlock = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * hidden + hidden) + (hidden * c + c)
        return t * c + c + c * Double(inChans * patchSize * patchSize) + c + Double(depth) * perBlock + 2 * c
    }

    /// Bytes of the activations a forward of `batch` images of height x width keeps (per block:
    /// the normed input, qkv, context, attention probabilities, MLP hidden and activation, and
    /// the residual stream), an upper estimate used to refuse inputs this machine cannot hold.
    public func activationBytes(batch: Int, height: Int, width: Int) -> Double {
        let t = Double(height / patchSize) * Double(width / patchSize) + 1, c = Double(embedDim)
        let perBlock = Double(batch) * t * ((8 + 2 * Double(mlpRatio)) * c + Double(numHeads) * t)
        return 4 * (Double(depth) + 2) * perBlock
    }

    public var grid: Int { imgSize / patchSize }
}
