/// The encoder a pretraining run trains, as its config: a ViT or a Swin. What the trainer and
/// the run's memory estimate need to know about it before it is built.
public enum EncoderSpec: Equatable {
    case vit(ViTConfig)
    case swin(SwinConfig)

    /// The encoder of `preset` taking `inputSize` views (Swin: windows of `windowSize` tokens).
    public init(preset: String, inChans: Int, inputSize: Int, windowSize: Int, dropPath: Float) throws {
        if SwinConfig.presets[preset] != nil {
            self = .swin(try SwinConfig(preset: preset, inChans: inChans, imgSize: inputSize, windowSize: windowSize,
                                        dropPath: dropPath))
        } else if ViTConfig.presets[preset] != nil {
            self = .vit(try ViTConfig(preset: preset, inChans: inChans, imgSize: inputSize, dropPath: dropPath))
        } else {
            let known = (ViTConfig.presets.keys.sorted() + SwinConfig.presets.keys.sorted()).joined(separator: ", ")
            throw ACEError("unknown preset '\(preset)'; choose one of \(known)")
        }
    }

    /// Input pixels per side of one final token: a ViT's patch; a Swin's patch doubled by
    /// every patch merging (32 px for patch 4 and four stages).
    public var tokenFootprint: Int {
        switch self {
        case .vit(let c): return c.patchSize
        case .swin(let c): return c.patchSize << (c.stages - 1)
        }
    }

    public var tokenWidth: Int {
        switch self {
        case .vit(let c): return c.embedDim
        case .swin(let c): return c.numFeatures
        }
    }

    public var parameterCount: Double {
        switch self {
        case .vit(let c): return c.parameterCount
        case .swin(let c): return c.parameterCount
        }
    }

    /// The bytes a training forward of `batch` square views keeps.
    public func activationBytes(batch: Int) -> Double {
        switch self {
        case .vit(let c): return c.activationBytes(batch: batch, height: c.imgSize, width: c.imgSize)
        case .swin(let c): return c.activationBytes(batch: batch)
        }
    }

    /// This config with stochastic depth set to `rate` (the teacher has none).
    public func withDropPath(_ rate: Float) -> EncoderSpec {
        switch self {
        case .vit(var c): c.dropPath = rate; return .vit(c)
        case .swin(var c): c.dropPath = rate; return .swin(c)
        }
    }

    public func make(seed: UInt64) throws -> any TokenEncoder {
        switch self {
        case .vit(let c): return try VisionTransformer(c, seed: seed)
        case .swin(let c): return try SwinTransformer(c, seed: seed)
        }
    }
}
