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
}
