import XCTest
@testable import ACE

/// bf16 products: exact against a double-precision product of the bf16-rounded operands (the
/// only rounding bf16 mode may add), and close to fp32 for layers and a whole encoder.
final class BF16Tests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(OneDNN.shared != nil, "oneDNN has no CPU engine here")
    }

    func testRoundingIsToNearestEven() {
        XCTAssertEqual(bf16Value(bf16Bits(1)), 1)
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        XCTAssertEqual(bf16Value(bf16Bits(1 + 1 / 256)), 1)
        XCTAssertEqual(bf16Value(bf16Bits(1 + 3 / 256)), 1 + 4 / 256)
        XCTAssertEqual(bf16Value(bf16Bits(-2.5e-3)), -2.5e-3, accuracy: 2.5e-3 / 128)
    }

    func testProductsMatchRoundedOperandsInEveryLayout() {
        var rng = RNG(seed: 5)
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (33, 17, 65), (197, 64, 192)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1)] {
                        let ldc = n + 3   // a C row stride wider than the product
                        let a = randomTensor(transA ? [k, m] : [m, k], &rng)
                        let b = randomTensor(transB ? [n, k] : [k, n], &rng)
                        let c = randomTensor([m, ldc], &rng)
                        let c0 = c.array
                        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.data,
                             b: b.data, beta: beta, c: c.data, ldc: ldc, precision: .bf16)
                        var worst = 0.0
                        for i in 0..<m {
                            for j in 0..<ldc {
                                guard j < n else {
                                    XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j], "padding written"); continue
                                }
                                var s = 0.0, scale = 0.0
                                for p in 0..<k {
                                    let av = bf16Value(bf16Bits(transA ? a[p * m + i] : a[i * k + p]))
                                    let bv = bf16Value(bf16Bits(transB ? b[j * k + p] : b[p * n + j]))
                                    s += Double(av) * Double(bv)
                                    scale += abs(Double(av) * Double(bv))
                                }
                                let expected = Double(alpha) * s + Double(beta) * Double(c0[i * ldc + j])
                                worst = max(worst, abs(Double(c[i * ldc + j]) - expected) / (1 + scale))
                            }
                        }
                        // fp32 accumulation of exactly representable products: float rounding only.
                        XCTAssertLessThan(worst, 1e-5, "m\(m) n\(n) k\(k) tA \(transA) tB \(transB) beta \(beta)")
                    }
                }
            }
        }
    }

    func testEncoderForwardAndGradientsStayCloseToFP32() throws {
        let config = try ViTConfig(preset: "vit_nano", imgSize: 64)
        let model = try VisionTransformer(config, seed: 3)
        var rng = RNG(seed: 9)
        let x = randomTensor([2, 1, 64, 64], &rng)
        let dy = randomTensor([2, 17, 96], &rng)
        func run(_ p: Precision) throws -> (y: [Float], grads: [[Float]]) {
            model.precision = p
            model.zeroGrad()
            var r = RNG(seed: 1)
            let y = try model.forward(x, training: true, rng: &r).array
            model.backward(dy)
            return (y, model.parameters.map { $0.grad.array })
        }
        let full = try run(.fp32), half = try run(.bf16)
        func relative(_ a: [Float], _ b: [Float]) -> Double {
            var d = 0.0, n = 0.0
            for (u, v) in zip(a, b) { d += Double(u - v) * Double(u - v); n += Double(v) * Double(v) }
            return (d / max(n, 1e-30)).squareRoot()
        }
        // bf16 keeps 8 mantissa bits (relative rounding 2^-9): a few times that through 4 blocks.
        XCTAssertLessThan(relative(half.y, full.y), 2e-2)
        XCTAssertGreaterThan(relative(half.y, full.y), 0, "bf16 products were not used")
        for (p, (g16, g32)) in zip(model.parameters, zip(half.grads, full.grads)) {
            XCTAssertLessThan(relative(g16, g32), 5e-2, p.name)
        }
        model.precision = .fp32
    }
}

extension BF16Tests {
    /// The layouts the encoder uses must reach oneDNN's bf16 kernels, not its slow reference
    /// implementation: linear layers (plain and transposed operands) and batched attention.
    func testProductsUseTheBF16Kernels() throws {
        try XCTSkipUnless(Precision.hardwareBF16, "no AVX512-BF16 or AMX on this CPU")
        let (t, d, bh, rows, c) = (197, 64, 96, 6304, 192)
        let shapes: [OneDNN.Shape] = [
            .init(batch: 1, m: rows, n: 3 * c, k: c, a: .dense(rows: rows, cols: c),
                  b: .dense(rows: c, cols: 3 * c, transposed: true), c: .dense(rows: rows, cols: 3 * c), alpha: 1, beta: 1),
            .init(batch: 1, m: 3 * c, n: c, k: rows, a: .dense(rows: 3 * c, cols: rows, transposed: true),
                  b: .dense(rows: rows, cols: c), c: .dense(rows: 3 * c, cols: c), alpha: 1, beta: 1),
            .init(batch: bh, m: t, n: t, k: d, a: .dense(rows: t, cols: d), b: .dense(rows: d, cols: t, transposed: true),
                  c: .dense(rows: t, cols: t), alpha: 0.125, beta: 0),
            .init(batch: bh, m: t, n: d, k: t, a: .dense(rows: t, cols: t, transposed: true), b: .dense(rows: t, cols: d),
                  c: .dense(rows: t, cols: d), alpha: 1, beta: 0),
            // The fused inference products: bias + GELU to bf16, bias + residual sum, P V to bf16.
            .init(batch: 1, m: rows, n: 4 * c, k: c, a: .dense(rows: rows, cols: c),
                  b: .dense(rows: c, cols: 4 * c, transposed: true), c: .dense(rows: rows, cols: 4 * c), alpha: 1,
                  beta: 0, epilogue: Epilogue(bias: true, gelu: true, bf16Output: true)),
            .init(batch: 1, m: rows, n: c, k: 4 * c, a: .dense(rows: rows, cols: 4 * c),
                  b: .dense(rows: 4 * c, cols: c, transposed: true), c: .dense(rows: rows, cols: c), alpha: 1,
                  beta: 1, epilogue: Epilogue(bias: true)),
            .init(batch: bh, m: t, n: d, k: t, a: .dense(rows: t, cols: t), b: .dense(rows: t, cols: d),
                  c: .dense(rows: t, cols: d), alpha: 1, beta: 0, epilogue: Epilogue(bf16Output: true)),
        ]
        for s in shapes {
            let impl = try XCTUnwrap(OneDNN.shared).implementation(s)
            XCTAssertTrue(impl.contains("bf16") && !impl.contains("ref"), "\(s): \(impl)")
        }
    }
}

