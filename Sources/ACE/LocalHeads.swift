/// The student's local heads (DESIGN.md section 5).
///
/// Composer: each 2 x 2 block of fine (C1) tokens, concatenated in row-major order within the
/// block, 4C -> Linear -> GELU -> Linear -> C: one composed token per C2-sized region.
/// Decomposer: each coarse (C2) token, C -> Linear -> GELU -> Linear -> 4C, split into the
/// 2 x 2 sub-tokens of its region in the same order.
/// With `kind: .authors` both MLPs take the ACE authors' form (see `MLP`).
public final class Composer {
    public let mlp: MLP
    public let dim: Int
    /// Tokens before the grid in the encoder output (a ViT's class token).
    public let prefix: Int
    private let blocks = Tensor([0]), dBlocks = Tensor([0])
    public let output = Tensor([0])

    public init(dim: Int, hidden: Int, kind: MLP.Kind = .gelu, prefix: Int = 1) {
        self.dim = dim
        self.prefix = prefix
        mlp = MLP("composer", 4 * dim, hidden, dim, kind: kind)
    }

    public var parameters: [Parameter] { mlp.parameters }

    /// tokens: B encoder outputs (prefix + n*n, C) -> (B, (n/2)^2, C).
    public func forward(_ tokens: UnsafePointer<Float>, batch b: Int, side n: Int) -> Tensor {
        let c = dim, h = n / 2
        blocks.reshape([b, h * h, 4 * c])
        forEachBlockPart(batch: b, side: n) { token, block in
            (blocks.data + block).update(from: tokens + token, count: c)
        }
        mlp.forward(blocks, into: output)
        return output
    }

    /// Adds the gradient of the composed tokens into dTokens (B, prefix + n*n, C).
    public func backward(_ dOut: Tensor, side n: Int, into dTokens: UnsafeMutablePointer<Float>) {
        mlp.backward(dOut, into: dBlocks)
        let c = dim
        forEachBlockPart(batch: dOut.shape[0], side: n) { token, block in
            let dst = dTokens + token, src = dBlocks.data + block
            for k in 0..<c { dst[k] += src[k] }
        }
    }

    /// body(offset of a fine token in the encoder output, offset of its C-slice in the blocks).
    private func forEachBlockPart(batch: Int, side n: Int, _ body: (Int, Int) -> Void) {
        let c = dim, h = n / 2
        for bi in 0..<batch {
            for j in 0..<(h * h) {
                let (by, bx) = (2 * (j / h), 2 * (j % h))
                for part in 0..<4 {
                    let token = prefix + (by + part / 2) * n + bx + part % 2
                    body((bi * (prefix + n * n) + token) * c, ((bi * h * h + j) * 4 + part) * c)
                }
            }
        }
    }
}

public final class Decomposer {
    public let mlp: MLP
    public let dim: Int
    /// Tokens before the grid in the encoder output (a ViT's class token).
    public let prefix: Int
    private let coarse = Tensor([0]), split = Tensor([0]), dSplit = Tensor([0]), dCoarse = Tensor([0])
    /// (B, (2n)^2, C): sub-token (u, v) of the 2n x 2n grid at row-major index u * 2n + v.
    public let output = Tensor([0])

    public init(dim: Int, hidden: Int, kind: MLP.Kind = .gelu, prefix: Int = 1) {
        self.dim = dim
        self.prefix = prefix
        mlp = MLP("decomposer", dim, hidden, 4 * dim, kind: kind)
    }

    public var parameters: [Parameter] { mlp.parameters }

    /// tokens: B encoder outputs (prefix + n*n, C) -> (B, (2n)^2, C).
    public func forward(_ tokens: UnsafePointer<Float>, batch b: Int, side n: Int) -> Tensor {
        let c = dim
        coarse.reshape([b, n * n, c])
        for bi in 0..<b {
            (coarse.data + bi * n * n * c).update(from: tokens + (bi * (prefix + n * n) + prefix) * c, count: n * n * c)
        }
        mlp.forward(coarse, into: split)
        output.reshape([b, 4 * n * n, c])
        forEachSubToken(batch: b, side: n) { sub, chunk in
            (output.data + sub).update(from: split.data + chunk, count: c)
        }
        return output
    }

    /// Adds the gradient of the sub-tokens into dTokens (B, prefix + n*n, C).
    public func backward(_ dOut: Tensor, side n: Int, into dTokens: UnsafeMutablePointer<Float>) {
        let b = dOut.shape[0], c = dim
        dSplit.reshape([b, n * n, 4 * c])
        forEachSubToken(batch: b, side: n) { sub, chunk in
            (dSplit.data + chunk).update(from: dOut.data + sub, count: c)
        }
        mlp.backward(dSplit, into: dCoarse)
        for bi in 0..<b {
            let dst = dTokens + (bi * (prefix + n * n) + prefix) * c, src = dCoarse.data + bi * n * n * c
            for k in 0..<(n * n * c) { dst[k] += src[k] }
        }
    }

    /// body(offset of a sub-token in the output, offset of its chunk in the MLP output).
    private func forEachSubToken(batch: Int, side n: Int, _ body: (Int, Int) -> Void) {
        let c = dim, w = 2 * n
        for bi in 0..<batch {
            for t in 0..<(n * n) {
                let (ty, tx) = (t / n, t % n)
                for part in 0..<4 {
                    let sub = (2 * ty + part / 2) * w + 2 * tx + part % 2
                    body((bi * w * w + sub) * c, ((bi * n * n + t) * 4 + part) * c)
                }
            }
        }
    }
}
