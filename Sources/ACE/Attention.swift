/// Multi-head self-attention with a fused qkv projection, as timm's Attention.
/// The 3C qkv outputs are ordered (3, heads, headDim); softmax(Q K^T / sqrt(d)) V per head.
/// fp32: the per-(sample, head) products are small, so each worker takes whole heads, serially.
/// bf16 (AttentionBF16.swift): every head of the batch in one batched oneDNN product.
public final class Attention {
    public let qkv: Linear, proj: Linear
    public let dim: Int, heads: Int, headDim: Int
    let scale: Float
    /// The layer's own activations, and the set the last forward used (the shared set of
    /// `InferenceScratch` for a forward that keeps nothing for backward).
    private let own = AttentionActivations()
    var acts: AttentionActivations
    /// The qkv outputs of the last forward. A bf16 training forward puts them in the shared
    /// scratch: its backward reads the bf16 per-head copies instead (and recomputes them should
    /// it have to fall back to fp32).
    private(set) var qkvOut: Tensor
    private var qkvOutShared = false
    var probs: Tensor { acts.probs }
    var context: Tensor { acts.context }
    var headProduct: Tensor { scratch.headProduct }
    var qHeads: BF16Buffer { acts.qHeads }
    var kHeads: BF16Buffer { acts.kHeads }
    var vHeads: BF16Buffer { acts.vHeads }
    var probsBF16: BF16Buffer { acts.probsBF16 }
    let dOutHeads = BF16Buffer()
    let scratch: BlockScratch
    var batch = 0, tokens = 0
    /// Which path the last forward took (backward must take the same one).
    var usedBF16 = false

    /// How the products are computed: the projections' and the attention's own.
    public var precision: Precision = .fp32 {
        didSet { qkv.precision = precision; proj.precision = precision }
    }

    public init(_ name: String, _ dim: Int, heads: Int, scratch: BlockScratch = BlockScratch()) {
        self.scratch = scratch
        acts = own
        qkvOut = own.qkvOut
        self.dim = dim
        self.heads = heads
        headDim = dim / heads
        scale = 1 / Float(headDim).squareRoot()
        qkv = Linear("\(name).qkv", dim, 3 * dim)
        proj = Linear("\(name).proj", dim, dim)
    }

    public var parameters: [Parameter] { qkv.parameters + proj.parameters }

    /// With `shared` the activations go to that set (inference: nothing is kept for backward).
    public func forward(_ x: Tensor, into y: Tensor, shared: AttentionActivations? = nil) {
        acts = shared ?? own
        let keep = shared == nil
        qkvOutShared = keep && precision == .bf16
        qkvOut = qkvOutShared ? scratch.qkvOut : acts.qkvOut
        let b = x.shape[0], t = x.shape[1], c = dim, d = headDim, hN = heads
        batch = b; tokens = t
        qkv.forward(x, into: qkvOut, keepInput: keep)
        probs.reshape([b, hN, t, t]); context.reshape([b, t, c])
        usedBF16 = precision == .bf16 && attendBF16()
        if usedBF16 { proj.forward(context, into: y, keepInput: keep); return }
        let base = qkvOut.data, ps = probs.data, ctx = context.data, s = scale
        parallelChunks(b * hN, minPerChunk: 1) { range in
          for bh in range {
            let bi = bh / hN, h = bh % hN
            let q = base + bi * t * 3 * c + h * d
            let k = q + c, v = q + 2 * c
            let p = ps + bh * t * t
            serialGemm(transB: true, m: t, n: t, k: d, alpha: s, a: q, lda: 3 * c, b: k, ldb: 3 * c, c: p)
            for r in 0..<t { softmaxRow(p + r * t, t) }
            serialGemm(m: t, n: d, k: t, a: p, b: v, ldb: 3 * c, c: ctx + bi * t * c + h * d, ldc: c)
          }
        }
        proj.forward(context, into: y, keepInput: keep)
    }

