/// Every setting of a pretraining run (DESIGN.md section 5). Defaults are the CPU-scale
/// mirror of the paper, and the only copy of them (Python reads them from here). JSON keys
/// are snake_case; a missing key keeps its default (see `Settings`).
public struct PretrainConfig: Settings, Equatable {
    /// "ace": grid crops with any subset of the three losses; "dino": the baseline, the global
    /// loss on two random-resized crops, no grid.
    public enum Objective: String, Codable, Sendable { case ace, dino }
    /// DINO's clip_gradients scales each tensor by its own norm; "global" uses all of them.
    public enum ClipMode: String, Codable, Sendable { case perTensor = "per_tensor", global }

    // Networks
    public var encoder = "vit_tiny"
    public var inChans = 1
    public var windowSize = 7                  // Swin encoders: attention window in tokens [7 at 448 px]
    public var dropPath: Float = 0.1
    public var localHidden = 0                 // composer / decomposer hidden width; 0 = 4C (C for "authors")
    public var localHead = "mlp"               // "mlp" (paper: Linear-GELU-Linear) or "authors"
    public var headHidden = 2048
    public var headBottleneck = 256
    public var headPrototypes = 8192           // K (65536 in the paper)
    public var precision = "auto"              // "auto", "bf16" or "fp32": see `Precision`
    public var objective = Objective.ace
    public var losses = ["global", "comp", "decomp"]
    public var globalWeight: Float = 0.1
    public var compWeight: Float = 1
    public var decompWeight: Float = 1
    public var alphaComp: Float = 0.9
    public var alphaDecomp: Float = 0.99
    public var logitScale: Float = 1 / 0.07
    public var studentTemp: Float = 0.1
    public var teacherTemp: Float = 0.04
    public var centerMomentum: Float = 0.9
    // Optimization
    public var batchSize = 16
    public var epochs = 50
    public var stepsPerEpoch = 100
    public var lr: Float = 5e-4                // per 256 images; scaled by batch_size / 256
    public var minLr: Float = 1e-6
    public var warmupFraction: Float = 0.1
    public var weightDecay: Float = 0.04
    public var weightDecayEnd: Float = 0.4
    public var momentumTeacher: Float = 0.996  // cosine to 1
    public var clipGrad: Float = 0.8           // 0 disables
    public var clipMode = ClipMode.perTensor
    public var freezeLastLayerEpochs = 1
    public var weightDecayTokens = false       // also decay cls_token and pos_embed (DINO's groups)
    // Data
    public var grid = GridConfig()
    public var augment = AugmentConfig()
    /// Normalization of the views, (x - mean) / std per channel: one number (grey images, or
    /// every channel) or one per channel (R, G, B).
    public var mean: ChannelValues = 0.757
    public var std: ChannelValues = 0.200
    /// Zero the pixels outside the field of view, the ellipse inscribed in the image (the
    /// circle of a square colour fundus photograph), before resizing: pixel (x, y) of a
    /// W x H image is kept when ((x + 0.5) / W - 0.5)^2 + ((y + 0.5) / H - 0.5)^2 <= 1/4.
    public var fovMask = false
    public var dinoScaleMin: Float = 0.4
    public var dinoScaleMax: Float = 1
    /// Before gridding, a random-resized crop of the image keeping at least this fraction of
    /// its area (1: off, the paper; the authors' code: 0.85).
    public var preCropScaleMin: Float = 1

    public init() {}

    public var totalSteps: Int { epochs * stepsPerEpoch }
    public var usesGlobal: Bool { objective == .dino || losses.contains("global") }
    public var usesComp: Bool { objective == .ace && losses.contains("comp") }
    public var usesDecomp: Bool { objective == .ace && losses.contains("decomp") }

