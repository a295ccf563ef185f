/// One ACE (or DINO-baseline) pretraining run: student and EMA teacher encoders, the local
/// heads, the DINO heads, AdamW with DINO's schedules, and the run's random generator.
/// A step is: views -> student and teacher forward -> losses -> student backward ->
/// clip -> AdamW -> EMA teacher -> center.
public final class Trainer {
    public let config: PretrainConfig
    /// The student and its EMA teacher: ViTs, or Swins whose final tokens play the patch
    /// tokens' part (no class token: DINO-style pooling averages them all).
    public let student: any TokenEncoder
    public let teacher: any TokenEncoder
    public let composer: Composer
    public let decomposer: Decomposer
    public let head: DINOHead
    public let teacherHead: DINOHead
    public let optimizer: AdamW
    public let center: Tensor
    /// All trainable gradients in one buffer (data-parallel ranks allreduce it between
    /// `computeGradients` and `applyGradients`).
    public let gradients: GradientArena
    /// The batch mean of the teacher head's logits that moves the center; ranks average it
    /// before `applyGradients`.
    public let centerBatchMean: Tensor
    public internal(set) var step = 0
    public internal(set) var rng: RNG
    /// The products' precision, resolved from the config's setting on this machine.
    public let precision: Precision

    private let augment: PhotometricAugment
    private let compLoss: LocalMatchLoss, decompLoss: LocalMatchLoss
    private let globalLoss: GlobalLoss
    private let resized = Tensor([0]), masked = Tensor([0])
    /// The last step's views (2B, in_chans, input, input), normalized, as the encoders saw them.
    public let views = Tensor([0])
    private let dTokens = Tensor([0]), dz = Tensor([0])
    private let pooledStudent = Tensor([0]), pooledTeacher = Tensor([0])
    private let dLogits = Tensor([0]), dPooled = Tensor([0])
    /// What `computeGradients` leaves for `applyGradients`: its statistics and the run's
    /// generator after the step's draws.
    private var pending: (stats: Stats, rng: RNG)?

    /// Learning rate, weight decay and teacher momentum as functions of the step.
    public let lrSchedule: CosineSchedule, wdSchedule: CosineSchedule, momentumSchedule: CosineSchedule

    public struct Stats {
        public var loss = 0.0, global = 0.0, comp = 0.0, decomp = 0.0
        public var lr = 0.0, wd = 0.0, momentum = 0.0, gradNorm = 0.0
        public var step = 0
        /// Teacher rows whose best-matching student column is the target's peak.
        public var compAccuracy = 0.0, decompAccuracy = 0.0
    }

    public init(_ config: PretrainConfig, seed: UInt64) throws {
        try config.validate()
        self.config = config
        let spec = try config.encoderSpec
        student = try spec.make(seed: seed)
        teacher = try spec.withDropPath(0).make(seed: seed)
        let kind: MLP.Kind = config.localHead == "authors" ? .authors : .gelu
        let c = spec.tokenWidth, hidden = config.localHidden > 0 ? config.localHidden : (kind == .authors ? c : 4 * c)
        let prefix = student.prefixTokens
        composer = Composer(dim: c, hidden: hidden, kind: kind, prefix: prefix)
        decomposer = Decomposer(dim: c, hidden: hidden, kind: kind, prefix: prefix)
        head = DINOHead("head", dim: c, hidden: config.headHidden, bottleneck: config.headBottleneck,
                        prototypes: config.headPrototypes)
        teacherHead = DINOHead("teacher_head", dim: c, hidden: config.headHidden, bottleneck: config.headBottleneck,
                               prototypes: config.headPrototypes)
        rng = RNG(seed: seed &+ 0x5EED)
        for l in [composer.mlp.fc1, composer.mlp.fc2, decomposer.mlp.fc1, decomposer.mlp.fc2] { l.initialize(&rng) }
        head.initialize(&rng)
        copyValues(from: student.parameters, to: teacher.parameters)
        copyValues(from: head.parameters, to: teacherHead.parameters)
        center = Tensor([config.headPrototypes])
        centerBatchMean = Tensor([config.headPrototypes])

        var trainable = student.parameters
        if config.usesComp { trainable += composer.parameters }
        if config.usesDecomp { trainable += decomposer.parameters }
        if config.usesGlobal { trainable += head.parameters }
        optimizer = AdamW(trainable)
        gradients = GradientArena(trainable)
        if config.weightDecayTokens {
            let position = student.positionParameters
            for (i, p) in trainable.enumerated() where position.contains(where: { $0 === p }) {
                optimizer.decays[i] = true
            }
        }

        precision = try Precision(setting: config.precision)
        student.precision = precision
        teacher.precision = precision
        head.precision = precision
        teacherHead.precision = precision
        for l in [composer.mlp.fc1, composer.mlp.fc2, decomposer.mlp.fc1, decomposer.mlp.fc2] { l.precision = precision }

        augment = PhotometricAugment(config.augment)
        compLoss = LocalMatchLoss(alpha: config.alphaComp, scale: config.logitScale)
        decompLoss = LocalMatchLoss(alpha: config.alphaDecomp, scale: config.logitScale)
        globalLoss = GlobalLoss(studentTemp: config.studentTemp, teacherTemp: config.teacherTemp)

        let total = config.totalSteps
        let baseLR = Double(config.lr) * Double(config.batchSize) / 256
        lrSchedule = CosineSchedule(base: baseLR, final: Double(config.minLr), totalSteps: total,
                                    warmupSteps: Int(Double(config.warmupFraction) * Double(total)))
        wdSchedule = CosineSchedule(base: Double(config.weightDecay), final: Double(config.weightDecayEnd), totalSteps: total)
        momentumSchedule = CosineSchedule(base: Double(config.momentumTeacher), final: 1, totalSteps: total)
    }

