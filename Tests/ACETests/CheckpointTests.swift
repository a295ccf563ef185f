import XCTest
import Foundation
@testable import ACE

final class CheckpointTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ace-ckpt-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testRoundTripIsBitExactAndOutputsAgree() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 32), seed: 4)
        let path = dir.appendingPathComponent("enc.safetensors").path
        try model.save(to: path)
        let loaded = try VisionTransformer.load(from: path)
        XCTAssertEqual(loaded.config, model.config)
        for (p, q) in zip(model.parameters, loaded.parameters) {
            XCTAssertEqual(p.name, q.name)
            XCTAssertEqual(p.value.array, q.value.array, p.name)
        }
        var rng = RNG(seed: 1)
        let x = randomTensor([2, 1, 32, 32], &rng)
        XCTAssertEqual(try model.forward(x).array, try loaded.forward(x).array)
        // No temporary file is left beside the checkpoint.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["enc.safetensors"])
    }

    func testCorruptFilesAreRejectedWithAMessage() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 32))
        let path = dir.appendingPathComponent("enc.safetensors").path
        try model.save(to: path)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        let cases: [(String, Data)] = [
            ("empty", Data()),
            ("truncated", good.prefix(good.count - 100)),
            ("header length too big", Data([255, 255, 255, 255, 0, 0, 0, 0]) + good.dropFirst(8)),
            ("garbage header", good.prefix(8) + Data(repeating: 0x41, count: good.count - 8)),
        ]
        for (what, bytes) in cases {
            let p = dir.appendingPathComponent("\(what).safetensors").path
            try bytes.write(to: URL(fileURLWithPath: p))
            XCTAssertThrowsError(try VisionTransformer.load(from: p), what) { e in
                XCTAssertTrue(e is ACEError, what)
            }
        }
        XCTAssertThrowsError(try VisionTransformer.load(from: dir.appendingPathComponent("missing").path))

        // A header whose shape product overflows Int.
        let header = #"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(Data(count: 4))
        let p = dir.appendingPathComponent("overflow.safetensors").path
        try bytes.write(to: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try Safetensors.read(p)) { e in XCTAssertTrue("\(e)".contains("exceeds"), "\(e)") }
    }

    func testMismatchedStateIsRejected() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 32))
        var state = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, ($0.shape, $0.value.array)) })
        state["norm.weight"] = ([95], [Float](repeating: 1, count: 95))
        XCTAssertThrowsError(try model.loadState(state, source: "test")) { e in
            XCTAssertTrue("\(e)".contains("norm.weight"))
        }
        state.removeValue(forKey: "norm.weight")
        XCTAssertThrowsError(try model.loadState(state, source: "test")) { e in
            XCTAssertTrue("\(e)".contains("missing"))
        }
    }

    /// Writes a safetensors file with the given JSON header and data bytes.
    private func rawFile(_ name: String, header: String, data: Data) throws -> String {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(data)
        let p = dir.appendingPathComponent(name).path
        try bytes.write(to: URL(fileURLWithPath: p))
        return p
    }

    func testOffsetsThatWrapOrOverlapAreRejected() throws {
        // end = 2^63 - 4 + 384 - 2^64 wraps: the reader must refuse it, not trap.
        let wrap = #"{"w":{"dtype":"F32","shape":[96],"data_offsets":[9223372036854775804,-9223372036854775428]}}"#
        XCTAssertThrowsError(try Safetensors.read(try rawFile("wrap.safetensors", header: wrap, data: Data(count: 384)))) {
            XCTAssertTrue("\($0)".contains("offsets"), "\($0)")
        }
        let alias = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        XCTAssertThrowsError(try Safetensors.read(try rawFile("alias.safetensors", header: alias, data: Data(count: 16)))) {
            XCTAssertTrue("\($0)".contains("overlap"), "\($0)")
        }
        // Adjacent tensors and files without a checksum (other tools' files) are fine.
        let ok = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        XCTAssertEqual(try Safetensors.read(try rawFile("ok.safetensors", header: ok, data: Data(count: 16))).entries.count, 2)
    }

    func testAFlippedDataBitFailsTheChecksum() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 32))
        let path = dir.appendingPathComponent("enc.safetensors").path
        try model.save(to: path)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 1000] ^= 0x04   // a mantissa bit: the value stays finite
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try VisionTransformer.load(from: path)) { XCTAssertTrue("\($0)".contains("CRC-32"), "\($0)") }
    }

    func testStaleTemporariesOfDeadWritersAreRemoved() throws {
        let path = dir.appendingPathComponent("enc.safetensors").path
        // PIDs above the kernel's maximum (2^22) never run; our parent process does.
        let dead = dir.appendingPathComponent(".enc.safetensors.tmp-4194305-1").path
        let alive = dir.appendingPathComponent(".enc.safetensors.tmp-\(getppid())-1").path
        for p in [dead, alive] { try Data(count: 10).write(to: URL(fileURLWithPath: p)) }
        try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 32)).save(to: path)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        XCTAssertEqual(files, ["enc.safetensors", ".enc.safetensors.tmp-\(getppid())-1"])
    }

    func testAbsurdConfigsAreRefusedBeforeAllocating() throws {
        var config = try ViTConfig(preset: "vit_nano")
        config.embedDim = 96_000_000
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("embed_dim"), "\($0)") }
        config = try ViTConfig(preset: "vit_nano")
        config.depth = 10_000_000
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("depth"), "\($0)") }
        config = try ViTConfig(preset: "vit_base")
        config.depth = 1000
        config.embedDim = 8192
        config.numHeads = 64
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("memory"), "\($0)") }
    }
}
