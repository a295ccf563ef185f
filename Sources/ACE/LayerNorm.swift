/// LayerNorm over the last dimension, eps 1e-6 as in timm's ViT (Swin uses PyTorch's 1e-5).
public final class LayerNorm {
    public let weight: Parameter
    public let bias: Parameter
    public let dim: Int
    public let eps: Float
    private let xhat = Tensor([0])
    private let rstd = Tensor([0])

    public init(_ name: String, _ dim: Int, eps: Float = 1e-6) {
        self.dim = dim
        self.eps = eps
        weight = Parameter("\(name).weight", [dim], decays: false)
        bias = Parameter("\(name).bias", [dim], decays: false)
        weight.value.data.update(repeating: 1, count: dim)
    }

    public var parameters: [Parameter] { [weight, bias] }

    /// `keep: false` (inference) stores nothing for backward.
    public func forward(_ x: Tensor, into y: Tensor, keep: Bool = true) {
        let rows = x.count / dim, c = dim
        y.reshape(x.shape)
        if keep { xhat.reshape(x.shape); rstd.reshape([rows]) }
        let g = weight.value.data, b = bias.value.data
        let xs = x.data, ys = y.data, hs = xhat.data, rs = rstd.data
        parallelChunks(rows) { range in
            for r in range {
                let xr = xs + r * c
                let (mean, inv) = statistics(xr)
                let yr = ys + r * c
                if keep {
                    rs[r] = inv
                    let hr = hs + r * c
                    for j in 0..<c {
                        let h = (xr[j] - mean) * inv
                        hr[j] = h
                        yr[j] = h * g[j] + b[j]
                    }
                } else {
                    for j in 0..<c { yr[j] = (xr[j] - mean) * inv * g[j] + b[j] }
                }
            }
        }
    }

    /// The forward rounded to bf16 into y (inference: the next product's operand).
    func forward(_ x: Tensor, intoBF16 y: UnsafeMutablePointer<UInt16>) {
        let c = dim
        let g = weight.value.data, b = bias.value.data, xs = x.data
        parallelChunks(x.count / c) { range in
            for r in range {
                let xr = xs + r * c, yr = y + r * c
                let (mean, inv) = statistics(xr)
                for j in 0..<c { yr[j] = bf16Bits((xr[j] - mean) * inv * g[j] + b[j]) }
            }
        }
    }

    /// Mean and 1 / standard deviation of a row.
    @inline(__always)
    private func statistics(_ xr: UnsafePointer<Float>) -> (mean: Float, inv: Float) {
        let mean = laneSum(xr, dim) / Float(dim)
        let variance = laneSquaredDeviations(xr, dim, mean: mean)
        return (mean, 1 / (variance / Float(dim) + eps).squareRoot())
    }

    /// dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)); accumulates dg, db.
    public func backward(_ dy: Tensor, into dx: Tensor) {
        let rows = dy.count / dim, c = dim
        dx.reshape(dy.shape)
        let g = weight.value.data
        let dys = dy.data, dxs = dx.data, hs = xhat.data, rs = rstd.data
        parallelChunks(rows) { range in
            for r in range {
                let dyr = dys + r * c, hr = hs + r * c, dxr = dxs + r * c
                // mean(g*dy) and mean(g*dy*xhat) on 16 lanes (a scalar sum is a serial chain).
                let lanes = c / 16 * 16
                var acc1 = SIMD16<Float>(), acc2 = SIMD16<Float>()
                for j in stride(from: 0, to: lanes, by: 16) {
                    let gd = loadSIMD16(g + j) * loadSIMD16(dyr + j)
                    acc1 += gd
                    acc2 += gd * loadSIMD16(hr + j)
                }
                var m1 = horizontalSum(acc1), m2 = horizontalSum(acc2)
                for j in lanes..<c {
                    let gd = g[j] * dyr[j]
                    m1 += gd
                    m2 += gd * hr[j]
                }
                m1 /= Float(c); m2 /= Float(c)
                let inv = rs[r]
                for j in 0..<c { dxr[j] = inv * (g[j] * dyr[j] - m1 - hr[j] * m2) }
            }
        }
        // Parameter gradients reduce over rows (split over columns: deterministic).
        accumulateColumnSums(dys, times: hs, rows: rows, cols: c, into: weight.grad.data)
        accumulateColumnSums(dys, rows: rows, cols: c, into: bias.grad.data)
    }
}
