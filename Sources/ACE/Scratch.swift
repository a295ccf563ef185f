/// Gradient buffers that live only during one layer's backward. Blocks run their backward
/// one after another, so every block of a model shares one set instead of holding its own
/// (for vit_tiny at 32 views this saves about 70 MB per block).
public final class BackwardScratch {
    let dBranch = Tensor([0]), dNorm = Tensor([0]), dMid = Tensor([0])
    let dContext = Tensor([0]), dQKV = Tensor([0]), dScores = Tensor([0])
    let dHidden = Tensor([0]), dActivation = Tensor([0])

    public init() {}
}
