import XCTest
@testable import ACE

/// AdamW's lanes against the update written out one value at a time, in PyTorch's order of
/// operations: bit for bit, on sizes with a tail, with several parallel chunks whose
/// boundaries fall inside a group of 16, with and without weight decay, over several steps.
final class AdamWTests: XCTestCase {
    override func setUp() { setThreads(2) }

    func testLanesMatchTheScalarUpdateBitForBit() {
        var rng = RNG(seed: 31)
        let sizes = [1, 15, 16, 37, 40_003]
        let params = sizes.enumerated().map { Parameter("p\($0.offset)", [$0.element], decays: $0.offset % 2 == 0) }
        for p in params { for j in 0..<p.count { p.value[j] = Float(rng.normal()) } }
        let optimizer = AdamW(params)
        var w = params.map { Array(UnsafeBufferPointer(start: $0.value.data, count: $0.count)) }
        var m = params.map { [Float](repeating: 0, count: $0.count) }, v = m
        let (b1, b2, eps): (Float, Float, Float) = (0.9, 0.999, 1e-8)
        for step in 1...4 {
            let lr: Float = 1e-3 * Float(step), wd: Float = 0.04
            for p in params { for j in 0..<p.count { p.grad[j] = Float(rng.normal()) } }
            for (i, p) in params.enumerated() {
                let c1 = 1 - pow(b1, Float(step)), c2 = 1 - pow(b2, Float(step))
                let decay = p.decays ? 1 - lr * wd : 1
                for j in 0..<p.count {
                    let g = p.grad[j]
                    m[i][j] = b1 * m[i][j] + (1 - b1) * g
                    v[i][j] = b2 * v[i][j] + (1 - b2) * g * g
                    w[i][j] = w[i][j] * decay - lr * (m[i][j] / c1) / ((v[i][j] / c2).squareRoot() + eps)
                }
            }
            optimizer.step(lr: lr, weightDecay: wd)
            for (i, p) in params.enumerated() {
                XCTAssertEqual(Array(UnsafeBufferPointer(start: p.value.data, count: p.count)), w[i], "\(p.name) step \(step)")
                XCTAssertEqual(Array(UnsafeBufferPointer(start: optimizer.v[i].data, count: p.count)), v[i])
            }
        }
    }
}
