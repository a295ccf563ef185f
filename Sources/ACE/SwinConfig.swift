/// The shape of a Swin Transformer, as timm's SwinTransformer: patch 4, stages of `depths[i]`
/// blocks at width embed_dim * 2^i with `numHeads[i]` heads, windows of `windowSize` tokens,
/// every second block of a stage shifted by half a window.
public struct SwinConfig: Codable, Equatable {
    public var preset: String
    public var embedDim: Int
    public var depths: [Int]
    public var numHeads: [Int]
    public var windowSize: Int = 7
    public var patchSize: Int = 4
    public var inChans: Int = 1
    public var imgSize: Int = 224
    public var mlpRatio: Int = 4
    public var dropPath: Float = 0

    enum CodingKeys: String, CodingKey {
        case preset, depths
        case embedDim = "embed_dim", numHeads = "num_heads", windowSize = "window_size"
        case patchSize = "patch_size", inChans = "in_chans", imgSize = "img_size", mlpRatio = "mlp_ratio"
        case dropPath = "drop_path"
    }

    /// timm's configurations (`swin_tiny_patch4_window7_224` etc.); swin_nano is ours, for tests.
    public static let presets: [String: (dim: Int, depths: [Int], heads: [Int])] = [
        "swin_nano": (32, [2, 2, 2, 2], [1, 2, 4, 8]),
        "swin_tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24]),
        "swin_small": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
        "swin_base": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
    ]

    public init(preset: String, inChans: Int = 1, imgSize: Int = 224, windowSize: Int = 7, dropPath: Float = 0) throws {
        guard let p = Self.presets[preset] else {
            throw ACEError("unknown Swin preset '\(preset)'; choose one of \(Self.presets.keys.sorted().joined(separator: ", "))")
        }
        self.preset = preset
        embedDim = p.dim; depths = p.depths; numHeads = p.heads
        self.inChans = inChans; self.imgSize = imgSize; self.windowSize = windowSize; self.dropPath = dropPath
        try validate()
    }

    public var stages: Int { depths.count }
    /// Width of stage i.
    public func dim(_ stage: Int) -> Int { embedDim << stage }
    /// Side of stage i's token grid (img_size / patch / 2^i).
    public func resolution(_ stage: Int) -> Int { (imgSize / patchSize) >> stage }
    /// Stage i's window, clamped to its grid as timm does (a grid no larger than the window is
    /// one window, and is not shifted).
    public func window(_ stage: Int) -> Int { min(windowSize, resolution(stage)) }
    public func shift(_ stage: Int) -> Int { resolution(stage) <= windowSize ? 0 : windowSize / 2 }
    /// Width of the final tokens (and of the pooled embedding).
    public var numFeatures: Int { dim(stages - 1) }
    /// Side of the final token grid.
    public var finalGrid: Int { resolution(stages - 1) }

    public func validate() throws {
        try Limits.require(depths.count, in: 1...8, "number of stages (len(depths))")
        try require(numHeads.count == depths.count,
                    "num_heads has \(numHeads.count) entries, depths has \(depths.count): one per stage")
        try Limits.require(embedDim, in: 1...(Limits.width >> (depths.count - 1)), "embed_dim")
        for d in depths { try Limits.require(d, in: 1...Limits.depth, "depths entry") }
        try Limits.require(depths.reduce(0, +), in: 1...Limits.depth, "total depth")
        try Limits.require(mlpRatio, in: 1...64, "mlp_ratio")
        try Limits.require(patchSize, in: 1...256, "patch_size")
        try Limits.require(windowSize, in: 1...256, "window_size")
        try Limits.require(imgSize, in: 1...Limits.inputSide, "img_size")
        try require(inChans == 1 || inChans == 3, "in_chans must be 1 or 3, got \(inChans)")
        try require(dropPath >= 0 && dropPath < 1, "drop_path must be in [0, 1), got \(dropPath)")
        for (i, h) in numHeads.enumerated() {
            try Limits.require(h, in: 1...dim(i), "num_heads[\(i)]")
            try require(dim(i) % h == 0, "stage \(i) width \(dim(i)) must be a multiple of num_heads[\(i)] = \(h)")
        }
        // Every patch merging halves an even grid, and every stage tiles its grid with whole
        // windows (timm would pad; we refuse instead of attending to padding).
        let unit = patchSize << (depths.count - 1)
        try require(imgSize % unit == 0,
                     "img_size \(imgSize) must be a multiple of patch_size * 2^(stages - 1) = \(unit)")
        for i in 0..<stages where resolution(i) % window(i) != 0 {
            throw ACEError("stage \(i) grid \(resolution(i))x\(resolution(i)) is not a whole number of \(window(i))x\(window(i)) windows; choose img_size and window_size so that img_size / \(patchSize << i) is a multiple of window_size")
        }
        try Limits.requireMemory(4 * 3 * parameterCount, for: "a \(preset) encoder (embed_dim \(embedDim), depths \(depths))")
    }

    /// Number of weights, as a Double so absurd configs cannot overflow it.
    public var parameterCount: Double {
        var n = Double(embedDim) * Double(inChans * patchSize * patchSize + 1) + 2 * Double(embedDim)
        for i in 0..<stages {
            let c = Double(dim(i)), hidden = Double(mlpRatio) * c
            let w = Double(2 * window(i) - 1)
            if i > 0 { let c0 = Double(dim(i - 1)); n += 8 * c0 + 4 * c0 * c }
            let perBlock = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * hidden + hidden) + (hidden * c + c)
                + w * w * Double(numHeads[i])
            n += Double(depths[i]) * perBlock
        }
        return n + 2 * Double(numFeatures)
    }

    /// An upper estimate of the bytes of the activations a training forward of `batch` images
    /// keeps (per block: norms, windows, qkv, context, attention probabilities, MLP hidden and
    /// activation, residual stream), used to refuse inputs this machine cannot hold.
    public func activationBytes(batch: Int) -> Double {
        var total = 0.0
        for i in 0..<stages {
            let t = Double(resolution(i) * resolution(i)), c = Double(dim(i))
            let n = Double(window(i) * window(i))
            let perBlock = Double(batch) * t * ((10 + 2 * Double(mlpRatio)) * c + 2 * Double(numHeads[i]) * n)
            total += Double(depths[i] + 1) * perBlock
        }
        return 4 * total
    }
}
