import FoundationEssentials

/// A whole run in one safetensors file: student, teacher, heads, AdamW moments and the
/// center as tensors; the config, step, AdamW step count and the generator's state in the
/// metadata, so a resumed run continues bit for bit.
extension Trainer {
    public static let checkpointFormat = "ace-trainer"

    /// `extraMetadata`: the caller's entries (e.g. "run", the state of the driver's loop), kept
    /// beside the run's own; they cannot replace those.
    public func save(to path: String, extraMetadata: [String: String] = [:]) throws {
        let configJSON = config.json
        let encoderJSON = teacher.configJSON
        let s = rng.state
        var metadata = extraMetadata
        for (key, value) in [
            "format": Self.checkpointFormat,
            "config": configJSON,
            "encoder_config": encoderJSON,
            "step": String(step),
            "adam_t": String(optimizer.t),
            "rng": [s.0, s.1, s.2, s.3].map(String.init).joined(separator: ","),
        ] {
            try require(metadata[key] == nil, "metadata key '\(key)' is the run's own")
            metadata[key] = value
        }
        try Safetensors.write(namedTensors.map { ($0.0, $0.1.shape, UnsafePointer($0.1.data)) },
                              metadata: metadata, to: path)
    }

    public static func load(from path: String) throws -> Trainer {
        let (metadata, entries) = try Safetensors.read(path)
        try require(metadata["format"] == checkpointFormat,
                    "\(path) is not a training checkpoint (format \(metadata["format"] ?? "none")); load it as an encoder instead")
        guard let json = metadata["config"], let step = metadata["step"].flatMap({ Int($0) }),
              let adamT = metadata["adam_t"].flatMap({ Int($0) }),
              let words = metadata["rng"]?.split(separator: ",").compactMap({ UInt64($0) }), words.count == 4 else {
            throw ACEError("training checkpoint \(path) is missing its config, step, adam_t or rng metadata")
        }
        let config = try decodePretrainConfig(json)
        try require((0...config.totalSteps).contains(step),
                    "training checkpoint \(path) is corrupt: step \(step) is outside 0...\(config.totalSteps)")
        try require((0...step).contains(adamT),
                    "training checkpoint \(path) is corrupt: adam_t \(adamT) is outside 0...\(step)")
        try require(words.contains { $0 != 0 }, "training checkpoint \(path) is corrupt: its generator state is all zero")
        let stored = entries.values.reduce(0.0) { $0 + Double($1.values.count) }
        let needed = 2 * (try config.encoderSpec).parameterCount
        try require(needed <= stored,
                    "training checkpoint \(path) is corrupt: its config describes at least \(Int(needed)) values, the file holds \(Int(stored))")
        let trainer = try Trainer(config, seed: 0)
        let tensors = trainer.namedTensors
        let expected = Set(tensors.map(\.0)), given = Set(entries.keys)
        try require(expected == given, "\(path) does not match its config: missing \(expected.subtracting(given).sorted().prefix(5)), unexpected \(given.subtracting(expected).sorted().prefix(5))")
        for (name, tensor) in tensors {
            let e = entries[name]!
            try require(e.shape == tensor.shape, "\(path): tensor '\(name)' has shape \(e.shape), expected \(tensor.shape)")
        }
        for (name, tensor) in tensors {
            entries[name]!.values.withUnsafeBufferPointer { tensor.data.update(from: $0.baseAddress!, count: tensor.count) }
        }
        trainer.step = step
        trainer.optimizer.t = adamT
        // Each parameter's update count follows from t: the last layer sat out the frozen steps.
        for (i, p) in trainer.optimizer.parameters.enumerated() {
            trainer.optimizer.counts[i] = p === trainer.head.lastLayer ? max(0, adamT - trainer.frozenSteps) : adamT
        }
        trainer.rng.state = (words[0], words[1], words[2], words[3])
        return trainer
    }
}

public func decodePretrainConfig(_ json: String) throws -> PretrainConfig {
    let config = try PretrainConfig(json: json, what: "pretraining")
    try config.validate()
    return config
}
