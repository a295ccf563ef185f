import ACE
import FoundationEssentials
import Glibc

/// An encoder handle. Its lock serializes the calls on it: Python threads may call
/// concurrently (the GIL is released during calls) and must wait for each other instead of
/// racing. Encoders that belong to a trainer share the trainer's lock.
final class EncoderHandle {
    let model: any TokenEncoder
    let lock: Lock
    let configJSON: UnsafeMutablePointer<CChar>
    /// Parameter names as C strings, alive as long as the handle.
    let names: [UnsafePointer<CChar>]
    /// Fine-tuning state, created by the first training forward: AdamW moments and the
    /// generator of drop path.
    var optimizer: AdamW?
    var rng = RNG(seed: 0)
    var lastOutputCount = 0

    /// A standalone encoder computes in the machine's automatic precision; a trainer's
    /// encoders keep the precision the trainer set.
    init(_ model: any TokenEncoder, lock: Lock? = nil) {
        self.model = model
        if lock == nil { model.precision = .automatic }
        self.lock = lock ?? Lock()
        configJSON = strdup(model.configJSON)
        names = model.parameters.map { UnsafePointer(strdup($0.name)!) }
    }

    deinit {
        free(configJSON)
        for n in names { free(UnsafeMutablePointer(mutating: n)) }
    }

    func parameter(_ i: Int32, count: Int64) throws -> Parameter {
        let params = model.parameters
        guard i >= 0 && Int(i) < params.count else { throw ACEError("tensor index \(i) out of range") }
        let p = params[Int(i)]
        guard Int64(p.count) == count else {
            throw ACEError("tensor '\(p.name)' has \(p.count) values, got a buffer of \(count)")
        }
        return p
    }

    func locked<T>(_ body: () throws -> T) rethrows -> T { try lock.locked(body) }
}

func encoder(_ h: UnsafeMutableRawPointer?) throws -> EncoderHandle {
    guard let h else { throw ACEError("null encoder handle") }
    return Unmanaged<EncoderHandle>.fromOpaque(h).takeUnretainedValue()
}

func string(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let p else { throw ACEError("null \(what)") }
    return String(cString: p)
}

@_cdecl("ace_encoder_create")
public func ace_encoder_create(_ preset: UnsafePointer<CChar>?, _ inChans: Int32, _ imgSize: Int32,
                               _ dropPath: Float, _ seed: UInt64,
                               _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let model = try makeEncoder(preset: try string(preset, "preset"), inChans: Int(inChans),
                                    imgSize: Int(imgSize), dropPath: dropPath, seed: seed)
        out?.pointee = Unmanaged.passRetained(EncoderHandle(model)).toOpaque()
    }
}

@_cdecl("ace_encoder_create_from_json")
public func ace_encoder_create_from_json(_ json: UnsafePointer<CChar>?, _ seed: UInt64,
                                         _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let model = try makeEncoder(configJSON: try string(json, "config"), seed: seed)
        out?.pointee = Unmanaged.passRetained(EncoderHandle(model)).toOpaque()
    }
}

@_cdecl("ace_encoder_load")
public func ace_encoder_load(_ path: UnsafePointer<CChar>?,
                             _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guarded {
        let model = try loadEncoder(from: try string(path, "path"))
        out?.pointee = Unmanaged.passRetained(EncoderHandle(model)).toOpaque()
    }
}

@_cdecl("ace_encoder_free")
public func ace_encoder_free(_ h: UnsafeMutableRawPointer?) {
    guard let h else { return }
    Unmanaged<EncoderHandle>.fromOpaque(h).release()
}

/// Writes the encoder atomically; `preprocessing` (may be NULL) is stored verbatim under the
/// metadata key "preprocessing": the caller's intensity normalization and default features.
@_cdecl("ace_encoder_save")
public func ace_encoder_save(_ h: UnsafeMutableRawPointer?, _ path: UnsafePointer<CChar>?,
                             _ preprocessing: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        let e = try encoder(h)
        let p = try string(path, "path")
        let extra = preprocessing.map { ["preprocessing": String(cString: $0)] } ?? [:]
        try e.locked { try e.model.save(to: p, extraMetadata: extra) }
    }
}

/// The config as JSON; the string lives as long as the handle.
@_cdecl("ace_encoder_config")
public func ace_encoder_config(_ h: UnsafeMutableRawPointer?) -> UnsafePointer<CChar>? {
    guard let e = try? encoder(h) else { return nil }
    return UnsafePointer(e.configJSON)
}

