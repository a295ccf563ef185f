import XCTest
@testable import ACE

/// The recipe options that reproduce DINO's and the ACE authors' code exactly.
final class RecipeTests: XCTestCase {
    func testWarmupIsDINOsLinspace() {
        // np.linspace(0, 1, 5) = [0, .25, .5, .75, 1], then the cosine from base.
        let s = CosineSchedule(base: 1, final: 0, totalSteps: 10, warmupSteps: 5)
        XCTAssertEqual((0..<5).map { s($0) }, [0, 0.25, 0.5, 0.75, 1])
        XCTAssertEqual(s(5), 1, accuracy: 1e-12)
        XCTAssertEqual(CosineSchedule(base: 1, final: 0, totalSteps: 10, warmupSteps: 1)(0), 0)
    }

    func testDecompositionWindowIsSeparate() {
        var g = GridConfig()
        g.gridCells = 16; g.imageSize = 256; g.fineCells = 6; g.inputSize = 96; g.minOverlap = 2
        g.decompWindow = 5
        let crop = GridCrop(config: g, c1: (4, 4), c2: (2, 2))
        let n = g.fineCells, nc = g.coarseCells
        // C1 token (row 2, col 2) is cell (6, 6): decomposed sub-tokens up to 2 cells away
        // carry a target with window 5, none with window 3.
        let row = Array(crop.decompositionTarget[(2 * n + 2) * nc * nc ..< (2 * n + 3) * nc * nc])
        XCTAssertEqual(row[4 * nc + 4], 1)                                   // same cell
        XCTAssertEqual(row[4 * nc + 6], expf(-2), accuracy: 1e-6)           // 2 cells right, sigma 1
        XCTAssertEqual(row[4 * nc + 7], 0)                                   // 3 cells: outside
        // Composition keeps the 3 x 3 window: nothing two composed tokens away.
        let h = n / 2, comp = crop.compositionTarget
        let c2Row = (1 * n + 1)   // C2 token at cells (4, 4): inside C1
        XCTAssertEqual(comp[c2Row * h * h + 0], 1)
        XCTAssertEqual(comp[c2Row * h * h + 2], 0)
    }

    /// DINO sets the frozen last layer's gradient to None: AdamW skips it entirely, so on
    /// unfreezing its first update is a fresh Adam step (bias correction 1), not a late one.
    func testFrozenParameterGetsNoUpdateAtAllThenAFreshStep() {
        let p = Parameter("w", [4], decays: true), q = Parameter("w", [4], decays: true)
        for i in 0..<4 { p.value[i] = 1; q.value[i] = 1 }
        let frozenThenFree = AdamW([p]), fresh = AdamW([q])
        for i in 0..<4 { p.grad[i] = 0.5 }
        for _ in 0..<3 { frozenThenFree.step(lr: 0.1, weightDecay: 0.5, frozen: [p]) }
        XCTAssertEqual(p.value.array, [1, 1, 1, 1], "no decay, no Adam step while frozen")
        for i in 0..<4 { p.grad[i] = 0.5; q.grad[i] = 0.5 }
        frozenThenFree.step(lr: 0.1, weightDecay: 0.5)
        fresh.step(lr: 0.1, weightDecay: 0.5)
        XCTAssertEqual(p.value.array, q.value.array)
        XCTAssertEqual(frozenThenFree.t, 4)
        XCTAssertEqual(frozenThenFree.counts, [1])
    }

    func testTokensDecayOnlyWhenAsked() throws {
        var config = PretrainConfig()
        config.encoder = "vit_nano"; config.headHidden = 16; config.headBottleneck = 8; config.headPrototypes = 16
        for decayTokens in [false, true] {
            config.weightDecayTokens = decayTokens
            let t = try Trainer(config, seed: 0)
            let index = t.optimizer.parameters.firstIndex { $0 === (t.student as! VisionTransformer).position.pos }!
            XCTAssertEqual(t.optimizer.decays[index], decayTokens)
            XCTAssertFalse(t.optimizer.decays[t.optimizer.parameters.firstIndex { $0.name.hasSuffix("norm.bias") }!])
        }
    }
}