    public func backward(_ dy: Tensor, into dx: Tensor) {
        let b = batch, t = tokens, c = dim, d = headDim, hN = heads
        let (dContext, dQKV, dScores) = (scratch.dContext, scratch.dQKV, scratch.dScores)
        proj.backward(dy, into: dContext)
        dQKV.reshape([b, t, 3 * c])
        if usedBF16 && attendBackwardBF16() { qkv.backward(dQKV, into: dx); return }
        if qkvOutShared { qkv.recompute(into: qkvOut) }
        // One scratch slice per worker: read the worker count once, so a concurrent
        // set_num_threads cannot make the split exceed the slices.
        let workers = workerCount
        dScores.reshape([workers, t, t])
        let base = qkvOut.data, ps = probs.data, dctx = dContext.data, dq = dQKV.data
        let scratch = dScores.data, s = scale
        parallelWorkers(b * hN, minPerChunk: 1, workers: workers) { range, worker in
          for bh in range {
            let bi = bh / hN, h = bh % hN
            let q = base + bi * t * 3 * c + h * d
            let k = q + c, v = q + 2 * c
            let gq = dq + bi * t * 3 * c + h * d
            let gk = gq + c, gv = gq + 2 * c
            let p = ps + bh * t * t
            let dO = dctx + bi * t * c + h * d
            let dp = scratch + worker * t * t
            // dV = P^T dO, dP = dO V^T.
            serialGemm(transA: true, m: t, n: d, k: t, a: p, b: dO, ldb: c, c: gv, ldc: 3 * c)
            serialGemm(transB: true, m: t, n: t, k: d, a: dO, lda: c, b: v, ldb: 3 * c, c: dp)
            // dS = P * (dP - rowsum(dP * P)), folded with the scale of the scores.
            for r in 0..<t {
                let pr = p + r * t, dr = dp + r * t
                let dot = laneDot(pr, dr, t)
                for j in 0..<t { dr[j] = s * pr[j] * (dr[j] - dot) }
            }
            // dQ = dS K, dK = dS^T Q.
            serialGemm(m: t, n: d, k: t, a: dp, b: k, ldb: 3 * c, c: gq, ldc: 3 * c)
            serialGemm(transA: true, m: t, n: d, k: t, a: dp, b: q, ldb: 3 * c, c: gk, ldc: 3 * c)
          }
        }
        qkv.backward(dQKV, into: dx)
    }
}

/// What an attention forward writes and its backward reads: (B, T, 3C) qkv outputs, (B, H, T, T)
/// softmax rows, (B, T, C) context; for bf16, the bf16 copies of Q, K, V and of the
/// probabilities, (B * H, T, headDim or T).
public final class AttentionActivations {
    let qkvOut = Tensor([0]), probs = Tensor([0]), context = Tensor([0])
    let qHeads = BF16Buffer(), kHeads = BF16Buffer(), vHeads = BF16Buffer(), probsBF16 = BF16Buffer()

    public init() {}
}

/// p <- softmax(p) over a row of n.
@inline(__always)
func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
    softmaxRow(p, n) { j, value in p[j] = value }
}

/// p <- softmax(p), also rounded to bf16 into out: a bf16 product's operand.
@inline(__always)
func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int, bf16 out: UnsafeMutablePointer<UInt16>) {
    softmaxRow(p, n) { j, value in p[j] = value; out[j] = bf16Bits(value) }
}

@inline(__always)
private func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int, store: (Int, Float) -> Void) {
    // Max and sum run on 16 independent lanes: a single accumulator is a serial dependency
    // chain that keeps the loop from vectorizing.
    let lanes = n / 16 * 16
    var maxes = SIMD16<Float>(repeating: -.infinity)
    for j in stride(from: 0, to: lanes, by: 16) { maxes = lanewiseMax(maxes, loadSIMD16(p + j)) }
    var m = horizontalMax(maxes)
    for j in lanes..<n { m = max(m, p[j]) }
    for j in 0..<n { p[j] = fastExp(p[j] - m) }
    var sums = SIMD16<Float>()
    for j in stride(from: 0, to: lanes, by: 16) { sums += loadSIMD16(p + j) }
    var sum = horizontalSum(sums)
    for j in lanes..<n { sum += p[j] }
    let inv = 1 / sum
    for j in 0..<n { store(j, p[j] * inv) }
}
