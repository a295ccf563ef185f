import ACE
import FoundationEssentials
import Glibc

/// A training-run handle; like encoders, one handle's calls are serialized by its lock.
final class TrainerHandle {
    let trainer: Trainer
    let lock = Lock()
    let configJSON: UnsafeMutablePointer<CChar>

    init(_ trainer: Trainer) throws {
        self.trainer = trainer
        configJSON = strdup(trainer.config.json)
    }

    deinit { free(configJSON) }
}

func trainerHandle(_ h: UnsafeMutableRawPointer?) throws -> TrainerHandle {
    guard let h else { throw ACEError("null trainer handle") }
    return Unmanaged<TrainerHandle>.fromOpaque(h).takeUnretainedValue()
}

/// The values a step reports, in the order ace_trainer_step writes them, by name: the one list
/// of them (the binding reads the names with ace_trainer_stat_names).
let statFields: [(name: String, value: (Trainer.Stats) -> Double)] = [
    ("loss", \.loss), ("global", \.global), ("comp", \.comp), ("decomp", \.decomp), ("lr", \.lr), ("wd", \.wd),
    ("momentum", \.momentum), ("grad_norm", \.gradNorm), ("step", { Double($0.step) }),
    ("comp_acc", \.compAccuracy), ("decomp_acc", \.decompAccuracy),
]
private let statNames: UnsafeMutablePointer<CChar> = strdup(statFields.map(\.name).joined(separator: ","))!

/// The names of the values ace_trainer_step writes, comma-separated, in order.
@_cdecl("ace_trainer_stat_names")
public func ace_trainer_stat_names() -> UnsafePointer<CChar>? { UnsafePointer(statNames) }

@_cdecl("ace_trainer_create")
public func ace_trainer_create(_ json: UnsafePointer<CChar>?, _ seed: UInt64,
                               _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let config = try decodePretrainConfig(try string(json, "config"))
        out?.pointee = Unmanaged.passRetained(try TrainerHandle(try Trainer(config, seed: seed))).toOpaque()
    }
}

@_cdecl("ace_trainer_load")
public func ace_trainer_load(_ path: UnsafePointer<CChar>?,
                             _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let trainer = try Trainer.load(from: try string(path, "path"))
        out?.pointee = Unmanaged.passRetained(try TrainerHandle(trainer)).toOpaque()
    }
}

@_cdecl("ace_trainer_free")
public func ace_trainer_free(_ h: UnsafeMutableRawPointer?) {
    guard let h else { return }
    Unmanaged<TrainerHandle>.fromOpaque(h).release()
}

@_cdecl("ace_trainer_config")
public func ace_trainer_config(_ h: UnsafeMutableRawPointer?) -> UnsafePointer<CChar>? {
    guard let t = try? trainerHandle(h) else { return nil }
    return UnsafePointer(t.configJSON)
}

/// Writes the whole run atomically; `runState` (may be NULL) is stored verbatim under the
/// metadata key "run": the caller's state of the run (data, seed, length) for resuming it.
@_cdecl("ace_trainer_save")
public func ace_trainer_save(_ h: UnsafeMutableRawPointer?, _ path: UnsafePointer<CChar>?,
                             _ runState: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        let p = try string(path, "path")
        let extra = runState.map { ["run": String(cString: $0)] } ?? [:]
        try t.lock.locked { try t.trainer.save(to: p, extraMetadata: extra) }
    }
}

/// images (B, C, H, W) float32 in [0, 1], C the run's in_chans; stats receives the `statFields` values.
@_cdecl("ace_trainer_step")
public func ace_trainer_step(_ h: UnsafeMutableRawPointer?, _ images: UnsafePointer<Float>?,
                             _ b: Int64, _ channels: Int64, _ height: Int64, _ width: Int64,
                             _ stats: UnsafeMutablePointer<Double>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        guard let images, let stats else { throw ACEError("null images or stats") }
        guard b >= 0, height >= 0, width >= 0 else { throw ACEError("negative image dimension") }
        try checkChannels(channels, t.trainer)
        let s = try t.lock.locked { try t.trainer.step(images: images, batch: Int(b), height: Int(height), width: Int(width)) }
        writeStats(s, stats)
    }
}

/// The images' channel count must be the run's in_chans (the core reads that many planes).
func checkChannels(_ channels: Int64, _ trainer: Trainer) throws {
    let expected = trainer.config.inChans
    guard channels == Int64(expected) else {
        throw ACEError("images have \(channels) channel(s); this run trains on in_chans \(expected)"
                       + (expected == 3 ? " (colour R, G, B)" : " (grey)"))
    }
}

