/// Multi-head self-attention inside windows, as timm's Swin WindowAttention:
/// softmax(scale Q K^T + B[h] + M[w]) V per (window, head), where B[h] (N, N) is gathered
/// from the learned `relative_position_bias_table` ((2w-1)^2, heads) by the relative position
/// index, and M[w] is the shifted-window mask of the window's position in the image (windows
/// are ordered image by image, so window b of the batch is at position b % nW).
///
/// Backward: with L = logits and P = softmax(L), dL = P * (dP - rowsum(dP * P));
/// dQ = scale dL K, dK = scale dL^T Q, and the table row index[i, j] of head h receives
/// the sum over windows of dL[., h, i, j].
public final class WindowAttention {
    public let qkv: Linear, proj: Linear
    public let relativePositionBiasTable: Parameter
    public let dim: Int, heads: Int, headDim: Int, window: Int
    let scale: Float
    let index: [Int]
    /// The layer's own activations, and the set the last forward used (a shared set for a
    /// forward that keeps nothing for backward).
    private let own = AttentionActivations()
    private var acts: AttentionActivations
    private var qkvOut: Tensor { acts.qkvOut }
    private var probs: Tensor { acts.probs }
    private var context: Tensor { acts.context }
    /// B gathered from the table, (heads, N, N), and its gradient.
    private let bias = Tensor([0]), dBias = Tensor([0])
    private var mask: Tensor?
    private let scratch: BlockScratch
    private var windows = 0

    public init(_ name: String, _ dim: Int, heads: Int, window: Int, scratch: BlockScratch = BlockScratch()) {
        self.dim = dim; self.heads = heads; self.window = window
        self.scratch = scratch
        acts = own
        headDim = dim / heads
        scale = 1 / Float(headDim).squareRoot()
        qkv = Linear("\(name).qkv", dim, 3 * dim)
        proj = Linear("\(name).proj", dim, dim)
        relativePositionBiasTable = Parameter("\(name).relative_position_bias_table",
                                              [(2 * window - 1) * (2 * window - 1), heads], decays: false)
        index = relativePositionIndex(window: window)
    }

    public var parameters: [Parameter] { [relativePositionBiasTable] + qkv.parameters + proj.parameters }

    public func initialize(_ rng: inout RNG, std: Float = 0.02) {
        qkv.initialize(&rng, std: std)
        proj.initialize(&rng, std: std)
        let t = relativePositionBiasTable.value
        for i in 0..<t.count { t[i] = rng.truncatedNormal(std: Double(std)) }
    }

    /// x: (B * nW, N, C) windows -> y (same shape). `mask` (nW, N, N) or nil; kept by
    /// reference for backward. With `shared` the activations go to that set and nothing is
    /// kept for backward (inference).
    public func forward(_ x: Tensor, mask: Tensor?, into y: Tensor, shared: AttentionActivations? = nil) {
        acts = shared ?? own
        let keep = shared == nil
        let bw = x.shape[0], n = x.shape[1], c = dim, d = headDim, hN = heads
        precondition(n == window * window)
        windows = bw
        self.mask = mask
        let nW = mask?.shape[0] ?? 1
        gatherBias()
        qkv.forward(x, into: qkvOut, keepInput: keep)
        probs.reshape([bw, hN, n, n]); context.reshape([bw, n, c])
        let base = qkvOut.data, ps = probs.data, ctx = context.data, s = scale
        let bs = bias.data, ms = mask?.data
        parallelChunks(bw * hN, minPerChunk: 1) { range in
            for bh in range {
                let bi = bh / hN, h = bh % hN
                let q = base + bi * n * 3 * c + h * d
                let k = q + c, v = q + 2 * c
                let p = ps + bh * n * n
                serialGemm(transB: true, m: n, n: n, k: d, alpha: s, a: q, lda: 3 * c, b: k, ldb: 3 * c, c: p)
                let bh0 = bs + h * n * n
                for e in 0..<(n * n) { p[e] += bh0[e] }
                if let ms {
                    let m0 = ms + (bi % nW) * n * n
                    for e in 0..<(n * n) { p[e] += m0[e] }
                }
                for r in 0..<n { softmaxRow(p + r * n, n) }
                serialGemm(m: n, n: d, k: n, a: p, b: v, ldb: 3 * c, c: ctx + bi * n * c + h * d, ldc: c)
            }
        }
        proj.forward(context, into: y, keepInput: keep)
    }

    /// bias[h, i, j] = table[index[i, j], h].
    private func gatherBias() {
        let n = window * window, hN = heads
        bias.reshape([hN, n, n])
        let t = relativePositionBiasTable.value.data
        for h in 0..<hN {
            for e in 0..<(n * n) { bias[h * n * n + e] = t[index[e] * hN + h] }
        }
    }

    public func backward(_ dy: Tensor, into dx: Tensor) {
        let bw = windows, n = window * window, c = dim, d = headDim, hN = heads
        let (dContext, dQKV, dLogits) = (scratch.dContext, scratch.dQKV, scratch.dScores)
        proj.backward(dy, into: dContext)
        dQKV.reshape([bw, n, 3 * c])
        // Every window's dL is kept: the bias gradient sums them over windows afterwards, in a
        // fixed order (deterministic for any number of threads).
        dLogits.reshape([bw, hN, n, n])
        let base = qkvOut.data, ps = probs.data, dctx = dContext.data, dq = dQKV.data
        let dls = dLogits.data, s = scale
        parallelChunks(bw * hN, minPerChunk: 1) { range in
            for bh in range {
                let bi = bh / hN, h = bh % hN
                let q = base + bi * n * 3 * c + h * d
                let k = q + c, v = q + 2 * c
                let gq = dq + bi * n * 3 * c + h * d
                let gk = gq + c, gv = gq + 2 * c
                let p = ps + bh * n * n
                let dO = dctx + bi * n * c + h * d
                let dl = dls + bh * n * n
                // dV = P^T dO, dP = dO V^T.
                serialGemm(transA: true, m: n, n: d, k: n, a: p, b: dO, ldb: c, c: gv, ldc: 3 * c)
                serialGemm(transB: true, m: n, n: n, k: d, a: dO, lda: c, b: v, ldb: 3 * c, c: dl)
                for r in 0..<n {
                    let pr = p + r * n, dr = dl + r * n
                    let dot = laneDot(pr, dr, n)
                    for j in 0..<n { dr[j] = pr[j] * (dr[j] - dot) }
                }
                // dQ = scale dL K, dK = scale dL^T Q.
                serialGemm(m: n, n: d, k: n, alpha: s, a: dl, b: k, ldb: 3 * c, c: gq, ldc: 3 * c)
                serialGemm(transA: true, m: n, n: d, k: n, alpha: s, a: dl, b: q, ldb: 3 * c, c: gk, ldc: 3 * c)
            }
        }
        // dB[h, i, j] = sum over windows of dL[w, h, i, j]; each entry summed in window order.
        dBias.reshape([hN, n, n])
        let db = dBias.data, per = hN * n * n
        parallelChunks(per, minPerChunk: 1024) { range in
            for e in range {
                var acc: Float = 0
                for w in 0..<bw { acc += dls[w * per + e] }
                db[e] = acc
            }
        }
        let gt = relativePositionBiasTable.grad.data
        for h in 0..<hN {
            for e in 0..<(n * n) { gt[index[e] * hN + h] += db[h * n * n + e] }
        }
        qkv.backward(dQKV, into: dx)
    }
}
