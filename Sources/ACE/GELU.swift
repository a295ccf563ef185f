/// Exact GELU, x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2, as timm's nn.GELU()
/// (erf to 1.5e-7, see FastMath).
public final class GELU {
    private var input = Tensor([0])
    private let cdf = Tensor([0])

    public init() {}

    public func forward(_ x: Tensor, into y: Tensor) {
        y.reshape(x.shape)
        let xs = x.data, ys = y.data
        input = x   // kept by reference: the caller owns x until backward
        cdf.reshape(x.shape)
        let ps = cdf.data
        parallelChunks(x.count, minPerChunk: 4096) { range in
            for i in range {
                let v = xs[i]
                let p = 0.5 * (1 + fastErf(v * 0.70710678118654752))
                ps[i] = p
                ys[i] = v * p
            }
        }
    }

    /// x <- GELU(x), keeping nothing for backward (inference). One pointer: with separate
    /// input and output pointers that alias, the loop would take its scalar fallback.
    public func applyInPlace(_ x: Tensor) {
        let xs = x.data
        parallelChunks(x.count, minPerChunk: 4096) { range in
            for i in range { let v = xs[i]; xs[i] = v * (0.5 * (1 + fastErf(v * 0.70710678118654752))) }
        }
    }

    /// d/dx [x Phi(x)] = Phi(x) + x phi(x).
    public func backward(_ dy: Tensor, into dx: Tensor) {
        dx.reshape(dy.shape)
        let xs = input.data, ps = cdf.data, dys = dy.data, dxs = dx.data
        parallelChunks(dy.count, minPerChunk: 4096) { range in
            for i in range {
                let v = xs[i]
                let pdf = 0.39894228040143268 * fastExp(-0.5 * v * v)
                dxs[i] = dys[i] * (ps[i] + v * pdf)
            }
        }
    }
}
