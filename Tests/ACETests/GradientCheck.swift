import XCTest
@testable import ACE

/// Finite-difference checks of explicit backward passes.
///
/// The loss is L = sum(y * R) for a fixed random R, so dL/dy = R. For every checked tensor
/// we compare the analytic directional derivative <grad, v> along a random +-1 direction v
/// with the central difference (L(x + s v) - L(x - s v)) / 2s, in Float32, where the step
/// s = h * max(rms(x), 0.05) with h = 1e-2 keeps the perturbation small relative to the
/// tensor (a whole weight matrix moved by a fixed step would leave the linear regime).
/// Bound: relative error below 1e-2 (float32 rounding of L limits the difference to about
/// 1e-3 relative for these sizes). The five largest single entries per tensor are also
/// checked, with step h, to within 2e-2 of the tensor's largest gradient.
struct GradientCase {
    var forward: () throws -> Tensor
    /// Receives dL/dy; accumulates parameter gradients and writes input gradients.
    var backward: (Tensor) -> Void
    /// (name, value, gradient) triples to check.
    var tensors: [(String, Tensor, Tensor)]
}

func randomTensor(_ shape: [Int], _ rng: inout RNG, scale: Double = 1) -> Tensor {
    let t = Tensor(shape)
    for i in 0..<t.count { t[i] = Float(rng.normal() * scale) }
    return t
}

func checkGradients(_ c: GradientCase, seed: UInt64 = 7, h: Float = 1e-2, tolerance: Double = 1e-2,
                    file: StaticString = #filePath, line: UInt = #line) throws {
    var rng = RNG(seed: seed)
    let y0 = try c.forward()
    let r = randomTensor(y0.shape, &rng)
    func loss() throws -> Double {
        let y = try c.forward()
        var s = 0.0
        for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
        return s
    }
    for (_, _, g) in c.tensors { g.zero() }
    _ = try c.forward()
    c.backward(r)
    let analytic = c.tensors.map { $0.2.array }

    for (k, (name, x, _)) in c.tensors.enumerated() {
        let v = (0..<x.count).map { _ in Float(rng.uniform() < 0.5 ? -1 : 1) }
        let directional = zip(analytic[k], v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let rms = (x.array.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(x.count)).squareRoot()
        let step = h * Float(max(rms, 0.05))
        for i in 0..<x.count { x[i] += step * v[i] }
        let plus = try loss()
        for i in 0..<x.count { x[i] -= 2 * step * v[i] }
        let minus = try loss()
        for i in 0..<x.count { x[i] += step * v[i] }
        let numeric = (plus - minus) / (2 * Double(step))
        let err = abs(numeric - directional) / max(abs(numeric), abs(directional), 1e-3)
        XCTAssertLessThan(err, tolerance, "\(name): directional analytic \(directional) vs numeric \(numeric)",
                          file: file, line: line)

        // Single entries: the five largest analytic gradients, absolute error bound scaled
        // to the tensor's largest gradient.
        let largest = analytic[k].enumerated().sorted { abs($0.element) > abs($1.element) }.prefix(5)
        let scale = Double(abs(largest.first?.element ?? 0))
        for (i, a) in largest {
            let saved = x[i]
            x[i] = saved + h; let lp = try loss()
            x[i] = saved - h; let lm = try loss()
            x[i] = saved
            let n = (lp - lm) / (2 * Double(h))
            XCTAssertLessThan(abs(n - Double(a)), 2e-2 * max(scale, 1e-2),
                              "\(name)[\(i)]: analytic \(a) vs numeric \(n)", file: file, line: line)
        }
    }
}

func parameterTriples(_ ps: [Parameter]) -> [(String, Tensor, Tensor)] {
    ps.map { ($0.name, $0.value, $0.grad) }
}
