/// The composition / decomposition matching loss (DESIGN.md section 5), per sample:
///   M[i, j] = sigmoid(s * cos(y[i], z[j])),  y = teacher tokens (no gradient), z = student's
///   composed or decomposed tokens, and the loss is the mean over all entries of
///   [alpha T + (1 - alpha)(1 - T)] * BCE(M, T) for the geometric target T.
/// With u = s cos, BCE(M, T) = softplus(u) - T u and dBCE/du = M - T.
public final class LocalMatchLoss {
    public let alpha: Float
    public let scale: Float
    private let scratch = Tensor([0])

    public init(alpha: Float, scale: Float) {
        self.alpha = alpha
        self.scale = scale
    }

    public struct Result {
        /// Mean loss over the batch.
        public var loss: Double
        /// Teacher rows (inside the overlap) whose best-scoring column is the target's peak.
        public var matched: Int
        public var rows: Int
        public var accuracy: Double { rows > 0 ? Double(matched) / Double(rows) : 0 }
    }

    /// teacher: B encoder outputs (prefix + N, C), the prefix (a ViT's class token) skipped;
    /// z: (B, Nz, C); targets[b]: N x Nz. Writes dz = weight * d(mean loss)/dz.
    public func callAsFunction(teacher: UnsafePointer<Float>, prefix: Int = 1, tokens n: Int, z: Tensor,
                               targets: [[Float]], weight: Float, dz: Tensor) -> Result {
        let b = z.shape[0], nz = z.shape[1], c = z.shape[2]
        dz.reshape(z.shape)
        // Per sample: normalized teacher (N x C), normalized z (Nz x C), z norms, scores (N x Nz),
        // one row of loss terms (Nz).
        let per = n * c + nz * c + nz + n * nz + nz
        scratch.reshape([b, per])
        var losses = [Double](repeating: 0, count: b)
        var matched = [Int](repeating: 0, count: b), rows = [Int](repeating: 0, count: b)
        let (alpha, s) = (alpha, scale)
        let gradScale = weight / Float(b * n * nz)
        losses.withUnsafeMutableBufferPointer { lossOut in
        matched.withUnsafeMutableBufferPointer { matchedOut in
        rows.withUnsafeMutableBufferPointer { rowsOut in
        parallelChunks(b, minPerChunk: 1) { range in
            for bi in range {
                let base = scratch.data + bi * per
                let yHat = base, zHat = base + n * c, zNorm = zHat + nz * c, g = zNorm + nz, terms = g + n * nz
                normalizeRows(teacher + (bi * (prefix + n) + prefix) * c, rows: n, dim: c, into: yHat, norms: nil)
                normalizeRows(z.data + bi * nz * c, rows: nz, dim: c, into: zHat, norms: zNorm)
                serialGemm(transB: true, m: n, n: nz, k: c, a: yHat, b: zHat, c: g)
                var loss = 0.0
                targets[bi].withUnsafeBufferPointer { t in
                    for i in 0..<n {
                        let row = g + i * nz, tr = t.baseAddress! + i * nz
                        // The row is overwritten by its gradient below: find the best score first.
                        var best = 0, bestTarget = 0, rowHasTarget = false
                        for j in 0..<nz {
                            if row[j] > row[best] { best = j }
                            if tr[j] > tr[bestTarget] { bestTarget = j }
                            if tr[j] > 0 { rowHasTarget = true }
                        }
                        // Branch-free, so that it vectorizes; the terms are summed on 16 lanes.
                        for j in 0..<nz {
                            let u = s * row[j], target = tr[j]
                            let e = fastExp(-abs(u))
                            let softplus = max(u, 0) + fastLog1p(e)
                            let m = (u >= 0 ? 1 : e) / (1 + e)
                            let w = alpha * target + (1 - alpha) * (1 - target)
                            terms[j] = w * (softplus - target * u)
                            row[j] = w * (m - target) * s * gradScale
                        }
                        let rowLoss = laneSum(terms, nz)
                        loss += Double(rowLoss)
                        if rowHasTarget {
                            rowsOut[bi] += 1
                            if best == bestTarget { matchedOut[bi] += 1 }
                        }
                    }
                }
                lossOut[bi] = loss / Double(n * nz)
                // d zHat = G^T yHat, then through the normalization of z.
                let dzb = dz.data + bi * nz * c
                serialGemm(transA: true, m: nz, n: c, k: n, a: g, b: yHat, c: dzb)
                normalizeBackward(dzb, normalized: zHat, norms: zNorm, rows: nz, dim: c)
            }
        }
        }
        }
        }
        return Result(loss: losses.reduce(0, +) / Double(b), matched: matched.reduce(0, +), rows: rows.reduce(0, +))
    }
}

/// Rows of x divided by their L2 norm (at least 1e-6, as a guard for zero rows).
func normalizeRows(_ x: UnsafePointer<Float>, rows: Int, dim: Int, into y: UnsafeMutablePointer<Float>,
                   norms: UnsafeMutablePointer<Float>?) {
    for r in 0..<rows {
        let xr = x + r * dim, yr = y + r * dim
        let ss = laneDot(xr, xr, dim)
        let norm = max(ss.squareRoot(), 1e-6)
        norms?[r] = norm
        let inv = 1 / norm
        for k in 0..<dim { yr[k] = xr[k] * inv }
    }
}

/// In place: d x = (d y - (d y . y) y) / |x| for y = x / |x|.
func normalizeBackward(_ g: UnsafeMutablePointer<Float>, normalized y: UnsafePointer<Float>,
                       norms: UnsafePointer<Float>, rows: Int, dim: Int) {
    for r in 0..<rows {
        let gr = g + r * dim, yr = y + r * dim
        let dot = laneDot(gr, yr, dim)
        let inv = 1 / norms[r]
        for k in 0..<dim { gr[k] = (gr[k] - dot * yr[k]) * inv }
    }
}
