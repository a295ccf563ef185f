/// Pre-norm transformer block: x + drop_path(attn(norm1(x))), then + drop_path(mlp(norm2(.))).
public final class Block {
    public let norm1: LayerNorm, attn: Attention, norm2: LayerNorm, mlp: MLP
    public let dropPath: DropPath, dropPath2: DropPath
    public let output = Tensor([0])
    /// The LayerNorm outputs, which the following linear layers keep for backward.
    private let normed1 = Tensor([0]), normed2 = Tensor([0])
    private let scratch: BlockScratch

    public init(_ name: String, dim: Int, heads: Int, mlpRatio: Int, dropPath rate: Float,
                scratch: BlockScratch = BlockScratch()) {
        self.scratch = scratch
        norm1 = LayerNorm("\(name).norm1", dim)
        attn = Attention("\(name).attn", dim, heads: heads, scratch: scratch)
        norm2 = LayerNorm("\(name).norm2", dim)
        mlp = MLP("\(name).mlp", dim, dim * mlpRatio, scratch: scratch)
        dropPath = DropPath(rate)
        dropPath2 = DropPath(rate)
    }

    public var parameters: [Parameter] {
        norm1.parameters + attn.parameters + norm2.parameters + mlp.parameters
    }

    /// The branch outputs and the stream between the two additions are not needed by backward:
    /// they live in the scratch shared by the model's blocks.
    public func forward(_ x: Tensor, training: Bool, rng: inout RNG) -> Tensor {
        let (branch, betweenAdditions) = (scratch.branch, scratch.mid)
        norm1.forward(x, into: normed1)
        attn.forward(normed1, into: branch)
        dropPath.forward(residual: x, branch: branch, into: betweenAdditions, training: training, rng: &rng)
        norm2.forward(betweenAdditions, into: normed2)
        mlp.forward(normed2, into: branch)
        dropPath2.forward(residual: betweenAdditions, branch: branch, into: output, training: training, rng: &rng)
        return output
    }

    /// Inference in place: x += attn(norm1(x)), then x += mlp(norm2(x)) (drop path is the
    /// identity), with every intermediate in `shared` and nothing kept for backward. In bf16,
    /// each half runs fused (InferenceBF16.swift), or as here if oneDNN cannot run it.
    public func infer(_ x: Tensor, shared s: InferenceScratch) {
        if !(attn.precision == .bf16 && inferAttentionBF16(x, shared: s)) {
            norm1.forward(x, into: s.normed, keep: false)
            attn.forward(s.normed, into: s.branch, shared: s.attention)
            add(s.branch, into: x)
        }
        if !(mlp.fc1.precision == .bf16 && inferMLPBF16(x, shared: s)) {
            norm2.forward(x, into: s.normed, keep: false)
            mlp.infer(s.normed, into: s.branch, hidden: s.hidden)
            add(s.branch, into: x)
        }
    }

    /// dy -> dx (may be the same tensor as dy).
    public func backward(_ dy: Tensor, into dx: Tensor) {
        let (dMid, dBranch, dNorm) = (scratch.dMid, scratch.dBranch, scratch.dNorm)
        dMid.copy(from: dy)
        dropPath2.backwardBranch(dy, into: dBranch)
        mlp.backward(dBranch, into: dNorm)
        norm2.backward(dNorm, into: dBranch)
        add(dBranch, into: dMid)
        dropPath.backwardBranch(dMid, into: dBranch)
        attn.backward(dBranch, into: dNorm)
        norm1.backward(dNorm, into: dBranch)
        dx.copy(from: dMid)
        add(dBranch, into: dx)
    }
}

/// y += x elementwise.
@inline(__always)
func add(_ x: Tensor, into y: Tensor) {
    let xs = x.data, ys = y.data
    parallelChunks(x.count, minPerChunk: 8192) { r in for i in r { ys[i] += xs[i] } }
}

/// Stochastic depth: per sample, keep the residual branch with probability 1 - rate and
/// scale it by 1 / (1 - rate); identity at inference.
public final class DropPath {
    public let rate: Float
    private var scales: [Float] = []
    /// When set (one key per row of the batch), each row's keep/drop draw comes from a stream keyed by the
    /// call's draw and the row's key rather than from the row's place in the batch, so a
    /// sample's mask is the same whichever process (data-parallel rank) holds it.
    public var sampleKeys: [UInt64]?

    public init(_ rate: Float) { self.rate = rate }

    /// y = residual + scale_b * branch.
    public func forward(residual: Tensor, branch: Tensor, into y: Tensor, training: Bool, rng: inout RNG) {
        let b = branch.shape[0], per = branch.count / b
        scales = [Float](repeating: 1, count: b)
        if training && rate > 0 {
            if let keys = sampleKeys, keys.count == b {
                let salt = rng.next()
                for i in 0..<b {
                    var stream = RNG(seed: salt ^ keys[i])
                    scales[i] = stream.uniform() < Double(rate) ? 0 : 1 / (1 - rate)
                }
            } else {
                for i in 0..<b { scales[i] = rng.uniform() < Double(rate) ? 0 : 1 / (1 - rate) }
            }
        }
        y.reshape(branch.shape)
        let rs = residual.data, bs = branch.data, ys = y.data
        for i in 0..<b {
            let s = scales[i], o = i * per
            for j in o..<(o + per) { ys[j] = rs[j] + s * bs[j] }
        }
    }

    /// d branch = scale_b * dy.
    public func backwardBranch(_ dy: Tensor, into dBranch: Tensor) {
        let b = dy.shape[0], per = dy.count / b
        dBranch.reshape(dy.shape)
        let ds = dy.data, out = dBranch.data
        for i in 0..<b {
            let s = scales[i], o = i * per
            for j in o..<(o + per) { out[j] = s * ds[j] }
        }
    }
}
