/// y = x W^T + b over rows of x (N, in). W is (out, in) as in PyTorch.
public final class Linear {
    public let weight: Parameter
    public let bias: Parameter
    public let inFeatures: Int, outFeatures: Int
    /// How the layer's three products are computed (forward, weight gradient, input gradient).
    public var precision: Precision = .fp32
    /// The input of the last forward, kept by reference for backward.
    private var input: Tensor?
    /// The weight rounded to bf16 for the bf16 products (LinearBF16.swift).
    let weightBF16 = BF16Buffer()

    /// `weightShape` lets a layer keep PyTorch's shape for a weight that acts as (out, in),
    /// such as a stride-p convolution's (C, in_chans, p, p).
    /// Whether the layer adds its bias (a layer without one keeps a zero bias out of `parameters`).
    public let hasBias: Bool

    public init(_ name: String, _ inFeatures: Int, _ outFeatures: Int, weightShape: [Int]? = nil, bias: Bool = true) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter("\(name).weight", weightShape ?? [outFeatures, inFeatures], decays: true)
        self.bias = Parameter("\(name).bias", [outFeatures], decays: false)
        hasBias = bias
    }

    public var parameters: [Parameter] { hasBias ? [weight, bias] : [weight] }

    public func initialize(_ rng: inout RNG, std: Float = 0.02) {
        for i in 0..<weight.count { weight.value[i] = rng.truncatedNormal(std: Double(std)) }
        bias.value.zero()
    }

    /// x: (..., in) -> y: (..., out). The caller must not modify x before backward
    /// (`keepInput: false`: no backward follows, nothing is kept).
    public func forward(_ x: Tensor, into y: Tensor, keepInput: Bool = true) {
        let rows = x.count / inFeatures
        y.reshape(Array(x.shape.dropLast()) + [outFeatures])
        input = keepInput ? x : nil
        if precision == .bf16 && forwardBF16(x.data, rows: rows, into: y.data) { return }
        let b = bias.value.data
        for r in 0..<rows { (y.data + r * outFeatures).update(from: b, count: outFeatures) }
        gemm(transB: true, m: rows, n: outFeatures, k: inFeatures,
             a: x.data, b: weight.value.data, beta: 1, c: y.data)
    }

    /// y = x W^T + b again for the input kept by the last forward (activation recomputation).
    func recompute(into y: Tensor) {
        guard let x = input else { return }
        forward(x, into: y)
    }

    /// Accumulates dW += dy^T x, db += sum_rows dy; writes dx = dy W (unless dx is nil).
    /// `input` replaces the kept input when the forward's was recomputed.
    public func backward(_ dy: Tensor, into dx: Tensor?, input recomputed: Tensor? = nil) {
        guard let x = recomputed ?? input else { return }
        let rows = dy.count / outFeatures
        dx?.reshape(x.shape)
        accumulateBiasGradient(dy)
        if precision == .bf16 && backwardBF16(dy.data, rows: rows, into: dx?.data, roundInput: { buffer in
            toBF16(x.data, rows: rows, cols: self.inFeatures, ld: self.inFeatures, into: buffer)
        }) { return }
        gemm(transA: true, m: outFeatures, n: inFeatures, k: rows,
             a: dy.data, b: x.data, beta: 1, c: weight.grad.data)
        if let dx {
            gemm(m: rows, n: inFeatures, k: outFeatures, a: dy.data, b: weight.value.data, c: dx.data)
        }
    }

    /// db += sum over rows of dy.
    func accumulateBiasGradient(_ dy: Tensor) {
        guard hasBias else { return }
        accumulateColumnSums(dy.data, rows: dy.count / outFeatures, cols: outFeatures, into: bias.grad.data)
    }
}
