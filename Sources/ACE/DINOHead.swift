/// DINO's projection head: MLP C -> hidden -> hidden -> bottleneck (GELU between), L2
/// normalization, then a weight-normalized linear layer to K prototypes whose gain is fixed
/// at 1 (DINO's norm_last_layer): logits = normalize(h) . normalize(v_k).
public final class DINOHead {
    public let fc0: Linear, fc1: Linear, fc2: Linear
    public let lastLayer: Parameter     // weight_v (K, bottleneck)
    private let act0 = GELU(), act1 = GELU()
    private let h0 = Tensor([0]), a0 = Tensor([0]), h1 = Tensor([0]), a1 = Tensor([0])
    private let h2 = Tensor([0]), hNorm = Tensor([0]), hHat = Tensor([0])
    private let vHat = Tensor([0]), vNorm = Tensor([0])
    private let g0 = Tensor([0]), g1 = Tensor([0]), g2 = Tensor([0])
    public let logits = Tensor([0])
    public let bottleneck: Int, prototypes: Int
    /// How the head's products are computed; the normalizations stay fp32.
    public var precision: Precision = .fp32 {
        didSet { for l in [fc0, fc1, fc2] { l.precision = precision } }
    }

    public init(_ name: String, dim: Int, hidden: Int, bottleneck: Int, prototypes: Int) {
        fc0 = Linear("\(name).mlp.0", dim, hidden)
        fc1 = Linear("\(name).mlp.2", hidden, hidden)
        fc2 = Linear("\(name).mlp.4", hidden, bottleneck)
        lastLayer = Parameter("\(name).last_layer.weight_v", [prototypes, bottleneck], decays: true)
        self.bottleneck = bottleneck
        self.prototypes = prototypes
    }

    public var parameters: [Parameter] { fc0.parameters + fc1.parameters + fc2.parameters + [lastLayer] }

    public func initialize(_ rng: inout RNG) {
        for l in [fc0, fc1, fc2] { l.initialize(&rng) }
        // PyTorch's default Linear init for the prototypes: uniform(-1/sqrt(in), 1/sqrt(in)).
        let bound = 1 / Double(bottleneck).squareRoot()
        for i in 0..<lastLayer.count { lastLayer.value[i] = Float(rng.uniform(-bound, bound)) }
    }

    /// x (R, C) -> logits (R, K).
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let r = x.shape[0]
        fc0.forward(x, into: h0); act0.forward(h0, into: a0)
        fc1.forward(a0, into: h1); act1.forward(h1, into: a1)
        fc2.forward(a1, into: h2)
        hHat.reshape([r, bottleneck]); hNorm.reshape([r])
        normalizeRows(h2.data, rows: r, dim: bottleneck, into: hHat.data, norms: hNorm.data)
        vHat.reshape([prototypes, bottleneck]); vNorm.reshape([prototypes])
        normalizeRows(lastLayer.value.data, rows: prototypes, dim: bottleneck, into: vHat.data, norms: vNorm.data)
        logits.reshape([r, prototypes])
        gemm(transB: true, m: r, n: prototypes, k: bottleneck, a: hHat.data, b: vHat.data, c: logits.data,
             precision: precision)
        return logits
    }

    /// dLogits (R, K) -> dx (R, C); accumulates every parameter gradient.
    public func backward(_ dLogits: Tensor, into dx: Tensor) {
        let r = dLogits.shape[0]
        // Through the normalized prototypes: d vHat = dLogits^T hHat, then the normalization.
        g2.reshape([prototypes, bottleneck])
        gemm(transA: true, m: prototypes, n: bottleneck, k: r, a: dLogits.data, b: hHat.data, c: g2.data,
             precision: precision)
        normalizeBackward(g2.data, normalized: vHat.data, norms: vNorm.data, rows: prototypes, dim: bottleneck)
        let dv = lastLayer.grad.data, gv = g2.data
        for i in 0..<lastLayer.count { dv[i] += gv[i] }
        // Through the normalized bottleneck: d hHat = dLogits vHat.
        g1.reshape([r, bottleneck])
        gemm(m: r, n: bottleneck, k: prototypes, a: dLogits.data, b: vHat.data, c: g1.data,
             precision: precision)
        normalizeBackward(g1.data, normalized: hHat.data, norms: hNorm.data, rows: r, dim: bottleneck)
        fc2.backward(g1, into: g0)
        act1.backward(g0, into: g1)
        fc1.backward(g1, into: g0)
        act0.backward(g0, into: g1)
        fc0.backward(g1, into: dx)
    }
}
