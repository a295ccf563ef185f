import XCTest
@testable import ACE

/// The BLAS wrapper against a naive triple loop, for every transpose combination and odd
/// sizes, so a miscompiled or mis-dispatched OpenBLAS on this CPU is caught here.
final class GEMMTests: XCTestCase {
    func testAgainstNaiveLoop() {
        var rng = RNG(seed: 11)
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (33, 17, 65), (129, 3, 257), (64, 64, 64)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let a = randomTensor(transA ? [k, m] : [m, k], &rng)
                    let b = randomTensor(transB ? [n, k] : [k, n], &rng)
                    let c = randomTensor([m, n], &rng)
                    let c0 = c.array
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                         a: a.data, b: b.data, beta: 2, c: c.data)
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = 0.0
                            for p in 0..<k {
                                let av = transA ? a[p * m + i] : a[i * k + p]
                                let bv = transB ? b[j * k + p] : b[p * n + j]
                                s += Double(av) * Double(bv)
                            }
                            let expected = 0.5 * s + 2 * Double(c0[i * n + j])
                            XCTAssertEqual(Double(c[i * n + j]), expected, accuracy: 1e-4 * (1 + abs(expected)),
                                           "m\(m) n\(n) k\(k) tA \(transA) tB \(transB) at (\(i), \(j))")
                        }
                    }
                }
            }
        }
    }
}

final class PositionResampleTests: XCTestCase {
    func testSameSizeIsIdentityAndRowsSumToOne() {
        let same = PositionEmbedding.bicubicMatrix(5, 5)
        for i in 0..<5 { for j in 0..<5 { XCTAssertEqual(same[i * 5 + j], i == j ? 1 : 0, accuracy: 1e-12) } }
        for (nIn, nOut) in [(3, 7), (14, 9), (2, 4)] {
            let m = PositionEmbedding.bicubicMatrix(nIn, nOut)
            for o in 0..<nOut {
                XCTAssertEqual(m[(o * nIn)..<((o + 1) * nIn)].reduce(0, +), 1, accuracy: 1e-12)
            }
        }
    }

    /// 2 -> 4: the first output samples source coordinate -0.25, weights of cubic convolution
    /// with A = -0.75 at distances 1.75, 0.75, 0.25, 1.25 from taps -2..1, clamped to 0..1.
    func testUpsampleWeightsFromTheFormula() {
        let a = -0.75
        func w(_ x: Double) -> Double {
            let t = abs(x)
            return t <= 1 ? (a + 2) * t * t * t - (a + 3) * t * t + 1 : a * t * t * t - 5 * a * t * t + 8 * a * t - 4 * a
        }
        let m = PositionEmbedding.bicubicMatrix(2, 4)
        XCTAssertEqual(m[0], w(1.75) + w(0.75) + w(0.25), accuracy: 1e-12)
        XCTAssertEqual(m[1], w(1.25), accuracy: 1e-12)
    }
}
