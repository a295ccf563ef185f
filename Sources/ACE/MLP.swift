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
            // in the blocks' shared scratch instead of in every layer.
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
        } else {
            act.forward(h, into: scratch.activated)
            fc2.backward(dy, into: dActivation, input: scratch.activated)
            act.backward(dActivation, into: dHidden)
        }
        fc1.backward(dHidden, into: dx)
    }
}
