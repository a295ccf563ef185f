import Glibc

/// AdamW (decoupled weight decay, PyTorch's formulation) over a list of parameters, with
/// the moment buffers kept per parameter so they can be checkpointed.
public final class AdamW {
    public let parameters: [Parameter]
    public let m: [Tensor], v: [Tensor]
    public var beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    /// Number of `step` calls.
    public var t = 0
    /// Updates each parameter has received (its bias correction): t, less the steps it sat
    /// out frozen.
    public var counts: [Int]
    /// Whether weight decay applies, per parameter: `Parameter.decays` unless changed (DINO's
    /// parameter groups also decay the class token and the position embedding).
    public var decays: [Bool]

    public init(_ parameters: [Parameter]) {
        self.parameters = parameters
        m = parameters.map { Tensor($0.shape) }
        v = parameters.map { Tensor($0.shape) }
        counts = Array(repeating: 0, count: parameters.count)
        decays = parameters.map(\.decays)
    }

    /// p <- p - lr * wd * p (weight matrices only), then the Adam update. Parameters in
    /// `frozen` are left entirely alone, as PyTorch's AdamW skips a parameter without a
    /// gradient: no decay, no moment update, no count (DINO's frozen last layer).
    public func step(lr: Float, weightDecay: Float, frozen: [Parameter] = []) {
        t += 1
        let (b1, b2, eps) = (beta1, beta2, eps)
        for (i, p) in parameters.enumerated() where !frozen.contains(where: { $0 === p }) {
            counts[i] += 1
            let c1 = 1 - pow(beta1, Float(counts[i])), c2 = 1 - pow(beta2, Float(counts[i]))
            let decay = decays[i] ? 1 - lr * weightDecay : 1
            let w = p.value.data, g = p.grad.data, ms = m[i].data, vs = v[i].data
            let rule = AdamRule(b1: b1, b2: b2, c1: c1, c2: c2, eps: eps, lr: lr, decay: decay)
            parallelChunks(p.count, minPerChunk: 16384) { range in
                // 16 values at a time through SIMD16 (the compiler cannot tell that the four
                // buffers do not overlap, and leaves a plain loop scalar); the tail goes
                // through the same lanes, padded.
                var j = range.lowerBound
                while j + 16 <= range.upperBound {
                    var (wj, mj, vj) = (loadSIMD16(w + j), loadSIMD16(ms + j), loadSIMD16(vs + j))
                    rule.update(&wj, &mj, &vj, gradient: loadSIMD16(g + j))
                    storeSIMD16(wj, w + j); storeSIMD16(mj, ms + j); storeSIMD16(vj, vs + j)
                    j += 16
                }
                guard j < range.upperBound else { return }
                var (wj, mj, vj, gj) = (SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>())
                for k in 0..<(range.upperBound - j) {
                    (wj[k], mj[k], vj[k], gj[k]) = (w[j + k], ms[j + k], vs[j + k], g[j + k])
                }
                rule.update(&wj, &mj, &vj, gradient: gj)
                for k in 0..<(range.upperBound - j) { (w[j + k], ms[j + k], vs[j + k]) = (wj[k], mj[k], vj[k]) }
            }
        }
    }
}

/// One AdamW update of 16 weights: m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
/// w <- w decay - lr (m / c1) / (sqrt(v / c2) + eps), in PyTorch's order of operations.
private struct AdamRule {
    let b1: Float, b2: Float, c1: Float, c2: Float, eps: Float, lr: Float, decay: Float

    @inline(__always)
    func update(_ w: inout SIMD16<Float>, _ m: inout SIMD16<Float>, _ v: inout SIMD16<Float>,
                gradient g: SIMD16<Float>) {
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        let mHat = m / c1, vHat = v / c2
        w = w * decay - lr * mHat / (vHat.squareRoot() + eps)
    }
}

/// Gradient clipping. Per tensor (DINO's clip_gradients): each parameter's gradient is scaled
/// by clip / (norm + 1e-6) when its norm exceeds clip. Global: all gradients together.
/// Returns the global norm before clipping.
@discardableResult
public func clipGradients(_ parameters: [Parameter], maxNorm: Float, perTensor: Bool) -> Float {
    let norms = parameters.map { squaredNorm($0.grad.data, $0.count) }
    let global = Float(norms.reduce(0, +).squareRoot())
    guard maxNorm > 0 else { return global }
    for (p, sq) in zip(parameters, norms) {
        let norm = perTensor ? Float(sq.squareRoot()) : global
        let coef = maxNorm / (norm + 1e-6)
        if coef < 1 {
            let g = p.grad.data
            parallelChunks(p.count, minPerChunk: 1 << 16) { range in for j in range { g[j] *= coef } }
        }
    }
    return global
}

/// Sum of squares in Double over fixed blocks, summed in order: the same result for any
/// number of threads (a resumed run may use another).
func squaredNorm(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    let block = 1 << 14, blocks = (n + block - 1) / block
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { sums in
        parallelChunks(blocks, minPerChunk: 4) { range in
            for b in range {
                var s = 0.0
                for j in (b * block)..<min(n, (b + 1) * block) { s += Double(x[j]) * Double(x[j]) }
                sums[b] = s
            }
        }
    }
    return partial.reduce(0, +)
}

/// teacher <- momentum * teacher + (1 - momentum) * student, tensor by tensor.
public func emaUpdate(teacher: [Parameter], student: [Parameter], momentum: Float) {
    for (t, s) in zip(teacher, student) {
        let tv = t.value.data, sv = s.value.data
        parallelChunks(t.count, minPerChunk: 16384) { range in
            for j in range { tv[j] = momentum * tv[j] + (1 - momentum) * sv[j] }
        }
    }
}
