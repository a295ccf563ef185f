import XCTest
import Foundation
@testable import ACE

/// Finite-difference checks of the Swin layers (see GradientCheck.swift) and the geometry of
/// shifted windows against a direct construction.
final class SwinGradientTests: XCTestCase {
    override func setUp() { setThreads(2) }

    /// Partition with shift equals rolling the grid by -shift and cutting windows, written out
    /// directly; reverse undoes it.
    func testWindowPartitionIsRollThenCut() {
        var rng = RNG(seed: 1)
        let side = 6, window = 3, shift = 1, c = 2
        let part = WindowPartition(side: side, window: window, shift: shift)
        let x = randomTensor([2, side * side, c], &rng), w = Tensor([0]), back = Tensor([0])
        part.partition(x, into: w)
        XCTAssertEqual(w.shape, [2 * 4, 9, c])
        for b in 0..<2 {
            for wy in 0..<2 {
                for wx in 0..<2 {
                    for ty in 0..<3 {
                        for tx in 0..<3 {
                            let y = (wy * 3 + ty + shift) % side, xx = (wx * 3 + tx + shift) % side
                            for ch in 0..<c {
                                XCTAssertEqual(w[(((b * 4 + wy * 2 + wx) * 9) + ty * 3 + tx) * c + ch],
                                               x[((b * side + y) * side + xx) * c + ch])
                            }
                        }
                    }
                }
            }
        }
        part.reverse(w, into: back)
        XCTAssertEqual(back.shape, x.shape)
        XCTAssertEqual(back.array, x.array)
    }

    /// The shifted mask: the top-left window of the rolled grid is one region (all zeros); the
    /// bottom-right window mixes four regions; the mask is symmetric with a zero diagonal.
    func testShiftedMaskRegions() throws {
        let part = WindowPartition(side: 8, window: 4, shift: 2)
        let mask = try XCTUnwrap(part.attentionMask())
        XCTAssertEqual(mask.shape, [4, 16, 16])
        let n = 16
        XCTAssertTrue((0..<(n * n)).allSatisfy { mask[$0] == 0 })
        var zeros = 0
        for i in 0..<n {
            for j in 0..<n {
                let v = mask[(3 * n + i) * n + j]
                XCTAssertEqual(v, mask[(3 * n + j) * n + i])
                if i == j { XCTAssertEqual(v, 0) }
                if v == 0 { zeros += 1 }
            }
        }
        // Four 2x2 regions of 4 tokens each: 4 * 4 * 4 pairs in the same region.
        XCTAssertEqual(zeros, 64)
        XCTAssertNil(WindowPartition(side: 8, window: 4, shift: 0).attentionMask())
    }

    func testRelativePositionIndex() {
        let w = 3, index = relativePositionIndex(window: w)
        // Same token: zero offset, the centre row of the table.
        for i in 0..<9 { XCTAssertEqual(index[i * 9 + i], (w - 1) * (2 * w - 1) + (w - 1)) }
        // Token (2, 2) against token (0, 0): offsets (+2, +2), the last row.
        XCTAssertEqual(index[8 * 9 + 0], (2 * w - 1) * (2 * w - 1) - 1)
        XCTAssertEqual(index[0 * 9 + 8], 0)
        XCTAssertEqual(Set(index).count, (2 * w - 1) * (2 * w - 1))
    }

    private func windowAttentionCase(shift: Int) throws {
        var rng = RNG(seed: 4)
        let part = WindowPartition(side: 4, window: 2, shift: shift)
        let attn = WindowAttention("attn", 8, heads: 2, window: 2)
        attn.initialize(&rng, std: 0.4)
        let table = attn.relativePositionBiasTable.value
        for i in 0..<table.count { table[i] = Float(rng.normal()) }
        for i in 0..<24 { attn.qkv.bias.value[i] = Float(0.1 * rng.normal()) }
        let mask = part.attentionMask()
        XCTAssertEqual(mask == nil, shift == 0)
        // Two images of 4 windows each: the mask of window w applies to windows w and 4 + w.
        let x = randomTensor([8, 4, 8], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { attn.forward(x, mask: mask, into: y); return y },
            backward: { attn.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(attn.parameters)))
    }

    func testWindowAttention() throws { try windowAttentionCase(shift: 0) }
    func testWindowAttentionShiftedMask() throws { try windowAttentionCase(shift: 1) }

