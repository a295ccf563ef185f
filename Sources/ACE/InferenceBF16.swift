/// A block's inference forward in bf16, with every product's epilogue fused into oneDNN's
/// kernel and the activations handed from one product to the next in bf16.
///
/// The bf16 training forward rounds each product's operands to bf16 from fp32 copies: the
/// LayerNorm output, the qkv output (plus its bias, added in a pass of its own), the attention
/// context, the GELU output. Here LayerNorm and softmax write bf16 directly; qkv, P V and fc1
/// (with its GELU) store bf16; the biases and the residual additions happen in the kernels.
/// The rounding points are the same (each product's operands), so the result matches the
/// training forward up to fp32 rounding order and oneDNN's erf. Only the residual stream and
/// the attention scores are fp32.
///
/// Each half of the block changes x only in its last product, the residual sum, so a half that
/// oneDNN cannot run leaves x untouched and is computed again by the fp32-output path.
extension Block {
    /// x += attn(norm1(x)) in bf16; false (x untouched) if a product could not run.
    func inferAttentionBF16(_ x: Tensor, shared s: InferenceScratch) -> Bool {
        let rows = x.count / norm1.dim
        s.normedBF16.reserve(rows * norm1.dim)
        norm1.forward(x, intoBF16: s.normedBF16.data)
        return attn.inferBF16(s.normedBF16.data, batch: x.shape[0], tokens: x.shape[1], residual: x, shared: s)
    }

    /// x += mlp(norm2(x)) in bf16; false (x untouched) if a product could not run.
    func inferMLPBF16(_ x: Tensor, shared s: InferenceScratch) -> Bool {
        let rows = x.count / norm2.dim
        s.normedBF16.reserve(rows * norm2.dim)
        norm2.forward(x, intoBF16: s.normedBF16.data)
        s.wide.reserve(rows * mlp.fc1.outFeatures)
        return mlp.fc1.productBF16(s.normedBF16.data, rows: rows, into: UnsafeMutableRawPointer(s.wide.data),
                                   epilogue: Epilogue(gelu: true, bf16Output: true))
            && mlp.fc2.productBF16(s.wide.data, rows: rows, into: UnsafeMutableRawPointer(x.data),
                                   epilogue: Epilogue(), accumulate: true)
    }
}

extension Attention {
    /// residual += proj(softmax(Q K^T * scale) V) for bf16 normed rows (B * T, C).
    func inferBF16(_ normed: UnsafePointer<UInt16>, batch b: Int, tokens t: Int, residual x: Tensor,
                   shared s: InferenceScratch) -> Bool {
        let (c, d, hN) = (dim, headDim, heads)
        let rows = b * t, bh = b * hN
        let a = s.attention
        acts = a   // what `probs` reads (the last block's attention maps)
        s.wide.reserve(rows * 3 * c)
        guard qkv.productBF16(normed, rows: rows, into: UnsafeMutableRawPointer(s.wide.data),
                            epilogue: Epilogue(bf16Output: true)) else { return false }
        let (q, k, v) = (a.qHeads, a.kHeads, a.vHeads)
        for (part, buffer) in [q, k, v].enumerated() {
            buffer.reserve(bh * t * d)
            copyHeads(UnsafePointer(s.wide.data), buffer.data, batch: b, tokens: t, heads: hN, headDim: d,
                      rowStride: 3 * c, offset: part * c, intoHeads: true)
        }
        let perHead = Strides.dense(rows: t, cols: d), square = Strides.dense(rows: t, cols: t)
        a.probs.reshape([b, hN, t, t])
        guard bf16Matmul(batch: bh, m: t, n: t, k: d, alpha: scale, a: q.data, perHead,
                         b: k.data, .dense(rows: d, cols: t, transposed: true), c: a.probs.data, square)
        else { return false }
        a.probsBF16.reserve(bh * t * t)
        let scores = a.probs.data, probs = a.probsBF16.data
        parallelChunks(bh * t, minPerChunk: 64) { rows in
            for r in rows { softmaxRow(scores + r * t, t, bf16: probs + r * t) }
        }
        // The per-head outputs overwrite Q, which is no longer needed.
        guard bf16Matmul(batch: bh, m: t, n: d, k: t, a: probs, square, b: v.data, perHead,
                         output: UnsafeMutableRawPointer(q.data), perHead, epilogue: Epilogue(bf16Output: true))
        else { return false }
        s.contextBF16.reserve(rows * c)
        copyHeads(UnsafePointer(q.data), s.contextBF16.data, batch: b, tokens: t, heads: hN, headDim: d,
                  rowStride: c, offset: 0, intoHeads: false)
        return proj.productBF16(s.contextBF16.data, rows: rows, into: UnsafeMutableRawPointer(x.data),
                              epilogue: Epilogue(), accumulate: true)
    }
}

/// Copies between (B, T, rowStride) rows and dense per-head (B * H, T, headDim) matrices:
/// into the heads (`intoHeads`) from the head columns at `offset`, or back.
func copyHeads<Element>(_ src: UnsafePointer<Element>, _ dst: UnsafeMutablePointer<Element>, batch: Int,
                        tokens: Int, heads: Int, headDim: Int, rowStride: Int, offset: Int, intoHeads: Bool) {
    parallelChunks(batch * heads, minPerChunk: 1) { range in
        for bh in range {
            let (i, h) = (bh / heads, bh % heads)
            for r in 0..<tokens {
                let row = (i * tokens + r) * rowStride + offset + h * headDim
                let head = (bh * tokens + r) * headDim
                if intoHeads {
                    (dst + head).update(from: src + row, count: headDim)
                } else {
                    (dst + row).update(from: src + head, count: headDim)
                }
            }
        }
    }
}
