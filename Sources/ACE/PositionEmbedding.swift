import FoundationEssentials
import Glibc

/// The class token and the learned absolute position embedding (1, 1 + g*g, C).
/// For a token grid other than g x g, the grid part is resized bicubically (PyTorch's
/// F.interpolate(mode="bicubic", align_corners=False), as DINO does), written as a linear
/// map so its backward is the transposed map.
public final class PositionEmbedding {
    public let cls: Parameter       // cls_token (1, 1, C)
    public let pos: Parameter       // pos_embed (1, 1 + g*g, C)
    public let grid: Int, dim: Int
    private var resample: (h: Int, w: Int, matrix: Tensor)?   // (h*w, g*g)
    private let resampled = Tensor([0])                       // (h*w, C)
    private var outputGrid = (0, 0)

    public init(grid: Int, dim: Int) {
        self.grid = grid
        self.dim = dim
        cls = Parameter("cls_token", [1, 1, dim], decays: false)
        pos = Parameter("pos_embed", [1, 1 + grid * grid, dim], decays: false)
    }

    public var parameters: [Parameter] { [cls, pos] }

    public func initialize(_ rng: inout RNG) {
        for i in 0..<pos.count { pos.value[i] = rng.truncatedNormal(std: 0.02) }
        for i in 0..<cls.count { cls.value[i] = rng.truncatedNormal(std: 1e-6) }
    }

    /// patches (B, h*w, C) -> y (B, 1 + h*w, C) = [cls; patches] + pos.
    public func forward(_ patches: Tensor, h: Int, w: Int, into y: Tensor) {
        let b = patches.shape[0], c = dim, n = h * w
        outputGrid = (h, w)
        let gridPos = gridPositions(h: h, w: w)
        y.reshape([b, 1 + n, c])
        let ys = y.data, xs = patches.data, cl = cls.value.data, p0 = pos.value.data
        for bi in 0..<b {
            let row = ys + bi * (1 + n) * c
            for j in 0..<c { row[j] = cl[j] + p0[j] }
            let src = xs + bi * n * c, dst = row + c
            for i in 0..<(n * c) { dst[i] = src[i] + gridPos[i] }
        }
    }

    /// dy (B, 1 + h*w, C) -> dpatches (B, h*w, C); accumulates d cls and d pos.
    public func backward(_ dy: Tensor, into dpatches: Tensor) {
        let b = dy.shape[0], c = dim, n = outputGrid.0 * outputGrid.1
        dpatches.reshape([b, n, c])
        let dys = dy.data, dx = dpatches.data
        let dcls = cls.grad.data, dpos = pos.grad.data
        resampled.reshape([n, c]); resampled.zero()
        let dgrid = resampled.data
        for bi in 0..<b {
            let row = dys + bi * (1 + n) * c
            for j in 0..<c { dcls[j] += row[j]; dpos[j] += row[j] }
            (dx + bi * n * c).update(from: row + c, count: n * c)
            for i in 0..<(n * c) { dgrid[i] += row[c + i] }
        }
        if let r = resample, (r.h, r.w) == outputGrid {
            gemm(transA: true, m: grid * grid, n: c, k: n, a: r.matrix.data, b: dgrid,
                 beta: 1, c: dpos + c)
        } else {
            for i in 0..<(n * c) { dpos[c + i] += dgrid[i] }
        }
    }

    /// The grid part of the position embedding for an h x w token grid, (h*w, C).
    private func gridPositions(h: Int, w: Int) -> UnsafeMutablePointer<Float> {
        let stored = pos.value.data + dim
        if h == grid && w == grid { return stored }
        if resample == nil || resample!.h != h || resample!.w != w {
            resample = (h, w, Self.resampleMatrix(from: grid, to: (h, w)))
        }
        resampled.reshape([h * w, dim])
        gemm(m: h * w, n: dim, k: grid * grid, a: resample!.matrix.data, b: stored, c: resampled.data)
        return resampled.data
    }

    /// kron(rows, cols): entry [(y*w + x), (i*g + j)] = Wy[y, i] * Wx[x, j].
    static func resampleMatrix(from g: Int, to size: (Int, Int)) -> Tensor {
        let wy = bicubicMatrix(g, size.0), wx = bicubicMatrix(g, size.1)
        let (h, w) = size
        let m = Tensor([h * w, g * g])
        for y in 0..<h { for x in 0..<w { for i in 0..<g { for j in 0..<g {
            m[(y * w + x) * g * g + i * g + j] = Float(wy[y * g + i] * wx[x * g + j])
        } } } }
        return m
    }

    /// The (nOut, nIn) matrix of 1-D cubic convolution (A = -0.75), source coordinate
    /// (dst + 0.5) * nIn / nOut - 0.5, neighbours clamped to the border.
    static func bicubicMatrix(_ nIn: Int, _ nOut: Int) -> [Double] {
        let a = -0.75
        func near(_ t: Double) -> Double { ((a + 2) * t - (a + 3)) * t * t + 1 }        // |t| <= 1
        func far(_ t: Double) -> Double { ((a * t - 5 * a) * t + 8 * a) * t - 4 * a }  // 1 < |t| < 2
        var m = [Double](repeating: 0, count: nOut * nIn)
        let scale = Double(nIn) / Double(nOut)
        for o in 0..<nOut {
            let src = (Double(o) + 0.5) * scale - 0.5
            let i0 = Int(src.rounded(.down))
            let t = src - Double(i0)
            let weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            for (k, wgt) in weights.enumerated() {
                let idx = min(max(i0 - 1 + k, 0), nIn - 1)
                m[o * nIn + idx] += wgt
            }
        }
        return m
    }
}