@_cdecl("ace_encoder_num_tensors")
public func ace_encoder_num_tensors(_ h: UnsafeMutableRawPointer?) -> Int32 {
    guard let e = try? encoder(h) else { return -1 }
    return Int32(e.model.parameters.count)
}

/// Name (valid as long as the handle) and shape (up to 4 dims) of parameter i.
@_cdecl("ace_encoder_tensor_info")
public func ace_encoder_tensor_info(_ h: UnsafeMutableRawPointer?, _ i: Int32,
                                    _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                    _ ndim: UnsafeMutablePointer<Int32>?,
                                    _ shape: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let e = try encoder(h)
        let params = e.model.parameters
        guard i >= 0 && Int(i) < params.count else { throw ACEError("tensor index \(i) out of range") }
        let p = params[Int(i)]
        name?.pointee = e.names[Int(i)]
        ndim?.pointee = Int32(p.shape.count)
        for (d, s) in p.shape.enumerated() { shape?[d] = Int64(s) }
    }
}

/// Copies a parameter out (get) or in (set); count must equal the parameter's size.
@_cdecl("ace_encoder_get_tensor")
public func ace_encoder_get_tensor(_ h: UnsafeMutableRawPointer?, _ i: Int32,
                                   _ dst: UnsafeMutablePointer<Float>?, _ count: Int64) -> Int32 {
    guarded {
        let e = try encoder(h)
        let p = try e.parameter(i, count: count)
        guard let dst else { throw ACEError("null destination") }
        e.locked { dst.update(from: p.value.data, count: p.count) }
    }
}

@_cdecl("ace_encoder_set_tensor")
public func ace_encoder_set_tensor(_ h: UnsafeMutableRawPointer?, _ i: Int32,
                                   _ src: UnsafePointer<Float>?, _ count: Int64) -> Int32 {
    guarded {
        let e = try encoder(h)
        let p = try e.parameter(i, count: count)
        guard let src else { throw ACEError("null source") }
        for j in 0..<p.count where !src[j].isFinite {
            throw ACEError("tensor '\(p.name)' contains NaN or infinite values")
        }
        e.locked { p.value.data.update(from: src, count: p.count) }
    }
}

/// x (B, C, H, W) -> out (B, T, C): (B, 1 + h*w, embed_dim) for a ViT, (B, g*g, C_final) for a
/// Swin; outCount must equal that size.
@_cdecl("ace_encoder_forward_features")
public func ace_encoder_forward_features(_ h: UnsafeMutableRawPointer?, _ x: UnsafePointer<Float>?,
                                         _ b: Int64, _ c: Int64, _ height: Int64, _ width: Int64,
                                         _ out: UnsafeMutablePointer<Float>?, _ outCount: Int64) -> Int32 {
    guarded { try runForward(h, x, [b, c, height, width], out, outCount, training: false) }
}

/// Training forward (drop path active), keeping what backward needs. As forward_features.
@_cdecl("ace_encoder_forward_train")
public func ace_encoder_forward_train(_ h: UnsafeMutableRawPointer?, _ x: UnsafePointer<Float>?,
                                      _ b: Int64, _ c: Int64, _ height: Int64, _ width: Int64,
                                      _ out: UnsafeMutablePointer<Float>?, _ outCount: Int64) -> Int32 {
    guarded { try runForward(h, x, [b, c, height, width], out, outCount, training: true) }
}

private func runForward(_ h: UnsafeMutableRawPointer?, _ x: UnsafePointer<Float>?, _ shape: [Int64],
                        _ out: UnsafeMutablePointer<Float>?, _ outCount: Int64, training: Bool) throws {
    let e = try encoder(h)
    guard let x, let out else { throw ACEError("null input or output") }
    let dims = shape.map { Int($0) }
    try e.model.checkInputShape(dims)
    try e.locked {
        let input = Tensor(dims)
        input.data.update(from: x, count: input.count)
        // Any forward replaces the activations a pending backward would need.
        e.lastOutputCount = 0
        let y = training ? try e.model.forward(input, training: true, rng: &e.rng) : try e.model.infer(input)
        guard Int64(y.count) == outCount else {
            throw ACEError("output buffer holds \(outCount) values, the encoder produces \(y.count)")
        }
        out.update(from: y.data, count: y.count)
        if training { e.lastOutputCount = y.count }
    }
}