    /// Steps during which the DINO head's last layer is frozen (DINO's freeze_last_layer).
    public var frozenSteps: Int { config.freezeLastLayerEpochs * config.stepsPerEpoch }

    /// Every tensor of the run, by checkpoint name.
    public var namedTensors: [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        out += student.parameters.map { ("student.\($0.name)", $0.value) }
        out += teacher.parameters.map { ("teacher.\($0.name)", $0.value) }
        for p in composer.parameters + decomposer.parameters + head.parameters + teacherHead.parameters {
            out.append((p.name, p.value))
        }
        for (p, (m, v)) in zip(optimizer.parameters, zip(optimizer.m, optimizer.v)) {
            let owner = student.parameters.contains { $0 === p } ? "student." : ""
            out.append(("adam_m.\(owner)\(p.name)", m))
            out.append(("adam_v.\(owner)\(p.name)", v))
        }
        out.append(("center", center))
        return out
    }

    // MARK: - The training step

    /// images: (B, in_chans, height, width) floats in [0, 1]. Builds the views, runs one update.
    ///
    /// A step is a transaction: the losses and the gradient norm are checked before anything
    /// is committed (weights, AdamW moments, step counter, generator, center). A step that
    /// fails throws and leaves the run exactly as it was.
    public func step(images: UnsafePointer<Float>, batch b: Int, height: Int, width: Int) throws -> Stats {
        try computeGradients(images: images, batch: b, height: height, width: width)
        return try applyGradients()
    }

    /// The first half of a step: views, forward, losses and backward into `gradients`, and
    /// the teacher logits' batch mean into `centerBatchMean`. Nothing of the run is changed
    /// but those two buffers. `firstImage` is the global position of this batch's first image
    /// in a data-parallel step (rank x per-rank batch): crops, augmentation and drop path of
    /// image g are drawn from a stream keyed by the step's generator word and g, so N ranks
    /// holding B/N images each draw what one process holding all B draws.
    /// Returns the loss terms and accuracies of this batch.
    @discardableResult
    public func computeGradients(images: UnsafePointer<Float>, batch b: Int, height: Int, width: Int,
                                 firstImage: Int = 0) throws -> Stats {
        try checkImages(batch: b, height: height, width: width)
        try Limits.require(firstImage, in: 0...Limits.batch * 4096, "first image index")
        let count = b * config.inChans * height * width
        for i in 0..<count where !images[i].isFinite {
            throw ACEError("images contain NaN or infinite values")
        }
        pending = nil
        gradients.zero()
        do {
            let result = try gradientsAndStats(images, batch: b, height: height, width: width, firstImage: firstImage)
            pending = result
            return result.stats
        } catch {
            gradients.zero()
            throw error
        }
    }

