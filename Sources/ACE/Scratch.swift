/// Gradient buffers that live only during one layer's backward. Blocks run their backward
/// one after another, so every block of a model shares one set instead of holding its own
/// (for vit_tiny at 32 views this saves about 70 MB per block).
public final class BackwardScratch {
    let dBranch = Tensor([0]), dNorm = Tensor([0]), dMid = Tensor([0])
    let dContext = Tensor([0]), dQKV = Tensor([0]), dScores = Tensor([0])
    let dHidden = Tensor([0]), dActivation = Tensor([0])

    public init() {}
}

/// Buffers of an inference forward, shared by every block of a model: blocks run one after
/// another and keep nothing for backward, so the peak memory is one block's intermediates
/// instead of all of them (for vit_tiny at batch 32, about 90 MB instead of 1.2 GB).
public final class InferenceScratch {
    let normed = Tensor([0]), branch = Tensor([0]), hidden = Tensor([0])
    let attention = AttentionActivations()

    public init() {}
}
