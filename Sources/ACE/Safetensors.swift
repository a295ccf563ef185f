import FoundationEssentials
import Glibc

/// The safetensors format: an 8-byte little-endian header length, a JSON header mapping
/// names to {dtype, shape, data_offsets} (plus "__metadata__": string -> string), then the
/// raw little-endian tensor bytes. Only F32 tensors are written and read here.
public enum Safetensors {
    /// One header value: a tensor's description, or the string map under "__metadata__".
    enum HeaderValue: Codable {
        case tensor(TensorInfo)
        case metadata([String: String])

        struct TensorInfo: Codable {
            let dtype: String
            let shape: [Int]
            let data_offsets: [Int]
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let t = try? c.decode(TensorInfo.self) { self = .tensor(t) } else { self = .metadata(try c.decode([String: String].self)) }
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .tensor(let t): try c.encode(t)
            case .metadata(let m): try c.encode(m)
            }
        }
    }

    public struct Entry {
        public let name: String
        public let shape: [Int]
        public let values: [Float]
    }

    /// Writes atomically: a temporary file in the same folder, then a rename, so a crash
    /// mid-write never leaves a truncated checkpoint under `path`.
    public static func write(_ entries: [(name: String, shape: [Int], data: UnsafePointer<Float>)],
                             metadata: [String: String], to path: String) throws {
        var header: [String: HeaderValue] = ["__metadata__": .metadata(metadata)]
        var offset = 0
        for e in entries {
            let bytes = e.shape.reduce(1, *) * 4
            header[e.name] = .tensor(.init(dtype: "F32", shape: e.shape, data_offsets: [offset, offset + bytes]))
            offset += bytes
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var json = try encoder.encode(header)
        // Pad with spaces so the tensor data starts 8-byte aligned, as the format recommends.
        while json.count % 8 != 0 { json.append(0x20) }
        var file = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for e in entries {
            file.append(UnsafeBufferPointer(start: e.data, count: e.shape.reduce(1, *)))
        }
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        try require(FileManager.default.fileExists(atPath: dir), "cannot write \(path): folder \(dir) does not exist")
        let tmp = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try file.write(to: tmp)
            if rename(tmp.path, url.path) != 0 {
                throw ACEError("cannot rename \(tmp.path) to \(path): \(String(cString: strerror(errno)))")
            }
        } catch let e as ACEError {
            try? FileManager.default.removeItem(at: tmp)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw ACEError("cannot write \(path): \(error)")
        }
    }

    /// Reads every tensor, validating the header against the file.
    public static func read(_ path: String) throws -> (metadata: [String: String], entries: [String: Entry]) {
        guard let file = FileManager.default.contents(atPath: path) else {
            throw ACEError("cannot read checkpoint \(path): no such file or not readable")
        }
        try require(file.count >= 8, "checkpoint \(path) is not a safetensors file: only \(file.count) bytes")
        let headerLength = file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        try require(headerLength <= UInt64(file.count - 8),
                    "checkpoint \(path) is corrupt: header length \(headerLength) exceeds the file size \(file.count)")
        let dataStart = 8 + Int(headerLength)
        let headerData = file.subdata(in: 8..<dataStart)
        guard let header = try? JSONDecoder().decode([String: HeaderValue].self, from: headerData) else {
            throw ACEError("checkpoint \(path) is corrupt: its header is not a safetensors JSON header")
        }
        let dataLength = file.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (name, value) in header {
            let info: HeaderValue.TensorInfo
            switch (name, value) {
            case ("__metadata__", .metadata(let m)): metadata = m; continue
            case (_, .tensor(let t)) where name != "__metadata__" && t.data_offsets.count == 2: info = t
            default: throw ACEError("checkpoint \(path) is corrupt: bad header entry for '\(name)'")
            }
            let (dtype, shape, offsets) = (info.dtype, info.shape, info.data_offsets)
            try require(dtype == "F32", "tensor '\(name)' in \(path) has dtype \(dtype); only F32 is supported")
            try require(shape.allSatisfy { $0 >= 0 }, "tensor '\(name)' in \(path) has a negative dimension")
            // A corrupt header may claim sizes whose product overflows: check, never trap.
            var count = 1
            for d in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: d)
                try require(!overflow && product <= dataLength / 4,
                            "checkpoint \(path) is corrupt: tensor '\(name)' shape \(shape) exceeds the file")
                count = product
            }
            try require(offsets[0] >= 0 && offsets[1] == offsets[0] + 4 * count && offsets[1] <= dataLength,
                        "checkpoint \(path) is corrupt: tensor '\(name)' offsets \(offsets) do not fit shape \(shape) and \(dataLength) data bytes")
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in
                file.copyBytes(to: dst, from: (dataStart + offsets[0])..<(dataStart + offsets[1]))
            }
            try require(values.allSatisfy { $0.isFinite }, "tensor '\(name)' in \(path) contains NaN or infinite values")
            entries[name] = Entry(name: name, shape: shape, values: values)
        }
        return (metadata, entries)
    }
}
