import XCTest
import Foundation
@testable import ACE

final class FastMathTests: XCTestCase {
    func testExpRelativeError() {
        var worst = 0.0
        for i in 0...200_000 {
            let x = Float(-87 + Double(i) * 175 / 200_000)
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(fastExp(x)) - exact) / exact)
        }
        XCTAssertLessThan(worst, 1e-6)
        XCTAssertLessThan(fastExp(-1000), 1e-37)
        XCTAssertTrue(fastExp(1000).isFinite)
    }

    func testErfAbsoluteError() {
        var worst = 0.0
        for i in 0...100_000 {
            let x = Float(-6 + Double(i) * 12 / 100_000)
            worst = max(worst, abs(Double(fastErf(x)) - Foundation.erf(Double(x))))
        }
        XCTAssertLessThan(worst, 6e-7)
        XCTAssertEqual(fastErf(0), 0, accuracy: 1e-7)
    }

    func testLog1pRelativeError() {
        var worst = 0.0
        for i in 0...100_000 {
            let x = Float(Double(i) / 100_000)
            let exact = Foundation.log1p(Double(x))
            worst = max(worst, x == 0 ? abs(Double(fastLog1p(x))) : abs(Double(fastLog1p(x)) - exact) / exact)
        }
        XCTAssertLessThan(worst, 3e-7)
        // Tiny arguments keep full relative precision (log1p(x) ~ x).
        XCTAssertEqual(fastLog1p(1e-30), 1e-30, accuracy: 1e-36)
    }

    func testLaneReductionsMatchScalarOnes() {
        var rng = RNG(seed: 3)
        for n in [1, 15, 16, 17, 197, 384] {
            let x = (0..<n).map { _ in Float(rng.uniform() * 4 - 2) }
            let y = (0..<n).map { _ in Float(rng.uniform() * 4 - 2) }
            let mean = x.reduce(0, +) / Float(n)
            XCTAssertEqual(laneSum(x, n), x.reduce(0, +), accuracy: 1e-4)
            XCTAssertEqual(laneDot(x, y, n), zip(x, y).map(*).reduce(0, +), accuracy: 1e-4)
            XCTAssertEqual(laneSquaredDeviations(x, n, mean: mean),
                           x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +), accuracy: 1e-3)
            if n >= 16 {
                var lanes = SIMD16<Float>()
                for j in 0..<16 { lanes[j] = x[j] }
                XCTAssertEqual(horizontalMax(lanes), x[..<16].max()!)
                XCTAssertEqual(horizontalMax(lanewiseMax(lanes, loadSIMD16(y))), zip(x, y).prefix(16).map { max($0, $1) }.max()!)
            }
            var row = x
            softmaxRow(&row, n)
            let m = x.max()!, z = x.map { Foundation.exp(Double($0 - m)) }.reduce(0, +)
            for j in 0..<n { XCTAssertEqual(Double(row[j]), Foundation.exp(Double(x[j] - m)) / z, accuracy: 1e-6) }
        }
    }
}