/// Inference forward, then the last block's attention probabilities of the class token's query:
/// out (B, heads, 1 + h*w); outCount must equal that size.
@_cdecl("ace_encoder_forward_attention")
public func ace_encoder_forward_attention(_ h: UnsafeMutableRawPointer?, _ x: UnsafePointer<Float>?,
                                          _ b: Int64, _ c: Int64, _ height: Int64, _ width: Int64,
                                          _ out: UnsafeMutablePointer<Float>?, _ outCount: Int64) -> Int32 {
    guarded {
        let e = try encoder(h)
        guard let x, let out else { throw ACEError("null input or output") }
        guard let vit = e.model as? VisionTransformer else {
            throw ACEError("attention maps of the class token need a ViT; a Swin Transformer has no class token")
        }
        let dims = [b, c, height, width].map { Int($0) }
        try vit.checkInputShape(dims)
        let cfg = vit.config, tokens = 1 + (dims[2] / cfg.patchSize) * (dims[3] / cfg.patchSize)
        guard outCount == Int64(dims[0] * cfg.numHeads * tokens) else {
            throw ACEError("output buffer holds \(outCount) values, the attention has \(dims[0] * cfg.numHeads * tokens)")
        }
        try e.locked {
            let input = Tensor(dims)
            input.data.update(from: x, count: input.count)
            e.lastOutputCount = 0
            try vit.infer(input)
            let a = vit.classAttention()
            out.update(from: a.data, count: a.count)
        }
    }
}

/// Accumulates parameter gradients for d loss / d output of the last training forward;
/// dy's shape (B, T, C) must be that output's shape.
@_cdecl("ace_encoder_backward")
public func ace_encoder_backward(_ h: UnsafeMutableRawPointer?, _ dy: UnsafePointer<Float>?,
                                 _ b: Int64, _ t: Int64, _ c: Int64) -> Int32 {
    guarded {
        let e = try encoder(h)
        guard let dy else { throw ACEError("null gradient") }
        try e.locked {
            guard e.lastOutputCount > 0 else { throw ACEError("backward needs a training forward first") }
            let expected = e.model.output.shape
            guard [b, t, c] == expected.map({ Int64($0) }) else {
                throw ACEError("gradient has shape (\(b), \(t), \(c)), the last training forward produced "
                               + "(\(expected.map(String.init).joined(separator: ", ")))")
            }
            let count = e.lastOutputCount
            for i in 0..<count where !dy[i].isFinite { throw ACEError("gradient contains NaN or infinite values") }
            let grad = Tensor(expected)
            grad.data.update(from: dy, count: count)
            e.model.backward(grad, inputGrad: nil)
            e.lastOutputCount = 0
        }
    }
}

/// One AdamW update of every parameter from the accumulated gradients, which are then zeroed.
@_cdecl("ace_encoder_adamw_step")
public func ace_encoder_adamw_step(_ h: UnsafeMutableRawPointer?, _ lr: Float, _ weightDecay: Float) -> Int32 {
    guarded {
        let e = try encoder(h)
        guard lr >= 0, weightDecay >= 0, lr.isFinite, weightDecay.isFinite else {
            throw ACEError("lr and weight_decay must be finite and non-negative")
        }
        e.locked {
            let opt = e.optimizer ?? AdamW(e.model.parameters)
            e.optimizer = opt
            opt.step(lr: lr, weightDecay: weightDecay)
            e.model.zeroGrad()
        }
    }
}

/// Sets how the encoder's products are computed: "auto", "bf16" or "fp32".
@_cdecl("ace_encoder_set_precision")
public func ace_encoder_set_precision(_ h: UnsafeMutableRawPointer?, _ setting: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        let e = try encoder(h)
        let precision = try Precision(setting: try string(setting, "precision"))
        e.locked { e.model.precision = precision }
    }
}

/// The encoder's precision, "bf16" or "fp32" (a static string).
@_cdecl("ace_encoder_precision")
public func ace_encoder_precision(_ h: UnsafeMutableRawPointer?) -> UnsafePointer<CChar>? {
    guard let e = try? encoder(h) else { return nil }
    return e.locked { e.model.precision == .bf16 ? bf16Name : fp32Name }
}

private let bf16Name = UnsafePointer(strdup("bf16")!)
private let fp32Name = UnsafePointer(strdup("fp32")!)

/// What "auto" means on this machine, as JSON: {"auto": "bf16", "hardware_bf16": true}.
@_cdecl("ace_precision_info")
public func ace_precision_info() -> UnsafePointer<CChar>? { UnsafePointer(precisionInfo) }

private let precisionInfo: UnsafeMutablePointer<CChar> =
    strdup("{\"auto\": \"\(Precision.automatic.rawValue)\", \"hardware_bf16\": \(Precision.hardwareBF16)}")!
