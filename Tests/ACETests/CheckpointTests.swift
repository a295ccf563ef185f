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
}