func writeStats(_ s: Trainer.Stats, _ stats: UnsafeMutablePointer<Double>) {
    for (i, field) in statFields.enumerated() { stats[i] = field.value(s) }
}

/// The first half of a step (data-parallel training): gradients into the flat buffer of
/// ace_trainer_gradients, the center statistic into ace_trainer_center_statistic. first_image
/// is the global position of images[0] in the step's global batch. stats: the loss terms.
@_cdecl("ace_trainer_compute_gradients")
public func ace_trainer_compute_gradients(_ h: UnsafeMutableRawPointer?, _ images: UnsafePointer<Float>?,
                                          _ b: Int64, _ channels: Int64, _ height: Int64, _ width: Int64,
                                          _ firstImage: Int64, _ stats: UnsafeMutablePointer<Double>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        guard let images, let stats else { throw ACEError("null images or stats") }
        guard b >= 0, height >= 0, width >= 0 else { throw ACEError("negative image dimension") }
        try checkChannels(channels, t.trainer)
        guard firstImage >= 0 else { throw ACEError("first_image must be >= 0, got \(firstImage)") }
        let s = try t.lock.locked {
            try t.trainer.computeGradients(images: images, batch: Int(b), height: Int(height), width: Int(width),
                                           firstImage: Int(firstImage))
        }
        writeStats(s, stats)
    }
}

/// The second half: clip, AdamW, EMA teacher and center from the buffers as they are now.
@_cdecl("ace_trainer_apply_gradients")
public func ace_trainer_apply_gradients(_ h: UnsafeMutableRawPointer?, _ stats: UnsafeMutablePointer<Double>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        guard let stats else { throw ACEError("null stats") }
        writeStats(try t.lock.locked { try t.trainer.applyGradients() }, stats)
    }
}

/// The trainer's gradient storage (which 0: every trainable gradient, one contiguous float32
/// buffer) or the center's batch statistic (which 1): pointer and element count, valid as
/// long as the trainer.
@_cdecl("ace_trainer_buffer")
public func ace_trainer_buffer(_ h: UnsafeMutableRawPointer?, _ which: Int32,
                               _ data: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                               _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        guard let data, let count else { throw ACEError("null output") }
        switch which {
        case 0: data.pointee = t.trainer.gradients.data; count.pointee = Int64(t.trainer.gradients.count)
        case 1: data.pointee = t.trainer.centerBatchMean.data; count.pointee = Int64(t.trainer.centerBatchMean.count)
        default: throw ACEError("buffer must be 0 (gradients) or 1 (center statistic), got \(which)")
        }
    }
}

/// The student (which 0) or teacher (which 1) encoder as an encoder handle sharing the
/// weights (no copy): it sees every update the trainer makes.
@_cdecl("ace_trainer_encoder")
public func ace_trainer_encoder(_ h: UnsafeMutableRawPointer?, _ which: Int32,
                                _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let t = try trainerHandle(h)
        guard which == 0 || which == 1 else { throw ACEError("encoder must be 0 (student) or 1 (teacher)") }
        let model = which == 0 ? t.trainer.student : t.trainer.teacher
        out?.pointee = Unmanaged.passRetained(EncoderHandle(model, lock: t.lock)).toOpaque()
    }
}

