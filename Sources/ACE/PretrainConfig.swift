/// Every setting of a pretraining run (DESIGN.md section 5). Defaults are the CPU-scale
/// mirror of the paper. JSON keys are snake_case; a missing key keeps its default.
public struct PretrainConfig: Codable, Equatable {
    // Networks
    public var encoder = "vit_tiny"
    public var inChans = 1
    public var dropPath: Float = 0.1
    public var localHidden = 0                 // composer / decomposer hidden width; 0 = 4C (C for "authors")
    public var localHead = "mlp"               // "mlp" (paper: Linear-GELU-Linear) or "authors"
    public var headHidden = 2048
    public var headBottleneck = 256
    public var headPrototypes = 8192           // K (65536 in the paper)
    public var precision = "auto"              // "auto", "bf16" or "fp32": see `Precision`
    // Objective: "ace" (grid crops, any subset of the three losses) or "dino" (global loss on
    // two random-resized crops, no grid).
    public var objective = "ace"
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
    public var minLR: Float = 1e-6
    public var warmupFraction: Float = 0.1
    public var weightDecay: Float = 0.04
    public var weightDecayEnd: Float = 0.4
    public var momentumTeacher: Float = 0.996  // cosine to 1
    public var clipGrad: Float = 0.8           // 0 disables
    public var clipMode = "per_tensor"         // or "global"
    public var freezeLastLayerEpochs = 1
    public var weightDecayTokens = false       // also decay cls_token and pos_embed (DINO's groups)
    // Data
    public var grid = GridConfig()
    public var augment = AugmentConfig()
    public var mean: Float = 0.757
    public var std: Float = 0.200
    public var dinoScaleMin: Float = 0.4
    public var dinoScaleMax: Float = 1
    /// Before gridding, a random-resized crop of the image keeping at least this fraction of
    /// its area (1: off, the paper; the authors' code: 0.85).
    public var preCropScaleMin: Float = 1

    public init() {}

    public var totalSteps: Int { epochs * stepsPerEpoch }
    public var usesGlobal: Bool { objective == "dino" || losses.contains("global") }
    public var usesComp: Bool { objective == "ace" && losses.contains("comp") }
    public var usesDecomp: Bool { objective == "ace" && losses.contains("decomp") }

    public func validate() throws {
        let encoderConfig = try ViTConfig(preset: encoder, inChans: inChans, imgSize: grid.inputSize, dropPath: dropPath)
        try grid.validate(patch: encoderConfig.patchSize)
        try augment.validate()
        _ = try Precision(setting: precision)
        try require(["mlp", "authors"].contains(localHead), "local_head must be 'mlp' or 'authors', got '\(localHead)'")
        try require(["ace", "dino"].contains(objective), "objective must be 'ace' or 'dino', got '\(objective)'")
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
        try require(lr > 0 && minLR >= 0 && (0...1).contains(warmupFraction), "lr must be positive, min_lr >= 0, warmup_fraction in [0, 1]")
        try require(weightDecay >= 0 && weightDecayEnd >= 0 && clipGrad >= 0, "weight decay and clip_grad must be non-negative")
        try require(["per_tensor", "global"].contains(clipMode), "clip_mode must be 'per_tensor' or 'global', got '\(clipMode)'")
        try require(std > 0, "std must be positive")
        try require(dinoScaleMin > 0 && dinoScaleMin <= dinoScaleMax && dinoScaleMax <= 1, "dino scale must satisfy 0 < min <= max <= 1")
        try require(preCropScaleMin > 0 && preCropScaleMin <= 1, "pre_crop_scale_min must be in (0, 1], got \(preCropScaleMin)")
        try Limits.requireMemory(trainingBytes(encoderConfig),
                                 for: "a pretraining run with this config (\(encoder), batch \(batchSize), \(headPrototypes) prototypes)")
    }

    /// Every float setting by its JSON name (for the finiteness check).
    var floatSettings: [(String, Float)] {
        [("drop_path", dropPath), ("global_weight", globalWeight), ("comp_weight", compWeight),
         ("decomp_weight", decompWeight), ("alpha_comp", alphaComp), ("alpha_decomp", alphaDecomp),
         ("logit_scale", logitScale), ("student_temp", studentTemp), ("teacher_temp", teacherTemp),
         ("center_momentum", centerMomentum), ("lr", lr), ("min_lr", minLR), ("warmup_fraction", warmupFraction),
         ("weight_decay", weightDecay), ("weight_decay_end", weightDecayEnd), ("momentum_teacher", momentumTeacher),
         ("clip_grad", clipGrad), ("mean", mean), ("std", std), ("dino_scale_min", dinoScaleMin),
         ("dino_scale_max", dinoScaleMax), ("pre_crop_scale_min", preCropScaleMin), ("grid.sigma", grid.sigma)]
    }

