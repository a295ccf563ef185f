/// fc1 -> GELU -> fc2 (in the encoder: C -> 4C -> C).
public final class MLP {
    public let fc1: Linear, fc2: Linear
    private let act = GELU()
    private let h = Tensor([0]), a = Tensor([0])
    private let scratch: BackwardScratch

    public init(_ name: String, _ inFeatures: Int, _ hidden: Int, _ outFeatures: Int? = nil,
                scratch: BackwardScratch = BackwardScratch()) {
        self.scratch = scratch
        fc1 = Linear("\(name).fc1", inFeatures, hidden)
        fc2 = Linear("\(name).fc2", hidden, outFeatures ?? inFeatures)
    }

    public var parameters: [Parameter] { fc1.parameters + fc2.parameters }

    public func forward(_ x: Tensor, into y: Tensor) {
        fc1.forward(x, into: h)
        act.forward(h, into: a)
        fc2.forward(a, into: y)
    }

    public func backward(_ dy: Tensor, into dx: Tensor) {
        fc2.backward(dy, into: scratch.dActivation)
        act.backward(scratch.dActivation, into: scratch.dHidden)
        fc1.backward(scratch.dHidden, into: dx)
    }
}
