/// Exact GELU, x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2, as timm's nn.GELU()
/// (erf to 1.5e-7, see FastMath). Backward recomputes Phi from the input instead of keeping it:
/// an erf costs less than storing and reloading a (B, T, 4C) tensor per block.
public final class GELU {
    private var input = Tensor([0])

    public init() {}

    public func forward(_ x: Tensor, into y: Tensor) {
        y.reshape(x.shape)
        let xs = x.data, ys = y.data
        input = x   // kept by reference: the caller owns x until backward
        parallelChunks(x.count, minPerChunk: 4096) { range in
            for i in range { let v = xs[i]; ys[i] = v * (0.5 * (1 + fastErf(v * 0.70710678118654752))) }
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

    /// The forward rounded to bf16 into y: the next product's operand, with no fp32 copy.
    func forward(_ x: Tensor, intoBF16 y: UnsafeMutablePointer<UInt16>) {
        let xs = x.data
        input = x
        parallelChunks(x.count, minPerChunk: 4096) { range in
            for i in range { let v = xs[i]; y[i] = bf16Bits(v * (0.5 * (1 + fastErf(v * 0.70710678118654752)))) }
        }
    }

    /// The backward, also writing the forward's output again in bf16 (for the next layer's
    /// weight gradient) from the same Phi: one erf per value for both.
    func backward(_ dy: Tensor, into dx: Tensor, recomputingBF16 y: UnsafeMutablePointer<UInt16>) {
        dx.reshape(dy.shape)
        let xs = input.data, dys = dy.data, dxs = dx.data
        parallelChunks(dy.count, minPerChunk: 4096) { range in
            for i in range {
                let v = xs[i], (cdf, slope) = geluParts(v)
                y[i] = bf16Bits(v * cdf)
                dxs[i] = dys[i] * slope
            }
        }
    }

    /// d/dx [x Phi(x)] = Phi(x) + x phi(x).
    public func backward(_ dy: Tensor, into dx: Tensor) {
        dx.reshape(dy.shape)
        let xs = input.data, dys = dy.data, dxs = dx.data
        parallelChunks(dy.count, minPerChunk: 4096) { range in
            for i in range { dxs[i] = dys[i] * geluParts(xs[i]).slope }
        }
    }
}

/// Phi(x) and the GELU's derivative Phi(x) + x phi(x). Both backward loops spell their
/// stores out around it (a closure per element would keep them scalar).
@inline(__always)
private func geluParts(_ v: Float) -> (cdf: Float, slope: Float) {
    let cdf = 0.5 * (1 + fastErf(v * 0.70710678118654752))
    let pdf = 0.39894228040143268 * fastExp(-0.5 * v * v)
    return (cdf, cdf + v * pdf)
}
