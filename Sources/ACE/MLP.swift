/// fc1 -> GELU -> fc2 (in the encoder: C -> 4C -> C), or the ACE authors' local-head form
/// fc1 (no bias) -> LayerNorm -> ReLU -> fc2.
public final class MLP {
    public enum Kind: String, Codable { case gelu, authors }

    public let fc1: Linear, fc2: Linear
    /// The LayerNorm of the authors' form (nil for the GELU form).
    public let norm: LayerNorm?
    private let act = GELU()
    private let h = Tensor([0]), normed = Tensor([0]), a = Tensor([0])
    private let scratch: BackwardScratch

    public init(_ name: String, _ inFeatures: Int, _ hidden: Int, _ outFeatures: Int? = nil,
                kind: Kind = .gelu, scratch: BackwardScratch = BackwardScratch()) {
        self.scratch = scratch
        fc1 = Linear("\(name).fc1", inFeatures, hidden, bias: kind == .gelu)
        norm = kind == .authors ? LayerNorm("\(name).norm", hidden) : nil
        fc2 = Linear("\(name).fc2", hidden, outFeatures ?? inFeatures)
    }

    public var parameters: [Parameter] { fc1.parameters + (norm?.parameters ?? []) + fc2.parameters }

    public func forward(_ x: Tensor, into y: Tensor) {
        fc1.forward(x, into: h)
        if let norm {
            norm.forward(h, into: normed)
            a.reshape(normed.shape)
            for i in 0..<normed.count { a[i] = max(normed[i], 0) }
        } else {
            act.forward(h, into: a)
        }
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
        fc2.backward(dy, into: scratch.dActivation)
        if let norm {
            let d = scratch.dActivation
            for i in 0..<d.count where normed[i] <= 0 { d[i] = 0 }   // ReLU
            norm.backward(d, into: scratch.dHidden)
        } else {
            act.backward(scratch.dActivation, into: scratch.dHidden)
        }
        fc1.backward(scratch.dHidden, into: dx)
    }
}