    /// The second half of a step, on the gradients and center statistic as they are now
    /// (averaged over ranks, or as `computeGradients` left them): clip, AdamW, EMA teacher,
    /// center. Checks the gradient norm before committing anything.
    public func applyGradients() throws -> Stats {
        guard let (computed, nextRNG) = pending else {
            throw ACEError("apply_gradients needs a compute_gradients first (each computed step is applied once)")
        }
        var stats = computed
        let frozen = step < frozenSteps ? [head.lastLayer] : []
        for p in frozen { p.grad.zero() }
        stats.gradNorm = Double(clipGradients(optimizer.parameters, maxNorm: config.clipGrad,
                                              perTensor: config.clipMode == .perTensor))
        guard stats.gradNorm.isFinite else {
            pending = nil
            gradients.zero()
            throw ACEError("the gradient norm became \(stats.gradNorm) at step \(step + 1) (loss \(stats.loss)); the run was not "
                           + "updated. Check the loss settings (student_temp \(config.studentTemp), teacher_temp "
                           + "\(config.teacherTemp), logit_scale \(config.logitScale)) or lower the learning rate")
        }
        // Commit: nothing below can fail.
        rng = nextRNG
        pending = nil
        if config.usesGlobal {
            let m = config.centerMomentum
            for j in 0..<center.count { center[j] = m * center[j] + (1 - m) * centerBatchMean[j] }
        }
        stats.lr = lrSchedule(step); stats.wd = wdSchedule(step); stats.momentum = momentumSchedule(step)
        optimizer.step(lr: Float(stats.lr), weightDecay: Float(stats.wd), frozen: frozen)
        gradients.zero()
        emaUpdate(teacher: teacher.parameters, student: student.parameters, momentum: Float(stats.momentum))
        if config.usesGlobal {
            emaUpdate(teacher: teacherHead.parameters, student: head.parameters, momentum: Float(stats.momentum))
        }
        step += 1
        stats.step = step
        return stats
    }

    /// Refuses batch shapes beyond the limits before anything is allocated for them.
    public func checkImages(batch b: Int, height: Int, width: Int) throws {
        try Limits.require(b, in: 1...Limits.batch, "batch size")
        try Limits.require(height, in: 1...Limits.imageSide, "image height")
        try Limits.require(width, in: 1...Limits.imageSide, "image width")
        try require(height * width <= Limits.imagePixels,
                    "images of \(height) x \(width) exceed the limit of \(Limits.imagePixels) pixels")
    }

    /// The key of image g of a step's global batch, from the step's generator word.
    static func imageKey(_ stepWord: UInt64, _ g: Int) -> UInt64 { mix64(stepWord ^ mix64(UInt64(g) &+ 1)) }

    private func gradientsAndStats(_ images: UnsafePointer<Float>, batch b: Int, height: Int, width: Int,
                                   firstImage: Int) throws -> (stats: Stats, rng: RNG) {
        // The run's generator gives one word per step (plus one per drop-path layer): what it
        // draws does not depend on the batch, so every rank's generator stays in step.
        var stepRNG = rng
        let stepWord = stepRNG.next()
        let keys = (0..<b).map { Self.imageKey(stepWord, firstImage + $0) }
        let crops = try makeViews(images, batch: b, height: height, width: width, imageKeys: keys)
        let n = config.grid.side, prefix = student.prefixTokens, tokens = prefix + n * n, c = student.tokenWidth

        let rowKeys = (0..<2).flatMap { v in keys.map { mix64($0 ^ UInt64(v + 1)) } }
        let dropPaths = student.dropPaths
        for d in dropPaths { d.sampleKeys = rowKeys }
        // The student is also reachable as an encoder (ace_trainer_encoder): its own training
        // passes draw as before.
        defer { for d in dropPaths { d.sampleKeys = nil } }
        let s = try student.forward(views, training: true, rng: &stepRNG)
        let t = try teacher.infer(views)   // the teacher never runs backward

        dTokens.reshape([2 * b, tokens, c]); dTokens.zero()
        var stats = Stats()
        let studentC1 = s.data, studentC2 = s.data + b * tokens * c
        let teacherC1 = UnsafePointer(t.data), teacherC2 = UnsafePointer(t.data + b * tokens * c)

        if config.usesComp {
            let z = composer.forward(studentC1, batch: b, side: n)
            let r = compLoss(teacher: teacherC2, prefix: prefix, tokens: n * n, z: z, targets: crops.map(\.compositionTarget),
                             weight: config.compWeight, dz: dz)
            composer.backward(dz, side: n, into: dTokens.data)
            stats.comp = r.loss; stats.compAccuracy = r.accuracy
        }
        if config.usesDecomp {
            let z = decomposer.forward(studentC2, batch: b, side: n)
            let r = decompLoss(teacher: teacherC1, prefix: prefix, tokens: n * n, z: z, targets: crops.map(\.decompositionTarget),
                               weight: config.decompWeight, dz: dz)
            decomposer.backward(dz, side: n, into: dTokens.data + b * tokens * c)
            stats.decomp = r.loss; stats.decompAccuracy = r.accuracy
        }
        if config.usesGlobal {
            let masks = poolingMasks(crops, batch: b)
            pool(s, masks: masks, into: pooledStudent)
            pool(t, masks: masks, into: pooledTeacher)
            let studentLogits = head.forward(pooledStudent)
            let teacherLogits = teacherHead.forward(pooledTeacher)
            let weight = config.objective == .dino ? 1 : config.globalWeight
            stats.global = globalLoss(student: studentLogits, teacher: teacherLogits, center: center,
                                      weight: weight, dStudent: dLogits)
            head.backward(dLogits, into: dPooled)
            unpool(dPooled, masks: masks, into: dTokens)
        }
        stats.loss = Double(config.objective == .dino ? 1 : config.globalWeight) * stats.global
            + Double(config.compWeight) * stats.comp + Double(config.decompWeight) * stats.decomp

        for (name, value) in [("global", stats.global), ("composition", stats.comp), ("decomposition", stats.decomp)]
        where !value.isFinite {
            throw ACEError("the \(name) loss became \(value) at step \(step + 1); the run was not updated. "
                           + "Check the loss settings (student_temp \(config.studentTemp), teacher_temp "
                           + "\(config.teacherTemp), logit_scale \(config.logitScale), grid.sigma \(config.grid.sigma)) "
                           + "or lower the learning rate")
        }
        student.backward(dTokens, inputGrad: nil)
        if step < frozenSteps { head.lastLayer.grad.zero() }
        if config.usesGlobal { GlobalLoss.batchMean(teacherHead.logits, into: centerBatchMean) }
        return (stats, stepRNG)
    }