/// `infer` (shared buffers, nothing kept) computes exactly what `forward` computes.
final class InferenceTests: XCTestCase {
    /// fp32: `infer` (shared buffers, nothing kept) computes exactly what `forward` computes.
    /// bf16: `infer` fuses bias, GELU, residual sums and bf16 outputs into the products, so it
    /// matches `forward` up to fp32 rounding order, which can flip a bf16 rounding (2^-8
    /// relative) here and there: the bound is 1% of the largest output, far below the
    /// bf16-vs-fp32 difference, and on average 1e-3 of the mean magnitude.
    func testInferMatchesForward() throws {
        let model = try VisionTransformer(try ViTConfig(preset: "vit_nano", imgSize: 64), seed: 2)
        var rng = RNG(seed: 4)
        let x = randomTensor([3, 1, 64, 64], &rng)
        model.precision = .fp32
        let reference = try model.forward(x).array
        XCTAssertEqual(reference, try model.infer(x).array, "fp32")
        guard OneDNN.shared != nil else { return }
        model.precision = .bf16
        let kept = try model.forward(x).array
        let fused = try model.infer(x).array
        model.precision = .fp32
        let largest = kept.map { abs($0) }.max()!
        let mean = kept.map { abs($0) }.reduce(0, +) / Float(kept.count)
        let diffs = zip(kept, fused).map { abs($0 - $1) }
        let bf16VsFP32 = zip(kept, reference).map { abs($0 - $1) }.reduce(0, +) / Float(kept.count)
        XCTAssertLessThanOrEqual(diffs.max()!, 0.01 * largest)
        XCTAssertLessThanOrEqual(diffs.reduce(0, +) / Float(diffs.count), 1e-3 * mean)
        XCTAssertLessThan(diffs.reduce(0, +) / Float(diffs.count), 0.5 * bf16VsFP32)
    }

    /// A fused product against the same arithmetic done by hand in Double on the bf16-rounded
    /// operands: bias + GELU stored as bf16 (within one bf16 rounding), and bias + residual sum
    /// stored as fp32.
    func testFusedEpilogues() throws {
        try XCTSkipIf(OneDNN.shared == nil, "oneDNN unavailable")
        let (rows, k, n) = (37, 24, 40)
        let layer = Linear("fc", k, n)
        var rng = RNG(seed: 9)
        layer.initialize(&rng, std: 0.3)
        for j in 0..<n { layer.bias.value[j] = Float(rng.normal()) }
        let x = (0..<(rows * k)).map { _ in bf16Bits(Float(rng.normal())) }
        let w = (0..<(n * k)).map { bf16Value(bf16Bits(layer.weight.value[$0])) }
        func product(_ r: Int, _ j: Int) -> Double {
            var acc = Double(layer.bias.value[j])
            for i in 0..<k { acc += Double(bf16Value(x[r * k + i])) * Double(w[j * k + i]) }
            return acc
        }
        var activated = [UInt16](repeating: 0, count: rows * n)
        XCTAssertTrue(activated.withUnsafeMutableBytes { out in
            layer.productBF16(x, rows: rows, into: out.baseAddress!, epilogue: Epilogue(gelu: true, bf16Output: true))
        })
        var residual = (0..<(rows * n)).map { _ in Float(rng.normal()) }
        let before = residual
        XCTAssertTrue(residual.withUnsafeMutableBytes { out in
            layer.productBF16(x, rows: rows, into: out.baseAddress!, epilogue: Epilogue(), accumulate: true)
        })
        for r in 0..<rows {
            for j in 0..<n {
                let z = product(r, j)
                let gelu = z * 0.5 * (1 + erf(z / 2.0.squareRoot()))
                XCTAssertEqual(Double(bf16Value(activated[r * n + j])), gelu, accuracy: abs(gelu) / 128 + 1e-5)
                XCTAssertEqual(Double(residual[r * n + j]), Double(before[r * n + j]) + z,
                               accuracy: 1e-5 * (abs(z) + 1))
            }
        }
    }
}