    /// An upper estimate of a run's memory: student (weights, gradients, two AdamW moments),
    /// teacher, local and DINO heads likewise, the activations of both encoders on 2B views,
    /// the heads' logits and the local targets. In floating point: absurd settings cannot overflow.
    func trainingBytes(_ enc: ViTConfig) -> Double {
        let c = Double(enc.embedDim), hidden = Double(localHidden > 0 ? localHidden : 4 * enc.embedDim)
        let (h, k, bn) = (Double(headHidden), Double(headPrototypes), Double(headBottleneck))
        let headParams = c * h + h * h + h * bn + bn * k
        let localParams = 2 * (4 * c * hidden + hidden * c)
        let weights = 5 * enc.parameterCount + 5 * headParams + 4 * localParams
        let views = 2 * batchSize
        let activations = 2 * enc.activationBytes(batch: views, height: grid.inputSize, width: grid.inputSize) / 4
        let n = Double(grid.tokens), b = Double(batchSize)
        let heads = Double(views) * 4 * (2 * h + bn + 3 * k)
        let local = b * (n * n / 4 + 4 * n * n) * 3 + b * 5 * n * c * 4
        return 4 * (weights + activations + heads + local)
    }

    public var encoderConfig: ViTConfig {
        get throws { try ViTConfig(preset: encoder, inChans: inChans, imgSize: grid.inputSize, dropPath: dropPath) }
    }

    enum CodingKeys: String, CodingKey {
        case encoder, objective, losses, epochs, lr, grid, augment, mean, std, precision
        case inChans = "in_chans", dropPath = "drop_path", localHidden = "local_hidden", localHead = "local_head"
        case headHidden = "head_hidden", headBottleneck = "head_bottleneck", headPrototypes = "head_prototypes"
        case globalWeight = "global_weight", compWeight = "comp_weight", decompWeight = "decomp_weight"
        case alphaComp = "alpha_comp", alphaDecomp = "alpha_decomp", logitScale = "logit_scale"
        case studentTemp = "student_temp", teacherTemp = "teacher_temp", centerMomentum = "center_momentum"
        case batchSize = "batch_size", stepsPerEpoch = "steps_per_epoch", minLR = "min_lr"
        case warmupFraction = "warmup_fraction", weightDecay = "weight_decay", weightDecayEnd = "weight_decay_end"
        case momentumTeacher = "momentum_teacher", clipGrad = "clip_grad", clipMode = "clip_mode"
        case freezeLastLayerEpochs = "freeze_last_layer_epochs", weightDecayTokens = "weight_decay_tokens"
        case dinoScaleMin = "dino_scale_min", dinoScaleMax = "dino_scale_max", preCropScaleMin = "pre_crop_scale_min"
    }

    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func read<T: Decodable>(_ key: CodingKeys, _ value: inout T) throws {
            if let v = try c.decodeIfPresent(T.self, forKey: key) { value = v }
        }
        try read(.encoder, &encoder); try read(.inChans, &inChans); try read(.dropPath, &dropPath)
        try read(.localHidden, &localHidden); try read(.localHead, &localHead); try read(.headHidden, &headHidden)
        try read(.headBottleneck, &headBottleneck); try read(.headPrototypes, &headPrototypes)
        try read(.objective, &objective); try read(.losses, &losses); try read(.precision, &precision)
        try read(.globalWeight, &globalWeight); try read(.compWeight, &compWeight); try read(.decompWeight, &decompWeight)
        try read(.alphaComp, &alphaComp); try read(.alphaDecomp, &alphaDecomp); try read(.logitScale, &logitScale)
        try read(.studentTemp, &studentTemp); try read(.teacherTemp, &teacherTemp); try read(.centerMomentum, &centerMomentum)
        try read(.batchSize, &batchSize); try read(.epochs, &epochs); try read(.stepsPerEpoch, &stepsPerEpoch)
        try read(.lr, &lr); try read(.minLR, &minLR); try read(.warmupFraction, &warmupFraction)
        try read(.weightDecay, &weightDecay); try read(.weightDecayEnd, &weightDecayEnd)
        try read(.momentumTeacher, &momentumTeacher); try read(.clipGrad, &clipGrad); try read(.clipMode, &clipMode)
        try read(.freezeLastLayerEpochs, &freezeLastLayerEpochs); try read(.weightDecayTokens, &weightDecayTokens)
        try read(.grid, &grid); try read(.augment, &augment); try read(.mean, &mean); try read(.std, &std)
        try read(.dinoScaleMin, &dinoScaleMin); try read(.dinoScaleMax, &dinoScaleMax)
        try read(.preCropScaleMin, &preCropScaleMin)
    }
}
