/// A p x p convolution with stride p, computed as a product: each patch is unrolled in
/// (channel, row, column) order, the layout of PyTorch's (C, in_chans, p, p) weight.
public final class PatchEmbed {
    public let proj: Linear
    public let patch: Int, inChans: Int, dim: Int
    private let columns = Tensor([0])    // (B, h*w, in_chans*p*p)
    private let dColumns = Tensor([0])
    private var inputShape: [Int] = []

    public init(_ name: String, inChans: Int, dim: Int, patch: Int) {
        self.patch = patch
        self.inChans = inChans
        self.dim = dim
        proj = Linear("\(name).proj", inChans * patch * patch, dim,
                      weightShape: [dim, inChans, patch, patch])
    }

    public var parameters: [Parameter] { proj.parameters }

    /// x: (B, in_chans, H, W) -> y: (B, h*w, C), tokens row-major (row = y).
    public func forward(_ x: Tensor, into y: Tensor) {
        inputShape = x.shape
        columns.reshape([x.shape[0], (x.shape[2] / patch) * (x.shape[3] / patch), inChans * patch * patch])
        let image = x.data, cols = columns.data, p = patch
        forEachPatchRow { io, co in (cols + co).update(from: image + io, count: p) }
        proj.forward(columns, into: y)
    }

    /// Accumulates the weight gradients; writes dx (B, in_chans, H, W) when asked.
    public func backward(_ dy: Tensor, into dx: Tensor?) {
        guard let dx else { proj.backward(dy, into: nil); return }
        proj.backward(dy, into: dColumns)
        dx.reshape(inputShape)
        // Patches do not overlap, so the scatter back is a plain copy.
        let image = dx.data, cols = dColumns.data, p = patch
        forEachPatchRow { io, co in (image + io).update(from: cols + co, count: p) }
    }

    /// Calls body(image offset, column offset) for each row of p pixels of each patch.
    private func forEachPatchRow(_ body: (Int, Int) -> Void) {
        let (b, height, width) = (inputShape[0], inputShape[2], inputShape[3])
        let (p, ci, h, w) = (patch, inChans, height / patch, width / patch)
        var co = 0
        for bi in 0..<b {
            for ty in 0..<h {
                for tx in 0..<w {
                    for c in 0..<ci {
                        for r in 0..<p {
                            body(((bi * ci + c) * height + ty * p + r) * width + tx * p, co)
                            co += p
                        }
                    }
                }
            }
        }
    }
}
