import XCTest
@testable import ACE

final class LayerGradientTests: XCTestCase {
    override func setUp() { setThreads(2) }

    func testLinear() throws {
        var rng = RNG(seed: 1)
        let layer = Linear("fc", 5, 7)
        layer.initialize(&rng, std: 0.5)
        for i in 0..<7 { layer.bias.value[i] = Float(rng.normal()) }
        let x = randomTensor([2, 3, 5], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { layer.forward(x, into: y); return y },
            backward: { layer.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(layer.parameters)))
    }

    func testLayerNorm() throws {
        var rng = RNG(seed: 2)
        let norm = LayerNorm("norm", 8)
        for i in 0..<8 { norm.weight.value[i] = Float(1 + 0.3 * rng.normal()); norm.bias.value[i] = Float(rng.normal()) }
        let x = randomTensor([3, 4, 8], &rng, scale: 2), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { norm.forward(x, into: y); return y },
            backward: { norm.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(norm.parameters)))
    }

    func testGELU() throws {
        var rng = RNG(seed: 3)
        let act = GELU()
        let x = randomTensor([4, 50], &rng, scale: 2), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { act.forward(x, into: y); return y },
            backward: { act.backward($0, into: dx) },
            tensors: [("x", x, dx)]))
    }

    func testAttention() throws {
        var rng = RNG(seed: 4)
        let attn = Attention("attn", 12, heads: 3)
        attn.qkv.initialize(&rng, std: 0.4)
        attn.proj.initialize(&rng, std: 0.4)
        for i in 0..<36 { attn.qkv.bias.value[i] = Float(0.1 * rng.normal()) }
        let x = randomTensor([3, 5, 12], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { attn.forward(x, into: y); return y },
            backward: { attn.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(attn.parameters)))
    }

    func testMLP() throws {
        var rng = RNG(seed: 5)
        let mlp = MLP("mlp", 6, 24)
        mlp.fc1.initialize(&rng, std: 0.4)
        mlp.fc2.initialize(&rng, std: 0.4)
        let x = randomTensor([2, 3, 6], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { mlp.forward(x, into: y); return y },
            backward: { mlp.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(mlp.parameters)))
    }

    /// A block in training mode with drop path: the same seed each forward gives the same
    /// per-sample masks, so the loss is a smooth function of the inputs.
    func testBlockWithDropPath() throws {
        var rng = RNG(seed: 6)
        let block = Block("blocks.0", dim: 12, heads: 2, mlpRatio: 4, dropPath: 0.5)
        for l in [block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2] { l.initialize(&rng, std: 0.3) }
        let x = randomTensor([4, 5, 12], &rng), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { var r = RNG(seed: 99); return block.forward(x, training: true, rng: &r) },
            backward: { block.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(block.parameters)))
    }

    func testPatchEmbed() throws {
        var rng = RNG(seed: 8)
        let pe = PatchEmbed("patch_embed", inChans: 3, dim: 5, patch: 4)
        pe.proj.initialize(&rng, std: 0.3)
        let x = randomTensor([2, 3, 8, 12], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { pe.forward(x, into: y); return y },
            backward: { pe.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(pe.parameters)))
    }

    /// Position embedding resampled from a 3x3 grid to 2x5 tokens.
    func testPositionEmbeddingResampled() throws {
        var rng = RNG(seed: 9)
        let pos = PositionEmbedding(grid: 3, dim: 4)
        pos.initialize(&rng)
        for i in 0..<pos.pos.count { pos.pos.value[i] = Float(rng.normal()) }
        let x = randomTensor([2, 10, 4], &rng), y = Tensor([0]), dx = Tensor([0])
        try checkGradients(GradientCase(
            forward: { pos.forward(x, h: 2, w: 5, into: y); return y },
            backward: { pos.backward($0, into: dx) },
            tensors: [("x", x, dx)] + parameterTriples(pos.parameters)))
    }

    /// The whole vit_nano encoder (4 blocks, C 96, drop path 0.1 in training mode) at 32x48:
    /// gradients of the input image and of every parameter tensor.
    func testVitNanoEncoder() throws {
        var config = try ViTConfig(preset: "vit_nano", inChans: 1, imgSize: 32, dropPath: 0.1)
        config.imgSize = 32
        let model = try VisionTransformer(config, seed: 3)
        var rng = RNG(seed: 10)
        let x = randomTensor([3, 1, 32, 48], &rng), dx = Tensor([0])
        XCTAssertEqual(model.parameters.count, 4 + 4 * 12 + 2)
        try checkGradients(GradientCase(
            forward: { var r = RNG(seed: 5); return try model.forward(x, training: true, rng: &r) },
            backward: { model.backward($0, inputGrad: dx) },
            tensors: [("image", x, dx)] + parameterTriples(model.parameters)))
    }
}
