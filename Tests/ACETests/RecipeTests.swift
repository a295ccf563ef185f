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
            let index = t.optimizer.parameters.firstIndex { $0 === t.student.position.pos }!
            XCTAssertEqual(t.optimizer.decays[index], decayTokens)
            XCTAssertFalse(t.optimizer.decays[t.optimizer.parameters.firstIndex { $0.name.hasSuffix("norm.bias") }!])
        }
    }
}
