import CZlib
import FoundationEssentials
import Glibc

/// The safetensors format: an 8-byte little-endian header length, a JSON header mapping
/// names to {dtype, shape, data_offsets} (plus "__metadata__": string -> string), then the
/// raw little-endian tensor bytes. Only F32 tensors are written and read here.
///
/// Files we write carry the CRC-32 (zlib's, as Python's `zlib.crc32`) of the whole data
/// section in the metadata under `data_crc32`, so a flipped bit is caught on load; files from
/// other tools have none and load without the check.
public enum Safetensors {
    /// The metadata key of the data section's checksum (8 lowercase hex digits).
    public static let checksumKey = "data_crc32"
    /// Larger JSON headers are refused (the safetensors library's own limit is 100 MB).
    static let maxHeaderBytes = 100_000_000

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

    // MARK: - Writing

    /// Writes durably and atomically: a temporary file with a name unique to this process and
    /// call in the same folder, fsync, rename over `path`, fsync of the folder. A crash at any
    /// point leaves either the old file or the new one under `path`, never a truncated one.
    /// Temporary files left by writers that were killed are removed first.
    public static func write(_ entries: [(name: String, shape: [Int], data: UnsafePointer<Float>)],
                             metadata: [String: String], to path: String) throws {
        var crc: UInt = crc32(0, nil, 0)
        var header: [String: HeaderValue] = [:]
        var offset = 0
        for e in entries {
            let bytes = e.shape.reduce(1, *) * 4
            header[e.name] = .tensor(.init(dtype: "F32", shape: e.shape, data_offsets: [offset, offset + bytes]))
            crc = checksum(crc, UnsafeRawPointer(e.data), bytes)
            offset += bytes
        }
        var meta = metadata
        meta[checksumKey] = hex(crc)
        header["__metadata__"] = .metadata(meta)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var json = try encoder.encode(header)
        // Pad with spaces so the tensor data starts 8-byte aligned, as the format recommends.
        while json.count % 8 != 0 { json.append(0x20) }
        var prefix = Data(capacity: 8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(json)

        let file = try AtomicFile(path)
        defer { file.discard() }
        try prefix.withUnsafeBytes { try file.write($0.baseAddress!, $0.count) }
        for e in entries { try file.write(UnsafeRawPointer(e.data), e.shape.reduce(1, *) * 4) }
        try file.commit()
    }

    /// zlib's crc32 over a buffer of any length (its length argument is 32-bit).
    static func checksum(_ crc: UInt, _ p: UnsafeRawPointer, _ count: Int) -> UInt {
        var crc = crc, done = 0
        while done < count {
            let n = min(count - done, 1 << 30)
            crc = crc32(crc, (p + done).assumingMemoryBound(to: UInt8.self), UInt32(n))
            done += n
        }
        return crc
    }

    static func hex(_ crc: UInt) -> String {
        let s = String(crc & 0xFFFF_FFFF, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    // MARK: - Reading

    /// Reads every tensor, validating the header against the file before anything is built
    /// from it: dtypes, shapes, offsets (in checked arithmetic), no two tensors sharing bytes,
    /// finite values, and the data checksum where the file has one.
    public static func read(_ path: String) throws -> (metadata: [String: String], entries: [String: Entry]) {
        var st = stat()
        try require(stat(path, &st) == 0, "cannot read checkpoint \(path): \(String(cString: strerror(errno)))")
        try require((st.st_mode & S_IFMT) == S_IFREG, "cannot read checkpoint \(path): not a regular file")
        try Limits.requireMemory(2 * Double(st.st_size), for: "loading the \(st.st_size)-byte checkpoint \(path)")
        guard let file = FileManager.default.contents(atPath: path) else {
            throw ACEError("cannot read checkpoint \(path): not readable")
        }
        try require(file.count >= 8, "checkpoint \(path) is not a safetensors file: only \(file.count) bytes")
        let headerLength = file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        try require(headerLength <= UInt64(min(file.count - 8, maxHeaderBytes)),
                    "checkpoint \(path) is corrupt: header length \(headerLength) exceeds the file size \(file.count)")
        let dataStart = 8 + Int(headerLength)
        let headerData = file.subdata(in: 8..<dataStart)
        guard let header = try? JSONDecoder().decode([String: HeaderValue].self, from: headerData) else {
            throw ACEError("checkpoint \(path) is corrupt: its header is not a safetensors JSON header")
        }
        let dataLength = file.count - dataStart
        var metadata: [String: String] = [:]
        var tensors: [(name: String, shape: [Int], range: Range<Int>)] = []
        for (name, value) in header {
            switch (name, value) {
            case ("__metadata__", .metadata(let m)): metadata = m
            case (_, .tensor(let t)) where name != "__metadata__" && t.data_offsets.count == 2:
                tensors.append((name, t.shape, try checkedRange(t, name: name, dataLength: dataLength, path: path)))
            default: throw ACEError("checkpoint \(path) is corrupt: bad header entry for '\(name)'")
            }
        }
        // Two tensors must never read the same bytes.
        let sorted = tensors.filter { !$0.range.isEmpty }.sorted { $0.range.lowerBound < $1.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.range.lowerBound < a.range.upperBound {
            throw ACEError("checkpoint \(path) is corrupt: tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
        if let stored = metadata[checksumKey] {
            let computed = file.withUnsafeBytes { checksum(crc32(0, nil, 0), $0.baseAddress! + dataStart, dataLength) }
            try require(stored.lowercased() == hex(computed),
                        "checkpoint \(path) is corrupt: its tensor data fail the CRC-32 check (stored \(stored), computed \(hex(computed))); the file was damaged after it was written")
        }
        var entries: [String: Entry] = [:]
        for t in tensors {
            var values = [Float](repeating: 0, count: t.range.count / 4)
            _ = values.withUnsafeMutableBytes { dst in
                file.copyBytes(to: dst, from: (dataStart + t.range.lowerBound)..<(dataStart + t.range.upperBound))
            }
            try require(values.allSatisfy { $0.isFinite }, "tensor '\(t.name)' in \(path) contains NaN or infinite values")
            entries[t.name] = Entry(name: t.name, shape: t.shape, values: values)
        }
        return (metadata, entries)
    }

    /// The byte range of one tensor in the data section. A corrupt header may claim offsets
    /// and shapes whose arithmetic overflows: every step is checked, nothing traps.
    private static func checkedRange(_ info: HeaderValue.TensorInfo, name: String, dataLength: Int,
                                     path: String) throws -> Range<Int> {
        let (dtype, shape, offsets) = (info.dtype, info.shape, info.data_offsets)
        try require(dtype == "F32", "tensor '\(name)' in \(path) has dtype \(dtype); only F32 is supported")
        try require(shape.allSatisfy { $0 >= 0 }, "tensor '\(name)' in \(path) has a negative dimension")
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            try require(!overflow && product <= dataLength / 4,
                        "checkpoint \(path) is corrupt: tensor '\(name)' shape \(shape) exceeds the file")
            count = product
        }
        let (start, end) = (offsets[0], offsets[1])
        try require(start >= 0 && start <= end && end <= dataLength && end - start == 4 * count,
                    "checkpoint \(path) is corrupt: tensor '\(name)' offsets \(offsets) do not fit shape \(shape) and \(dataLength) data bytes")
        return start..<end
    }
}
