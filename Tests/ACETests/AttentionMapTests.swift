import XCTest
@testable import ACE

/// `classAttention`: the class token's row of the last block's softmax, after either forward.
final class AttentionMapTests: XCTestCase {
    func testClassAttentionIsTheLastBlocksClassRowAfterEitherForward() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 64), seed: 3)
        var rng = RNG(seed: 5)
        let x = randomTensor([2, 1, 64, 48], &rng), other = randomTensor([2, 1, 64, 48], &rng)
        for p in OneDNN.shared == nil ? [Precision.fp32] : [.fp32, .bf16] {
            model.precision = p
            try model.forward(x)
            let kept = model.classAttention()
            XCTAssertEqual(kept.shape, [2, 3, 1 + 4 * 3])
            // The row is the last block's own probabilities (B, H, T, T), row 0 of each head.
            let probs = model.blocks[model.blocks.count - 1].attn.probs
            for bh in 0..<6 {
                for j in 0..<13 { XCTAssertEqual(kept.data[bh * 13 + j], probs.data[bh * 13 * 13 + j]) }
                let sum = (0..<13).reduce(Float(0)) { $0 + kept.data[bh * 13 + $1] }
                XCTAssertEqual(sum, 1, accuracy: 1e-5)
            }
            try model.infer(other)                 // a different batch in between
            try model.infer(x)
            XCTAssertEqual(model.classAttention().array, kept.array, "\(p)")
        }
    }
}
