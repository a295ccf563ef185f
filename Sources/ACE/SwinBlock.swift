/// timm's SwinTransformerBlock on a side x side grid of tokens (B, side*side, C):
/// x + drop_path(reverse(attn(partition(norm1(x))))), then + drop_path(mlp(norm2(.))),
/// where partition/reverse include the cyclic shift of a shifted block and attn the mask.
public final class SwinBlock {
    public let norm1: LayerNorm, attn: WindowAttention, norm2: LayerNorm, mlp: MLP
    public let dropPath: DropPath, dropPath2: DropPath
    public let partition: WindowPartition
    public let mask: Tensor?
    public let output = Tensor([0])
    /// norm2's output (kept by fc1) and the windows (kept by qkv) are needed by backward.
    private let n2 = Tensor([0]), windowsIn = Tensor([0])
    private let normed = Tensor([0]), windowsOut = Tensor([0])
    private let scratch: BlockScratch

    public init(_ name: String, dim: Int, heads: Int, side: Int, window: Int, shift: Int, mlpRatio: Int,
                dropPath rate: Float, scratch: BlockScratch = BlockScratch()) {
        self.scratch = scratch
        norm1 = LayerNorm("\(name).norm1", dim, eps: 1e-5)
        attn = WindowAttention("\(name).attn", dim, heads: heads, window: window, scratch: scratch)
        norm2 = LayerNorm("\(name).norm2", dim, eps: 1e-5)
        mlp = MLP("\(name).mlp", dim, dim * mlpRatio, scratch: scratch)
        dropPath = DropPath(rate)
        dropPath2 = DropPath(rate)
        partition = WindowPartition(side: side, window: window, shift: shift)
        mask = partition.attentionMask()
    }

    public var parameters: [Parameter] {
        norm1.parameters + attn.parameters + norm2.parameters + mlp.parameters
    }

    public func initialize(_ rng: inout RNG) {
        attn.initialize(&rng)
        mlp.fc1.initialize(&rng)
        mlp.fc2.initialize(&rng)
    }

    public func forward(_ x: Tensor, training: Bool, rng: inout RNG) -> Tensor {
        let (a, mid, m) = (scratch.branch, scratch.mid, scratch.branch)
        norm1.forward(x, into: normed)
        partition.partition(normed, into: windowsIn)
        attn.forward(windowsIn, mask: mask, into: windowsOut)
        partition.reverse(windowsOut, into: a)
        dropPath.forward(residual: x, branch: a, into: mid, training: training, rng: &rng)
        norm2.forward(mid, into: n2)
        mlp.forward(n2, into: m)
        dropPath2.forward(residual: mid, branch: m, into: output, training: training, rng: &rng)
        return output
    }

    /// Inference in place: x += reverse(attn(partition(norm1(x)))), then x += mlp(norm2(x))
    /// (drop path is the identity), every intermediate in `s`, nothing kept for backward.
    public func infer(_ x: Tensor, shared s: SwinInferenceScratch) {
        norm1.forward(x, into: s.normed, keep: false)
        partition.partition(s.normed, into: s.windows)
        attn.forward(s.windows, mask: mask, into: s.windowsOut, shared: s.attention)
        partition.reverse(s.windowsOut, into: s.branch)
        add(s.branch, into: x)
        norm2.forward(x, into: s.normed, keep: false)
        mlp.infer(s.normed, into: s.branch, hidden: s.hidden)
        add(s.branch, into: x)
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
        // The MLP's gradient buffers are free again: they carry the windows' gradients.
        let (dWindowsOut, dWindowsIn) = (scratch.dActivation, scratch.dHidden)
        partition.partition(dBranch, into: dWindowsOut)      // reverse's backward
        attn.backward(dWindowsOut, into: dWindowsIn)
        partition.reverse(dWindowsIn, into: dNorm)           // partition's backward
        norm1.backward(dNorm, into: dBranch)
        dx.copy(from: dMid)
        add(dBranch, into: dx)
    }
}

/// Buffers of a Swin inference forward, shared by every block (see `InferenceScratch`).
public final class SwinInferenceScratch {
    let normed = Tensor([0]), windows = Tensor([0]), windowsOut = Tensor([0])
    let branch = Tensor([0]), hidden = Tensor([0])
    let attention = AttentionActivations()

    public init() {}
}
