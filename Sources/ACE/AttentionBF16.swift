/// The attention products in bf16: Q K^T and P V (and their gradients) for every (sample,
/// head) of the batch as one batched oneDNN product each, with bf16 operands and fp32
/// accumulation. Softmax and its gradient stay fp32. Each function returns false if oneDNN
/// could not run a product; the caller then takes the fp32 path, which recomputes everything.
extension Attention {
    /// softmax(Q K^T * scale) V for all heads, from qkvOut into probs and context.
    func attendBF16() -> Bool {
        let (b, t, c, d, hN) = (batch, tokens, dim, headDim, heads)
        let bh = b * hN, perHead = t * d
        for buffer in [qHeads, kHeads, vHeads] { buffer.reserve(bh * perHead) }
        for (part, buffer) in [qHeads, kHeads, vHeads].enumerated() {
            gatherHeads(qkvOut.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: 3 * c,
                        offset: part * c, into: buffer.data)
        }
        let heads = Strides.dense(rows: t, cols: d), square = Strides.dense(rows: t, cols: t)
        guard bf16Matmul(batch: bh, m: t, n: t, k: d, alpha: scale, a: qHeads.data, heads,
                         b: kHeads.data, .dense(rows: d, cols: t, transposed: true), c: probs.data, square)
        else { return false }
        let ps = probs.data
        parallelChunks(bh * t, minPerChunk: 64) { rows in for r in rows { softmaxRow(ps + r * t, t) } }
        probsBF16.reserve(bh * t * t)
        toBF16(probs.data, rows: bh * t, cols: t, ld: t, into: probsBF16.data)
        headProduct.reshape([bh, t, d])
        guard bf16Matmul(batch: bh, m: t, n: d, k: t, a: probsBF16.data, square, b: vHeads.data, heads,
                         c: headProduct.data, heads)
        else { return false }
        scatterHeads(headProduct.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: c, offset: 0,
                     into: context.data)
        return true
    }

    /// From d context (scratch.dContext) to dQKV: dV = P^T dO, dP = dO V^T,
    /// dS = scale * P * (dP - rowsum(dP * P)), dQ = dS K, dK = dS^T Q.
    func attendBackwardBF16() -> Bool {
        let (b, t, c, d, hN) = (batch, tokens, dim, headDim, heads)
        let bh = b * hN
        let heads = Strides.dense(rows: t, cols: d), square = Strides.dense(rows: t, cols: t)
        let squareT = Strides.dense(rows: t, cols: t, transposed: true)
        let dOut = dOutHeads
        dOut.reserve(bh * t * d)
        gatherHeads(scratch.dContext.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: c, offset: 0,
                    into: dOut.data)
        let dQKV = scratch.dQKV.data, g = headProduct
        g.reshape([bh, t, d])
        // dV = P^T dO
        guard bf16Matmul(batch: bh, m: t, n: d, k: t, a: probsBF16.data, squareT, b: dOut.data, heads,
                         c: g.data, heads) else { return false }
        scatterHeads(g.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: 3 * c, offset: 2 * c, into: dQKV)
        // dP = dO V^T, then dS in place (fp32, against the fp32 probabilities).
        let dScores = scratch.dScores
        dScores.reshape([bh, t, t])
        guard bf16Matmul(batch: bh, m: t, n: t, k: d, a: dOut.data, heads,
                         b: vHeads.data, .dense(rows: d, cols: t, transposed: true), c: dScores.data, square)
        else { return false }
        let ps = probs.data, dp = dScores.data, s = scale
        parallelChunks(bh * t, minPerChunk: 64) { rows in
            for r in rows {
                let pr = ps + r * t, dr = dp + r * t
                let dot = laneDot(pr, dr, t)
                for j in 0..<t { dr[j] = s * pr[j] * (dr[j] - dot) }
            }
        }
        toBF16(dScores.data, rows: bh * t, cols: t, ld: t, into: probsBF16.data)
        // dQ = dS K, dK = dS^T Q
        guard bf16Matmul(batch: bh, m: t, n: d, k: t, a: probsBF16.data, square, b: kHeads.data, heads,
                         c: g.data, heads) else { return false }
        scatterHeads(g.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: 3 * c, offset: 0, into: dQKV)
        guard bf16Matmul(batch: bh, m: t, n: d, k: t, a: probsBF16.data, squareT, b: qHeads.data, heads,
                         c: g.data, heads) else { return false }
        scatterHeads(g.data, batch: b, tokens: t, heads: hN, headDim: d, rowStride: 3 * c, offset: c, into: dQKV)
        return true
    }
}

/// dst[(i * heads + h), r, j] = bf16(src[i, r, offset + h * headDim + j]) for rows of
/// `rowStride` floats: the heads of (B, T, ...) rows as dense (B * H, T, headDim) matrices.
func gatherHeads(_ src: UnsafePointer<Float>, batch: Int, tokens: Int, heads: Int, headDim: Int,
                 rowStride: Int, offset: Int, into dst: UnsafeMutablePointer<UInt16>) {
    parallelChunks(batch * heads, minPerChunk: 1) { range in
        for bh in range {
            let (i, h) = (bh / heads, bh % heads)
            for r in 0..<tokens {
                let s = src + (i * tokens + r) * rowStride + offset + h * headDim
                let out = dst + (bh * tokens + r) * headDim
                for j in 0..<headDim { out[j] = bf16Bits(s[j]) }
            }
        }
    }
}

/// The inverse layout of `gatherHeads`, in fp32: dense (B * H, T, headDim) into the head
/// columns of (B, T, ...) rows.
func scatterHeads(_ src: UnsafePointer<Float>, batch: Int, tokens: Int, heads: Int, headDim: Int,
                  rowStride: Int, offset: Int, into dst: UnsafeMutablePointer<Float>) {
    copyHeads(src, dst, batch: batch, tokens: tokens, heads: heads, headDim: headDim, rowStride: rowStride,
              offset: offset, intoHeads: false)
}