    /// A shifted block in training mode with drop path (same seed each forward: same masks).
    func testShiftedSwinBlockWithDropPath() throws {
        var rng = RNG(seed: 6)
        let block = SwinBlock("layers.0.blocks.1", dim: 8, heads: 2, side: 4, window: 2, shift: 1, mlpRatio: 4,
                              dropPath: 0.5)
        block.attn.initialize(&rng, std: 0.3)
        for l in [block.mlp.fc1, block.mlp.fc2] { l.initialize(&rng, std: 0.3) }
        let table = block.attn.relativePositionBiasTable.value
        for i in 0..<table.count { table[i] = Float(rng.normal()) }
        XCTAssertNotNil(block.mask)
        let x = randomTensor([4, 16, 8], &rng), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { var r = RNG(seed: 99); return block.forward(x, training: true, rng: &r) },
            backward: { block.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(block.parameters)))
    }

    func testPatchMerging() throws {
        var rng = RNG(seed: 8)
        let merge = PatchMerging("layers.1.downsample", dim: 3, side: 4)
        merge.reduction.initialize(&rng, std: 0.4)
        for i in 0..<12 { merge.norm.weight.value[i] = Float(1 + 0.3 * rng.normal()); merge.norm.bias.value[i] = Float(rng.normal()) }
        XCTAssertEqual(merge.parameters.map(\.name), ["layers.1.downsample.norm.weight", "layers.1.downsample.norm.bias",
                                                      "layers.1.downsample.reduction.weight"])
        let x = randomTensor([2, 16, 3], &rng), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { merge.forward(x) },
            backward: { merge.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(merge.parameters)))
    }

    func testMeanPool() throws {
        var rng = RNG(seed: 9)
        let x = randomTensor([3, 5, 4], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { meanPool(x, into: y); return y },
            backward: { meanPoolBackward($0, tokens: 5, into: dx) },
            tensors: [("x", x, dx)]))
    }

    /// The swin_nano preset (four stages, every parameter kind) at a 64 px input with 2x2
    /// windows, so that stages 0-2 have shifted blocks with masks and stage 3 a single window;
    /// training mode with drop path 0.1, the loss on the mean-pooled embedding: gradients of the
    /// image and of every parameter tensor.
    func testSwinNanoEncoder() throws {
        let config = try SwinConfig(preset: "swin_nano", inChans: 1, imgSize: 64, windowSize: 2, dropPath: 0.1)
        XCTAssertEqual((0..<4).map(config.shift), [1, 1, 1, 0])
        let model = try SwinTransformer(config, seed: 3)
        // Every parameter random and larger than timm's init (weights std 0.02, zero biases):
        // then each one moves the output well above float32 rounding. At timm's init the patch
        // embedding's output is tiny and its LayerNorm amplifies it (a badly conditioned check),
        // and a zero bias gets a finite-difference step too small for float32.
        var wrng = RNG(seed: 11)
        for p in model.parameters {
            let v = p.value
            if p.name.hasPrefix("patch_embed.proj.weight") {
                for i in 0..<v.count { v[i] = Float(0.3 * wrng.normal()) }
            } else if p.name.hasSuffix("relative_position_bias_table") {
                for i in 0..<v.count { v[i] = Float(0.5 * wrng.normal()) }
            } else if p.name.hasSuffix("norm.weight") || p.name.hasSuffix("norm1.weight") || p.name.hasSuffix("norm2.weight") {
                for i in 0..<v.count { v[i] = Float(1 + 0.1 * wrng.normal()) }
            } else {
                for i in 0..<v.count { v[i] = Float(0.1 * wrng.normal()) }
            }
        }
        var rng = RNG(seed: 10)
        let x = randomTensor([1, 1, 64, 64], &rng), dx = Tensor([0]), pooled = Tensor([0]), dTokens = Tensor([0])
        XCTAssertEqual(model.parameters.count, 4 + 3 * 3 + 8 * 13 + 2)
        // Through 12 blocks, float32 finite differences carry about 1% of noise (the exact
        // rounding of exp/erf moves it); each layer is checked at 1% above, the wiring here at 2%.
        try checkGradients(GradientCase(
            forward: { var r = RNG(seed: 5); meanPool(try model.forward(x, training: true, rng: &r), into: pooled); return pooled },
            backward: { meanPoolBackward($0, tokens: 4, into: dTokens); model.backward(dTokens, inputGrad: dx) },
            tensors: [("image", x, dx)] + parameterTriples(model.parameters)), tolerance: 2e-2)
    }

    /// The inference forward (shared buffers, blocks in place) computes what the training
    /// forward computes, and a training forward after it still gets correct gradients.
    func testInferMatchesForward() throws {
        let model = try SwinTransformer(SwinConfig(preset: "swin_nano", inChans: 1, imgSize: 64, windowSize: 2), seed: 2)
        var rng = RNG(seed: 3)
        let x = randomTensor([2, 1, 64, 64], &rng)
        let a = try model.forward(x).array
        let b = try model.infer(x).array
        XCTAssertEqual(a.count, b.count)
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-5)
    }

    func testSaveLoadRoundTrip() throws {
        let config = try SwinConfig(preset: "swin_nano", inChans: 3, imgSize: 64, windowSize: 2)
        let model = try SwinTransformer(config, seed: 1)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swin-\(UInt32.random(in: 0...UInt32.max)).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try model.save(to: path)
        let loaded = try SwinTransformer.load(from: path)
        XCTAssertEqual(loaded.config, config)
        var rng = RNG(seed: 2)
        let x = randomTensor([1, 3, 64, 64], &rng)
        let a = try model.forward(x).array, b = try loaded.forward(x).array
        XCTAssertEqual(a, b)
        XCTAssertThrowsError(try SwinTransformer(SwinConfig(preset: "swin_tiny", imgSize: 256, windowSize: 7)))
        XCTAssertThrowsError(try model.forward(randomTensor([1, 3, 32, 32], &rng)))
    }
}
