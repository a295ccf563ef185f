/// LayerNorm over the last dimension, eps 1e-6 as in timm's ViT.
public final class LayerNorm {
    public let weight: Parameter
    public let bias: Parameter
    public let dim: Int
    public let eps: Float = 1e-6
    private let xhat = Tensor([0])
    private let rstd = Tensor([0])

    public init(_ name: String, _ dim: Int) {
        self.dim = dim
        weight = Parameter("\(name).weight", [dim], decays: false)
        bias = Parameter("\(name).bias", [dim], decays: false)
        weight.value.data.update(repeating: 1, count: dim)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func forward(_ x: Tensor, into y: Tensor) {
        let rows = x.count / dim, c = dim
        y.reshape(x.shape); xhat.reshape(x.shape); rstd.reshape([rows])
        let g = weight.value.data, b = bias.value.data
        let xs = x.data, ys = y.data, hs = xhat.data, rs = rstd.data
        parallelChunks(rows) { range in
            for r in range {
                let xr = xs + r * c
                var mean: Float = 0
                for j in 0..<c { mean += xr[j] }
                mean /= Float(c)
                var variance: Float = 0
                for j in 0..<c { let d = xr[j] - mean; variance += d * d }
                let inv = 1 / (variance / Float(c) + eps).squareRoot()
                rs[r] = inv
                let hr = hs + r * c, yr = ys + r * c
                for j in 0..<c {
                    let h = (xr[j] - mean) * inv
                    hr[j] = h
                    yr[j] = h * g[j] + b[j]
                }
            }
        }
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
                var m1: Float = 0, m2: Float = 0
                for j in 0..<c {
                    let gd = g[j] * dyr[j]
                    m1 += gd
                    m2 += gd * hr[j]
                }
                m1 /= Float(c); m2 /= Float(c)
                let inv = rs[r]
                for j in 0..<c { dxr[j] = inv * (g[j] * dyr[j] - m1 - hr[j] * m2) }
            }
        }
        // Parameter gradients reduce over rows: serial, to keep sums deterministic.
        let dg = weight.grad.data, db = bias.grad.data
        for r in 0..<rows {
            let dyr = dys + r * c, hr = hs + r * c
            for j in 0..<c {
                dg[j] += dyr[j] * hr[j]
                db[j] += dyr[j]
            }
        }
    }
}