extension RecipeTests {
    /// The authors' local heads: fc1 without bias -> LayerNorm -> ReLU -> fc2, hidden C.
    func testAuthorsLocalHeadGradients() throws {
        var rng = RNG(seed: 31)
        let composer = Composer(dim: 3, hidden: 5, kind: .authors)
        composer.mlp.fc1.initialize(&rng, std: 0.4); composer.mlp.fc2.initialize(&rng, std: 0.4)
        XCTAssertEqual(composer.parameters.map(\.name), ["composer.fc1.weight", "composer.norm.weight",
                                                          "composer.norm.bias", "composer.fc2.weight", "composer.fc2.bias"])
        let n = 4, tokens = randomTensor([2, 1 + n * n, 3], &rng), dTokens = Tensor([2, 1 + n * n, 3])
        try checkGradients(GradientCase(
            forward: { composer.forward(tokens.data, batch: 2, side: n) },
            backward: { dTokens.zero(); composer.backward($0, side: n, into: dTokens.data) },
            tensors: [("tokens", tokens, dTokens)] + parameterTriples(composer.parameters)))
    }

    /// CLAHE with one region and no clipping is plain histogram equalization: each pixel maps
    /// to the fraction of pixels at or below its level.
    func testCLAHEWithOneRegionIsHistogramEqualization() {
        var rng = RNG(seed: 3)
        let (w, h) = (20, 15)
        var image = (0..<(w * h)).map { _ in Float(rng.uniform()) * 0.3 + 0.2 }
        let levels = image.map { Int(min(max($0, 0), 1) * 255 + 0.5) }
        image.withUnsafeMutableBufferPointer { clahe($0.baseAddress!, width: w, height: h, tiles: 1, clip: 256) }
        for (v, l) in zip(image, levels) {
            XCTAssertEqual(v, Float(levels.filter { $0 <= l }.count) / Float(w * h), accuracy: 1e-6)
        }
    }

    func testCLAHERaisesLocalContrastAndStaysInRange() {
        let (w, h) = (64, 64)
        // Two halves of low contrast at different brightness.
        var image = (0..<(w * h)).map { i -> Float in (i % w < 32 ? 0.2 : 0.7) + Float(i % 7) * 0.005 }
        func spread(_ xs: ArraySlice<Float>) -> Float { xs.max()! - xs.min()! }
        let before = spread(image[0..<32])
        image.withUnsafeMutableBufferPointer { clahe($0.baseAddress!, width: w, height: h, tiles: 4, clip: 4) }
        XCTAssertGreaterThan(spread(image[0..<32]), 2 * before)
        XCTAssertTrue(image.allSatisfy { $0 >= 0 && $0 <= 1 })
    }
}

/// Settings are spelled once: JSON names come from the property names, missing keys keep
/// their defaults, unknown keys (also nested) are errors naming them, enums reject bad values.
final class SettingsTests: XCTestCase {
    func testPretrainConfigJSON() throws {
        var c = PretrainConfig()
        c.minLr = 2e-6; c.objective = .dino; c.clipMode = .global; c.grid.decompWindow = 5; c.augment.claheP = 0.3
        let text = c.json
        for key in ["\"min_lr\"", "\"clip_mode\":\"global\"", "\"objective\":\"dino\"", "\"decomp_window\":5",
                    "\"pre_crop_scale_min\"", "\"clahe_p\""] {
            XCTAssertTrue(text.contains(key), "\(key) not in \(text)")
        }
        XCTAssertEqual(try PretrainConfig(json: text, what: "pretraining"), c)
        let partial = try PretrainConfig(json: #"{"lr": 0.01, "grid": {"window": 5}}"#, what: "pretraining")
        var expected = PretrainConfig()
        expected.lr = 0.01; expected.grid.window = 5
        XCTAssertEqual(partial, expected)
        for (json, message) in [(#"{"learning_rate": 1}"#, "unknown setting 'learning_rate'"),
                                (#"{"grid": {"windw": 5}}"#, "unknown setting 'grid.windw'"),
                                (#"{"grid": 5}"#, "'grid' must be an object"),
                                (#"{"objective": "mae"}"#, "objective"),
                                (#"{"batch_size": 1.5}"#, "batch_size"),
                                ("[1]", "expected an object")] {
            XCTAssertThrowsError(try PretrainConfig(json: json, what: "pretraining"), json) { error in
                XCTAssertTrue("\(error)".contains(message), "\(json): \(error)")
            }
        }
    }

    func testEveryFloatSettingIsCheckedForFiniteness() throws {
        let names = Set(PretrainConfig().floatSettings.map(\.0))
        for name in ["lr", "min_lr", "grid.sigma", "augment.clahe_clip", "pre_crop_scale_min", "logit_scale"] {
            XCTAssertTrue(names.contains(name), name)
        }
        var c = PretrainConfig()
        c.augment.claheClip = .nan
        XCTAssertThrowsError(try c.validate())
    }
}
