/// timm's PatchMerging: each 2x2 block of a side x side grid (B, side*side, C) becomes one
/// token of 4C channels -> LayerNorm(4C) -> Linear 4C -> 2C without bias, (B, side*side/4, 2C).
///
/// The 4C channels are the block's tokens in timm's order (x[0::2, 0::2], x[1::2, 0::2],
/// x[0::2, 1::2], x[1::2, 1::2]): chunk k is the token at row offset k % 2, column offset k / 2.
/// The concatenation only moves values, so its backward moves the gradients back.
public final class PatchMerging {
    public let norm: LayerNorm, reduction: Linear
    public let dim: Int, side: Int
    public let output = Tensor([0])
    private let merged = Tensor([0]), normed = Tensor([0])
    private let dNormed = Tensor([0]), dMerged = Tensor([0])

    public init(_ name: String, dim: Int, side: Int) {
        precondition(side % 2 == 0)
        self.dim = dim; self.side = side
        norm = LayerNorm("\(name).norm", 4 * dim, eps: 1e-5)
        reduction = Linear("\(name).reduction", 4 * dim, 2 * dim, bias: false)
    }

    public var parameters: [Parameter] { norm.parameters + reduction.parameters }

    /// `keep: false` (inference) keeps nothing for backward.
    public func forward(_ x: Tensor, keep: Bool = true) -> Tensor {
        let b = x.shape[0]
        merged.reshape([b, side * side / 4, 4 * dim])
        forEachChunk(b) { grid, chunk in (merged.data + chunk).update(from: x.data + grid, count: dim) }
        norm.forward(merged, into: normed, keep: keep)
        reduction.forward(normed, into: output, keepInput: keep)
        return output
    }

    /// dy (B, side*side/4, 2C) -> dx (B, side*side, C); dx may be the same tensor as dy.
    public func backward(_ dy: Tensor, into dx: Tensor) {
        let b = dy.shape[0]
        reduction.backward(dy, into: dNormed)
        norm.backward(dNormed, into: dMerged)
        dx.reshape([b, side * side, dim])
        forEachChunk(b) { grid, chunk in (dx.data + grid).update(from: dMerged.data + chunk, count: dim) }
    }

    /// body(offset in the (B, side*side, C) grid, offset in the (B, side*side/4, 4C) tokens).
    private func forEachChunk(_ b: Int, _ body: (Int, Int) -> Void) {
        let half = side / 2, c = dim
        for i in 0..<b {
            for oy in 0..<half {
                for ox in 0..<half {
                    let o = (i * half + oy) * half + ox
                    for k in 0..<4 {
                        let y = 2 * oy + k % 2, x = 2 * ox + k / 2
                        body(((i * side + y) * side + x) * c, (o * 4 + k) * c)
                    }
                }
            }
        }
    }
}