    // MARK: - Views

    /// Fills `views` with (2B, in_chans, input, input): rows 0..<B view 1, rows B..<2B view 2,
    /// each resized, cropped, augmented and normalized. Returns the grid crops (ACE) or the
    /// full-view geometry stand-ins (DINO) used for pooling.
    ///
    /// `images` are (B, in_chans, height, width): every channel is cropped and resized with
    /// the same boxes (a colour view is the grey pipeline applied to each channel), augmented
    /// together (see `PhotometricAugment`) and normalized with its own mean and std. With
    /// `fov_mask` the pixels outside the inscribed field of view are zeroed first.
    ///
    /// Every random draw is made first, from image i's own stream seeded by `imageKeys[i]`, in
    /// one fixed order (the optional pre-crop, its two boxes, then each view's augmentation
    /// draws), so the pixel work can run in parallel over images and the result depends on
    /// neither the number of threads nor the image's place in this process's batch.
    @discardableResult
    public func makeViews(_ images: UnsafePointer<Float>, batch b: Int, height: Int, width: Int,
                          imageKeys: [UInt64]) throws -> [GridCrop] {
        precondition(imageKeys.count == b, "one key per image")
        let g = config.grid, size = g.inputSize, chans = config.inChans
        try checkImages(batch: b, height: height, width: width)
        let workers = workerCount
        let canvasSize = g.imageSize * g.imageSize, plane = height * width, viewSize = size * size
        resized.reshape([workers, chans, g.imageSize, g.imageSize])
        masked.reshape(config.fovMask ? [workers, chans, height, width] : [0])
        views.reshape([2 * b, chans, size, size])
        var crops: [GridCrop] = []
        var plans: [(source: (x: Int, y: Int, w: Int, h: Int), boxes: [(x: Int, y: Int, w: Int, h: Int)],
                     augment: [RNG])] = []
        for i in 0..<b {
            var rng = RNG(seed: imageKeys[i])
            let source = config.preCropScaleMin < 1
                ? randomResizedCrop(width: width, height: height, scale: (config.preCropScaleMin, 1), rng: &rng)
                : (x: 0, y: 0, w: width, h: height)
            let boxes: [(x: Int, y: Int, w: Int, h: Int)]
            if config.objective == .ace {
                let crop = GridCrop.sample(g, rng: &rng)
                crops.append(crop)
                boxes = [crop.c1Box, crop.c2Box].map { ($0.x0, $0.y0, $0.x1 - $0.x0, $0.y1 - $0.y0) }
            } else {
                let scale = (config.dinoScaleMin, config.dinoScaleMax)
                boxes = (0..<2).map { _ in randomResizedCrop(width: g.imageSize, height: g.imageSize, scale: scale, rng: &rng) }
            }
            var streams: [RNG] = []
            for _ in boxes {
                streams.append(rng)
                for _ in 0..<PhotometricAugment.drawsPerCall { _ = rng.next() }
            }
            plans.append((source, boxes, streams))
        }
        var failure: Error?
        let failureLock = Lock()
        let (mean, std) = (config.mean, config.std)
        parallelWorkers(b, minPerChunk: 1, workers: workers) { range, worker in
            let canvas = resized.data + worker * chans * canvasSize
            for i in range {
                var image = images + i * chans * plane
                if config.fovMask {
                    let copy = masked.data + worker * chans * plane
                    copy.update(from: image, count: chans * plane)
                    for ch in 0..<chans { maskFieldOfView(copy + ch * plane, width: width, height: height) }
                    image = UnsafePointer(copy)
                }
                do {
                    for ch in 0..<chans {
                        try cropResizeChecked(image + ch * plane, width: width, height: height,
                                              box: plans[i].source, to: canvas + ch * canvasSize, size: g.imageSize)
                    }
                } catch {
                    failureLock.locked { failure = error }
                    return
                }
                for (v, box) in plans[i].boxes.enumerated() {
                    let view = views.data + ((v * b + i) * chans) * viewSize
                    for ch in 0..<chans {
                        cropResize(canvas + ch * canvasSize, width: g.imageSize, height: g.imageSize, box: box,
                                   to: view + ch * viewSize, size: size)
                    }
                    // Colour draws come from a stream of their own: grey draws (and runs) are
                    // those of before colour training.
                    var stream = plans[i].augment[v], colourStream = RNG(seed: mix64(imageKeys[i] ^ (0xC0105 &+ UInt64(v))))
                    augment.apply(view, channels: chans, size: size, rng: &stream, colourRNG: &colourStream)
                    for ch in 0..<chans {
                        let (m, inv) = (mean(ch), 1 / std(ch)), x = view + ch * viewSize
                        for j in 0..<viewSize { x[j] = (x[j] - m) * inv }
                    }
                }
            }
        }
        if let failure { throw failure }
        return crops
    }