/// Samples `count` grid crops with a generator seeded by `seed`, for inspection. Per crop:
/// boxes[8] = C1 (x0, y0, x1, y1), C2 (x0, y0, x1, y1); o1, o2 (N each); t_comp (N x N/4);
/// t_decomp (N x 4N), N = fine_cells^2. When image (S x S, S = image_size) is given, the
/// un-augmented views (input x input each) are written to views1 / views2. `lengths` holds the
/// element counts of the eight buffers (boxes, o1, o2, t_comp, t_decomp, image, views1,
/// views2), checked against what the config needs before anything is written.
@_cdecl("ace_grid_crops")
public func ace_grid_crops(_ json: UnsafePointer<CChar>?, _ seed: UInt64, _ count: Int64,
                           _ boxes: UnsafeMutablePointer<Int32>?, _ o1: UnsafeMutablePointer<UInt8>?,
                           _ o2: UnsafeMutablePointer<UInt8>?, _ tComp: UnsafeMutablePointer<Float>?,
                           _ tDecomp: UnsafeMutablePointer<Float>?, _ image: UnsafePointer<Float>?,
                           _ views1: UnsafeMutablePointer<Float>?, _ views2: UnsafeMutablePointer<Float>?,
                           _ lengths: UnsafePointer<Int64>?) -> Int32 {
    guarded {
        let config = try decodePretrainConfig(try string(json, "config"))
        let g = config.grid
        guard let boxes, let o1, let o2, let tComp, let tDecomp, let lengths else { throw ACEError("null output buffer") }
        try Limits.require(Int(count), in: 0...Limits.batch, "crop count")
        let n = g.tokens, size = g.inputSize, c = Int(count)
        var needed = [8 * c, n * c, n * c, n * g.composed * c, n * g.decomposed * c]
        if image != nil { needed += [g.imageSize * g.imageSize, size * size * c, size * size * c] }
        let names = ["boxes", "o1", "o2", "t_comp", "t_decomp", "image", "views1", "views2"]
        for (i, need) in needed.enumerated() where lengths[i] < Int64(need) {
            throw ACEError("grid_crops: buffer \(names[i]) holds \(lengths[i]) values, \(need) are needed")
        }
        var rng = RNG(seed: seed)
        for i in 0..<c {
            let crop = GridCrop.sample(g, rng: &rng)
            let (a, b) = (crop.c1Box, crop.c2Box)
            for (k, v) in [a.x0, a.y0, a.x1, a.y1, b.x0, b.y0, b.x1, b.y1].enumerated() { boxes[i * 8 + k] = Int32(v) }
            for (k, v) in crop.o1.enumerated() { o1[i * n + k] = v ? 1 : 0 }
            for (k, v) in crop.o2.enumerated() { o2[i * n + k] = v ? 1 : 0 }
            (tComp + i * n * g.composed).update(from: crop.compositionTarget, count: n * g.composed)
            (tDecomp + i * n * g.decomposed).update(from: crop.decompositionTarget, count: n * g.decomposed)
            if let image {
                guard let views1, let views2 else { throw ACEError("null view buffer") }
                for (box, dst) in [(a, views1), (b, views2)] {
                    cropResize(image, width: g.imageSize, height: g.imageSize,
                               box: (box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0),
                               to: dst + i * size * size, size: size)
                }
            }
        }
    }
}

/// The composition/decomposition loss on given arrays (for tests against other
/// implementations): teacher (B, N, C), z (B, Nz, C), targets (B, N, Nz); writes the mean
/// loss, the matching accuracy and dz (B, Nz, C) = d loss / dz.
@_cdecl("ace_local_match_loss")
public func ace_local_match_loss(_ teacher: UnsafePointer<Float>?, _ z: UnsafePointer<Float>?,
                                 _ targets: UnsafePointer<Float>?, _ b: Int64, _ n: Int64, _ nz: Int64, _ c: Int64,
                                 _ alpha: Float, _ scale: Float,
                                 _ loss: UnsafeMutablePointer<Double>?, _ accuracy: UnsafeMutablePointer<Double>?,
                                 _ dz: UnsafeMutablePointer<Float>?) -> Int32 {
    guarded {
        guard let teacher, let z, let targets, let loss, let accuracy, let dz else { throw ACEError("null buffer") }
        guard b > 0, n > 0, nz > 0, c > 0 else { throw ACEError("empty local loss input") }
        let (b, n, nz, c) = (Int(b), Int(n), Int(nz), Int(c))
        // The loss reads encoder outputs, class token first: give it a zero class token.
        let withClass = Tensor([b, 1 + n, c])
        for i in 0..<b { (withClass.data + (i * (1 + n) + 1) * c).update(from: teacher + i * n * c, count: n * c) }
        let zt = Tensor([b, nz, c])
        zt.data.update(from: z, count: b * nz * c)
        let t = (0..<b).map { Array(UnsafeBufferPointer(start: targets + $0 * n * nz, count: n * nz)) }
        let grad = Tensor([0])
        let r = LocalMatchLoss(alpha: alpha, scale: scale)(teacher: withClass.data, tokens: n, z: zt, targets: t,
                                                            weight: 1, dz: grad)
        loss.pointee = r.loss
        accuracy.pointee = r.accuracy
        dz.update(from: grad.data, count: b * nz * c)
    }
}

/// Steps the run has taken (the schedules' position).
@_cdecl("ace_trainer_steps")
public func ace_trainer_steps(_ h: UnsafeMutableRawPointer?) -> Int64 {
    guard let t = try? trainerHandle(h) else { return -1 }
    return t.lock.locked { Int64(t.trainer.step) }
}
