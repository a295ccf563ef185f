/// Buffers that live only during one layer's forward or backward. Blocks run one after
/// another, so every block of a model shares one set instead of holding its own (for
/// vit_tiny at 32 views each buffer of (B, T, C) floats saved is about 5 MB per block).
public final class BlockScratch {
    let dBranch = Tensor([0]), dNorm = Tensor([0]), dMid = Tensor([0])
    let dContext = Tensor([0]), dQKV = Tensor([0]), dScores = Tensor([0])
    let dHidden = Tensor([0]), dActivation = Tensor([0])
    /// Forward temporaries: a residual branch's output, the stream between a block's two
    /// residual additions, and the per-head attention products before they are interleaved.
    let branch = Tensor([0]), mid = Tensor([0]), headProduct = Tensor([0])
    /// Recomputed in backward: a bf16 forward's qkv outputs and the MLP's activation.
    let qkvOut = Tensor([0]), activated = Tensor([0])
    let activatedBF16 = BF16Buffer()

    public init() {}
}

/// Buffers of an inference forward, shared by every block of a model: blocks run one after
/// another and keep nothing for backward, so the peak memory is one block's intermediates
/// instead of all of them (for vit_tiny at batch 32, about 90 MB instead of 1.2 GB).
public final class InferenceScratch {
    let normed = Tensor([0]), branch = Tensor([0]), hidden = Tensor([0])
    let attention = AttentionActivations()
    /// The bf16 path's (InferenceBF16.swift): LayerNorm output, the qkv or hidden layer, the
    /// attention context.
    let normedBF16 = BF16Buffer(), wide = BF16Buffer(), contextBF16 = BF16Buffer()

    public init() {}
}