    /// Per row of the 2B views, the grid tokens to average: the overlap mask (ACE) or, for
    /// DINO, nil meaning "the class token", or for an encoder without one, all of them.
    private func poolingMasks(_ crops: [GridCrop], batch b: Int) -> [[Bool]?] {
        guard config.objective == .ace else {
            let all = student.prefixTokens == 0 ? [Bool](repeating: true, count: config.grid.tokens) : nil
            return Array(repeating: all, count: 2 * b)
        }
        return crops.map { Optional($0.o1) } + crops.map { Optional($0.o2) }
    }

    private func pool(_ tokens: Tensor, masks: [[Bool]?], into out: Tensor) {
        let rows = tokens.shape[0], t = tokens.shape[1], c = tokens.shape[2], prefix = student.prefixTokens
        out.reshape([rows, c]); out.zero()
        for r in 0..<rows {
            let dst = out.data + r * c, base = tokens.data + r * t * c
            guard let mask = masks[r] else { dst.update(from: base, count: c); continue }
            let inv = meanWeight(mask)
            for (i, inside) in mask.enumerated() where inside {
                let src = base + (prefix + i) * c
                for k in 0..<c { dst[k] += src[k] * inv }
            }
        }
    }

    private func unpool(_ dPooled: Tensor, masks: [[Bool]?], into dTokens: Tensor) {
        let rows = dTokens.shape[0], t = dTokens.shape[1], c = dTokens.shape[2], prefix = student.prefixTokens
        for r in 0..<rows {
            let src = dPooled.data + r * c, base = dTokens.data + r * t * c
            guard let mask = masks[r] else {
                for k in 0..<c { base[k] += src[k] }
                continue
            }
            let inv = meanWeight(mask)
            for (i, inside) in mask.enumerated() where inside {
                let dst = base + (prefix + i) * c
                for k in 0..<c { dst[k] += src[k] * inv }
            }
        }
    }
}

/// 1 / (tokens in the mask): the weight of each token in its masked mean.
private func meanWeight(_ mask: [Bool]) -> Float { 1 / Float(mask.lazy.filter { $0 }.count) }

func copyValues(from source: [Parameter], to target: [Parameter]) {
    for (s, t) in zip(source, target) { t.value.data.update(from: s.value.data, count: s.count) }
}
