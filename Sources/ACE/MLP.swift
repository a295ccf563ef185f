/// fc1 -> GELU -> fc2 (in the encoder: C -> 4C -> C), or the ACE authors' local-head form
/// fc1 (no bias) -> LayerNorm -> ReLU -> fc2.
public final class MLP {
    public enum Kind: String, Codable { case gelu, authors }

    public let fc1: Linear, fc2: Linear
    /// The LayerNorm of the authors' form (nil for the GELU form).
    public let norm: LayerNorm?
    private let act = GELU()
    private let h = Tensor([0]), normed = Tensor([0]), a = Tensor([0])
    private let scratch: BlockScratch

    public init(_ name: String, _ inFeatures: Int, _ hidden: Int, _ outFeatures: Int? = nil,
                kind: Kind = .gelu, scratch: BlockScratch = BlockScratch()) {
        self.scratch = scratch
        fc1 = Linear("\(name).fc1", inFeatures, hidden, bias: kind == .gelu)
        norm = kind == .authors ? LayerNorm("\(name).norm", hidden) : nil
        fc2 = Linear("\(name).fc2", hidden, outFeatures ?? inFeatures)
    }

    public var parameters: [Parameter] { fc1.parameters + (norm?.parameters ?? []) + fc2.parameters }

    public func forward(_ x: Tensor, into y: Tensor) {
        fc1.forward(x, into: h)
        guard let norm else {
            // The activation is recomputed from h in backward (one erf per value), so it lives
            // in the blocks' shared scratch instead of in every layer. In bf16 it is stored
            // rounded, as fc2's operand.
            if fc2.precision == .bf16 {
                let rows = h.count / fc1.outFeatures
                scratch.activatedBF16.reserve(h.count)
                act.forward(h, intoBF16: scratch.activatedBF16.data)
                y.reshape(Array(h.shape.dropLast()) + [fc2.outFeatures])
                if fc2.productBF16(scratch.activatedBF16.data, rows: rows, into: UnsafeMutableRawPointer(y.data),
                                   epilogue: Epilogue()) { return }
            }
            act.forward(h, into: scratch.activated)
            fc2.forward(scratch.activated, into: y, keepInput: false)
            return
        }
        norm.forward(h, into: normed)
        a.reshape(normed.shape)
        for i in 0..<normed.count { a[i] = max(normed[i], 0) }
        fc2.forward(a, into: y)
    }

    /// The GELU form's forward without keeping anything for backward: the hidden layer and its
    /// activation share `hidden` (inference).
    func infer(_ x: Tensor, into y: Tensor, hidden: Tensor) {
        precondition(norm == nil, "inference without saved activations is for the GELU form")
        fc1.forward(x, into: hidden, keepInput: false)
        act.applyInPlace(hidden)
        fc2.forward(hidden, into: y, keepInput: false)
    }

    public func backward(_ dy: Tensor, into dx: Tensor) {
        let (dActivation, dHidden) = (scratch.dActivation, scratch.dHidden)
        if let norm {
            fc2.backward(dy, into: dActivation)
            for i in 0..<dActivation.count where normed[i] <= 0 { dActivation[i] = 0 }   // ReLU
            norm.backward(dActivation, into: dHidden)
        } else if !(fc2.precision == .bf16 && backwardGELUBF16(dy)) {
            act.forward(h, into: scratch.activated)
            fc2.backward(dy, into: dActivation, input: scratch.activated)
            act.backward(dActivation, into: dHidden)
        }
        fc1.backward(dHidden, into: dx)
    }

    /// fc2's input gradient, then the GELU backward recomputing fc2's bf16 input on the way
    /// (one erf per value for both), then fc2's weight gradient.
    private func backwardGELUBF16(_ dy: Tensor) -> Bool {
        let (dActivation, dHidden) = (scratch.dActivation, scratch.dHidden)
        dActivation.reshape(h.shape)
        guard fc2.backwardBF16(dy.data, rows: dy.count / fc2.outFeatures, into: dActivation.data,
                               roundInput: { act.backward(dActivation, into: dHidden, recomputingBF16: $0) })
        else { return false }
        fc2.accumulateBiasGradient(dy)
        return true
    }
}
