import XCTest
@testable import ACE

/// The local losses can be learned: on synthetic tokens where each grid cell has a random
/// feature, a C1 token is its cell's feature and a C2 token the mean of its 2 x 2 cells, a
/// composer trained alone on the composition loss must learn to match (accuracy far above
/// the 1/49 chance; the mean-of-four composer scores 1).
final class LocalLearningTests: XCTestCase {
    func testComposerLearnsToMatchTeacherTokens() throws {
        setThreads(2)
        var g = GridConfig()
        g.minOverlap = 4
        let c = 16, n = g.fineCells, cells = g.gridCells
        var rng = RNG(seed: 3)
        let composer = Composer(dim: c, hidden: 64)
        composer.mlp.fc1.initialize(&rng); composer.mlp.fc2.initialize(&rng)
        let optimizer = AdamW(composer.parameters)
        let loss = LocalMatchLoss(alpha: 0.9, scale: 1 / 0.07)
        let batch = 4
        let student = Tensor([batch, 1 + n * n, c]), teacher = Tensor([batch, 1 + n * n, c])
        let dz = Tensor([0]), dTokens = Tensor([batch, 1 + n * n, c])
        var accuracy: [Double] = []
        for _ in 0..<300 {
            var crops: [GridCrop] = []
            for b in 0..<batch {
                let feature = (0..<(cells * cells * c)).map { _ in Float(rng.normal()) }
                let crop = GridCrop.sample(g, rng: &rng)
                crops.append(crop)
                for t in 0..<(n * n) {
                    let (r, col) = (t / n, t % n)
                    let fine = ((crop.c1.y + r) * cells + crop.c1.x + col) * c
                    for k in 0..<c { student[(b * (1 + n * n) + 1 + t) * c + k] = feature[fine + k] }
                    for k in 0..<c {
                        var s: Float = 0
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            s += feature[((crop.c2.y + 2 * r + dy) * cells + crop.c2.x + 2 * col + dx) * c + k]
                        }
                        teacher[(b * (1 + n * n) + 1 + t) * c + k] = s / 4
                    }
                }
            }
            let z = composer.forward(student.data, batch: batch, side: n)
            let r = loss(teacher: teacher.data, tokens: n * n, z: z, targets: crops.map(\.compositionTarget), weight: 1, dz: dz)
            dTokens.zero()
            composer.backward(dz, side: n, into: dTokens.data)
            optimizer.step(lr: 1e-3, weightDecay: 0)
            for p in composer.parameters { p.grad.zero() }
            accuracy.append(r.accuracy)
        }
        let start = accuracy.prefix(10).reduce(0, +) / 10, end = accuracy.suffix(20).reduce(0, +) / 20
        XCTAssertLessThan(start, 0.2)
        XCTAssertGreaterThan(end, 0.4, "accuracy \(start) -> \(end)")
    }
}
