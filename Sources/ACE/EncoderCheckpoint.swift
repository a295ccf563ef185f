import FoundationEssentials
import Glibc

/// Encoder checkpoints: timm-named F32 tensors, the config JSON in the metadata.
extension VisionTransformer {
    public var configJSON: String { canonicalJSON(config) }

    public static func config(fromJSON json: String) throws -> ViTConfig {
        try decodeConfig(json, as: ViTConfig.self, what: "encoder") { try $0.validate() }
    }

    public func save(to path: String, extraMetadata: [String: String] = [:]) throws {
        try writeEncoderFile(to: path, metadata: extraMetadata)
    }

    /// Loads a ViT encoder file, or the teacher encoder of a training checkpoint (see `loadEncoder`).
    public static func load(from path: String) throws -> VisionTransformer {
        guard let model = try loadEncoder(from: path) as? VisionTransformer else {
            throw ACEError("\(path) holds a Swin encoder, not a ViT")
        }
        return model
    }

    /// An encoder file's ViT, from the file already read (training checkpoints: `loadEncoder`).
    static func load(metadata: [String: String], entries: [String: Safetensors.Entry],
                     path: String) throws -> VisionTransformer {
        guard let json = metadata["config"] else {
            throw ACEError("checkpoint \(path) has no encoder config in its metadata")
        }
        let cfg = try config(fromJSON: json)
        try requirePlausibleSize(parameters: cfg.parameterCount, entries: entries, path: path)
        let model = try VisionTransformer(cfg)
        try model.loadState(entries.mapValues { ($0.shape, $0.values) }, source: path)
        return model
    }

    /// Replaces every parameter; names, shapes and the set of tensors must match exactly.
    public func loadState(_ state: [String: (shape: [Int], values: [Float])], source: String) throws {
        try loadParameters(parameters, from: state, source: source)
    }
}

/// Replaces every parameter of an encoder; names, shapes and the set of tensors must match
/// exactly, and every value must be finite (checked before anything is changed).
func loadParameters(_ parameters: [Parameter], from state: [String: (shape: [Int], values: [Float])],
                    source: String) throws {
    let expected = Set(parameters.map(\.name)), given = Set(state.keys)
    let missing = expected.subtracting(given).sorted(), unexpected = given.subtracting(expected).sorted()
    try require(missing.isEmpty && unexpected.isEmpty,
                "\(source) does not match the encoder: missing \(missing), unexpected \(unexpected)")
    for p in parameters {
        let t = state[p.name]!
        try require(t.shape == p.shape, "\(source): tensor '\(p.name)' has shape \(t.shape), expected \(p.shape)")
        try require(t.values.allSatisfy { $0.isFinite }, "\(source): tensor '\(p.name)' contains NaN or infinite values")
    }
    for p in parameters {
        state[p.name]!.values.withUnsafeBufferPointer { p.value.data.update(from: $0.baseAddress!, count: p.count) }
    }
}

/// A config as JSON with sorted keys, so equal configs give equal bytes (and checkpoints of
/// equal runs are byte-identical).
public func canonicalJSON<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
}

/// Build nothing much larger than the file: a forged config could ask for any size. (Close
/// mismatches are named tensor by tensor when the state is loaded.)
func requirePlausibleSize(parameters: Double, entries: [String: Safetensors.Entry], path: String) throws {
    let stored = entries.values.reduce(0.0) { $0 + Double($1.values.count) }
    try require(parameters <= 2 * stored,
                "checkpoint \(path) is corrupt: its config describes \(Int(parameters)) weights, the file holds \(Int(stored))")
}

/// Decodes and validates a config; decoding errors become an ACEError naming the config.
func decodeConfig<T: Decodable>(_ json: String, as type: T.Type, what: String,
                                validate: (T) throws -> Void) throws -> T {
    let config: T
    do {
        config = try JSONDecoder().decode(T.self, from: Data(json.utf8))
    } catch let error as DecodingError {
        throw ACEError("invalid \(what) config: \(describe(error))")
    } catch {
        throw ACEError("invalid \(what) config JSON: \(error)")
    }
    try validate(config)
    return config
}

/// "field 'grid.window': expected Int" rather than the decoder's debug dump.
func describe(_ error: DecodingError) -> String {
    func field(_ path: [CodingKey]) -> String {
        path.isEmpty ? "the top level" : "field '" + path.map { $0.intValue.map(String.init) ?? $0.stringValue }
            .joined(separator: ".") + "'"
    }
    switch error {
    case .typeMismatch(let type, let c): return "\(field(c.codingPath)) must be of type \(type)"
    case .valueNotFound(let type, let c): return "\(field(c.codingPath)) is null; expected \(type)"
    case .keyNotFound(let key, let c): return "\(field(c.codingPath + [key])) is missing"
    case .dataCorrupted(let c): return "\(field(c.codingPath)): \(c.debugDescription)"
    @unknown default: return "\(error)"
    }
}
