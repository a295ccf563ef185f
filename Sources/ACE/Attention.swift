/// Multi-head self-attention with a fused qkv projection, as timm's Attention.
/// The 3C qkv outputs are ordered (3, heads, headDim); softmax(Q K^T / sqrt(d)) V per head.
/// The per-(sample, head) products are small: each worker takes whole heads, serially.
public final class Attention {
    public let qkv: Linear, proj: Linear
    public let dim: Int, heads: Int, headDim: Int
    private let scale: Float
    private let qkvOut = Tensor([0])    // (B, T, 3C)
    private let probs = Tensor([0])     // (B, H, T, T) softmax rows
    private let context = Tensor([0])   // (B, T, C) heads concatenated
    private let scratch: BackwardScratch
    private var batch = 0, tokens = 0

    public init(_ name: String, _ dim: Int, heads: Int, scratch: BackwardScratch = BackwardScratch()) {
        self.scratch = scratch
        self.dim = dim
        self.heads = heads
        headDim = dim / heads
        scale = 1 / Float(headDim).squareRoot()
        qkv = Linear("\(name).qkv", dim, 3 * dim)
        proj = Linear("\(name).proj", dim, dim)
    }

    public var parameters: [Parameter] { qkv.parameters + proj.parameters }

    public func forward(_ x: Tensor, into y: Tensor) {
        let b = x.shape[0], t = x.shape[1], c = dim, d = headDim, hN = heads
        batch = b; tokens = t
        qkv.forward(x, into: qkvOut)
        probs.reshape([b, hN, t, t]); context.reshape([b, t, c])
        let base = qkvOut.data, ps = probs.data, ctx = context.data, s = scale
        parallelWorkers(b * hN, minPerChunk: 1) { range, _ in
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
        proj.forward(context, into: y)
    }

    public func backward(_ dy: Tensor, into dx: Tensor) {
        let b = batch, t = tokens, c = dim, d = headDim, hN = heads
        let (dContext, dQKV, dScores) = (scratch.dContext, scratch.dQKV, scratch.dScores)
        proj.backward(dy, into: dContext)
        dQKV.reshape([b, t, 3 * c])
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
                var dot: Float = 0
                for j in 0..<t { dot += pr[j] * dr[j] }
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

@inline(__always)
func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for j in 0..<n { m = max(m, p[j]) }
    var sum: Float = 0
    for j in 0..<n { let e = fastExp(p[j] - m); p[j] = e; sum += e }
    let inv = 1 / sum
    for j in 0..<n { p[j] *= inv }
}