    public func validate() throws {
        let encoderSpec = try self.encoderSpec
        do {
            try grid.validate(patch: encoderSpec.tokenFootprint)
        } catch let error as ACEError {
            guard case .swin = encoderSpec else { throw error }
            let footprint = encoderSpec.tokenFootprint
            throw ACEError(error.message + ". A Swin's final token covers \(footprint) px of its input: "
                           + "start from the Swin geometry \(Self.swinGeometry) (PretrainConfig.recipe and "
                           + "ace pretrain apply it to swin_* encoders)")
        }
        try Limits.require(windowSize, in: 1...256, "window_size")
        try augment.validate()
        _ = try Precision(setting: precision)
        try require(["mlp", "authors"].contains(localHead), "local_head must be 'mlp' or 'authors', got '\(localHead)'")
        let known: Set = ["global", "comp", "decomp"]
        try require(losses.allSatisfy(known.contains) && !losses.isEmpty,
                    "losses must be a non-empty subset of global, comp, decomp; got \(losses)")
        try Limits.require(batchSize, in: 1...Limits.batch, "batch_size")
        try Limits.require(epochs, in: 1...Limits.steps, "epochs")
        try Limits.require(stepsPerEpoch, in: 1...Limits.steps, "steps_per_epoch")
        let (total, overflow) = epochs.multipliedReportingOverflow(by: stepsPerEpoch)
        try require(!overflow && total <= Limits.steps,
                    "epochs x steps_per_epoch (\(epochs) x \(stepsPerEpoch)) exceeds the limit of \(Limits.steps) steps")
        try Limits.require(freezeLastLayerEpochs, in: 0...epochs, "freeze_last_layer_epochs")
        try Limits.require(localHidden, in: 0...Limits.width, "local_hidden")
        try Limits.require(headHidden, in: 1...Limits.width, "head_hidden")
        try Limits.require(headBottleneck, in: 1...Limits.width, "head_bottleneck")
        try Limits.require(headPrototypes, in: 1...Limits.prototypes, "head_prototypes")
        for (name, value) in floatSettings {
            try require(value.isFinite, "\(name) must be a finite number, got \(value)")
        }
        try require(studentTemp > 0 && teacherTemp > 0 && logitScale > 0, "temperatures and logit_scale must be positive")
        try require((0...1).contains(centerMomentum) && (0...1).contains(momentumTeacher), "momenta must be in [0, 1]")
        try require((0...1).contains(alphaComp) && (0...1).contains(alphaDecomp), "alpha_comp and alpha_decomp must be in [0, 1]")
        try require(lr > 0 && minLr >= 0 && (0...1).contains(warmupFraction), "lr must be positive, min_lr >= 0, warmup_fraction in [0, 1]")
        try require(weightDecay >= 0 && weightDecayEnd >= 0 && clipGrad >= 0, "weight decay and clip_grad must be non-negative")
        try mean.validate("mean", channels: inChans, positive: false)
        try std.validate("std", channels: inChans, positive: true)
        try require(augment.colorJitterP == 0 && augment.grayscaleP == 0 || inChans == 3,
                    "augment.color_jitter_p and augment.grayscale_p apply to colour images (in_chans 3), "
                    + "this run has in_chans \(inChans)")
        try require(dinoScaleMin > 0 && dinoScaleMin <= dinoScaleMax && dinoScaleMax <= 1, "dino scale must satisfy 0 < min <= max <= 1")
        try require(preCropScaleMin > 0 && preCropScaleMin <= 1, "pre_crop_scale_min must be in (0, 1], got \(preCropScaleMin)")
        try Limits.requireMemory(trainingBytes(encoderSpec),
                                 for: "a pretraining run with this config (\(encoder), batch \(batchSize), \(headPrototypes) prototypes)")
    }

    /// Every float setting (nested groups too) by its JSON name, for the finiteness check.
    var floatSettings: [(String, Float)] {
        func floats(_ value: Any, _ prefix: String) -> [(String, Float)] {
            Mirror(reflecting: value).children.flatMap { child -> [(String, Float)] in
                let name = prefix + snakeCase(child.label ?? "")
                if let x = child.value as? Float { return [(name, x)] }
                if child.value is GridConfig || child.value is AugmentConfig { return floats(child.value, name + ".") }
                return []
            }
        }
        return floats(self, "")
    }

    /// An upper estimate of a run's memory: student (weights, gradients, two AdamW moments),
    /// teacher, local and DINO heads likewise, the activations of both encoders on 2B views,
    /// the heads' logits and the local targets. In floating point: absurd settings cannot overflow.
    func trainingBytes(_ enc: EncoderSpec) -> Double {
        let c = Double(enc.tokenWidth), hidden = Double(localHidden > 0 ? localHidden : 4 * enc.tokenWidth)
        let (h, k, bn) = (Double(headHidden), Double(headPrototypes), Double(headBottleneck))
        let headParams = c * h + h * h + h * bn + bn * k
        let localParams = 2 * (4 * c * hidden + hidden * c)
        let weights = 5 * enc.parameterCount + 5 * headParams + 4 * localParams
        let views = 2 * batchSize
        let activations = 2 * enc.activationBytes(batch: views) / 4
        let n = Double(grid.tokens), b = Double(batchSize)
        let heads = Double(views) * 4 * (2 * h + bn + 3 * k)
        let local = b * (n * n / 4 + 4 * n * n) * 3 + b * 5 * n * c * 4
        return 4 * (weights + activations + heads + local)
    }

    /// The student's encoder; views are its input size.
    public var encoderSpec: EncoderSpec {
        get throws {
            try EncoderSpec(preset: encoder, inChans: inChans, inputSize: grid.inputSize, windowSize: windowSize,
                            dropPath: dropPath)
        }
    }

    /// The CPU-scale geometry of ACE with a Swin encoder, as the settings it changes. A Swin's
    /// final token covers 32 px of its input (patch 4, three mergings), so a fine cell must be
    /// 32 px of the view: 256-px views hold 8 x 8 final tokens (composition needs an even
    /// grid), windows of 8 tile every stage (64, 32, 16, 8 tokens per side), and cells of
    /// 32 px in a 1024-px image are the paper's. (The paper: 448-px views, window 7, 14 x 14.)
    public static let swinGeometry = #"{"grid":{"fine_cells":8,"grid_cells":32,"image_size":1024,"input_size":256,"#
        + #""min_overlap":2},"window_size":8}"#
}

/// "minLr" -> "min_lr", as JSONEncoder's convertToSnakeCase spells keys.
func snakeCase(_ name: String) -> String {
    name.reduce(into: "") { out, ch in
        if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
    }
}
