/// Grid-wise cropping (ACE, DESIGN.md section 5).
///
/// The image (size S) is divided into a grid of cells. A fine view C1 covers n x n cells and a
/// coarse view C2 covers 2n x 2n cells; both are resized to the encoder input, so with
/// n = input / patch a C1 token is exactly one cell and a C2 token exactly 2 x 2 cells. C1's
/// origin lies an even number of cells from C2's, so each C2 token covers exactly four C1
/// tokens and each 2 x 2 block of C1 tokens (a composed token) exactly one C2 token.
///
/// All token indices are row-major with row = y (the encoder's order). Cell coordinates are
/// (x to the right, y down).
import Glibc

public struct GridConfig: Settings, Equatable {
    public var imageSize = 512
    public var gridCells = 32
    public var fineCells = 14
    public var inputSize = 224
    /// Minimum overlap of the two views, in C2 tokens per axis.
    public var minOverlap = 4
    /// Target window k x k (in the units of the compared tokens) and Gaussian sigma.
    public var window = 3
    public var sigma: Float = 1
    /// The decomposition target's window; 0 means `window` (the paper). The authors' code
    /// uses 5 for decomposition and 3 for composition.
    public var decompWindow = 0

    public init() {}

    public var cell: Int { imageSize / gridCells }
    public var coarseCells: Int { 2 * fineCells }
    /// Tokens per view side (= fineCells) and per view.
    public var side: Int { fineCells }
    public var tokens: Int { fineCells * fineCells }
    public var composed: Int { (fineCells / 2) * (fineCells / 2) }
    public var decomposed: Int { coarseCells * coarseCells }

    public func validate(patch: Int) throws {
        try Limits.require(imageSize, in: 1...Limits.gridImageSide, "grid.image_size")
        try Limits.require(gridCells, in: 1...imageSize, "grid.grid_cells")
        try Limits.require(inputSize, in: 1...Limits.inputSide, "grid.input_size")
        try Limits.require(window, in: 1...(4 * fineCells + 1), "grid.window")
        try require(gridCells > 0 && imageSize > 0 && imageSize % gridCells == 0,
                    "image_size \(imageSize) must be a positive multiple of grid_cells \(gridCells)")
        try require(fineCells >= 2 && fineCells % 2 == 0, "fine_cells must be even and at least 2, got \(fineCells)")
        try require(coarseCells <= gridCells,
                    "the coarse view (2 x fine_cells = \(coarseCells) cells) must fit in the grid of \(gridCells)")
        try require(inputSize == fineCells * patch,
                    "input_size \(inputSize) must equal fine_cells x patch size (\(fineCells) x \(patch)) "
                    + "so a fine token is one cell")
        try require(minOverlap >= 1 && 2 * minOverlap <= fineCells,
                    "min_overlap must be in 1...\(fineCells / 2) C2 tokens, got \(minOverlap)")
        try require(window >= 1 && window % 2 == 1, "window must be odd and positive, got \(window)")
        try Limits.require(decompWindow, in: 0...(4 * fineCells + 1), "grid.decomp_window")
        try require(decompWindow == 0 || decompWindow % 2 == 1,
                    "grid.decomp_window must be odd (or 0: the same as window), got \(decompWindow)")
        // Targets are exp(-d^2 / (2 sigma^2)): a sigma whose square underflows makes them NaN.
        try require(sigma >= 1e-3 && sigma <= 1e3, "grid.sigma must be in [0.001, 1000] token units, got \(sigma)")
    }
}

public struct GridCrop {
    public let config: GridConfig
    /// Origins in cells.
    public let c1: (x: Int, y: Int)
    public let c2: (x: Int, y: Int)

    public init(config: GridConfig, c1: (x: Int, y: Int), c2: (x: Int, y: Int)) {
        self.config = config
        self.c1 = c1
        self.c2 = c2
    }

    /// Valid C1 origins along one axis for a C2 origin: even offset, inside the grid, and an
    /// overlap of at least minOverlap C2 tokens (2 * minOverlap cells).
    static func fineOrigins(coarse o2: Int, _ g: GridConfig) -> [Int] {
        stride(from: 0, through: g.gridCells - g.fineCells, by: 1).filter { o1 in
            let overlap = min(o1 + g.fineCells, o2 + g.coarseCells) - max(o1, o2)
            return (o1 - o2) % 2 == 0 && overlap >= 2 * g.minOverlap
        }
    }

    /// Uniform C2 origin, then a uniform valid C1 origin per axis.
    public static func sample(_ g: GridConfig, rng: inout RNG) -> GridCrop {
        let span = g.gridCells - g.coarseCells + 1
        let x2 = rng.int(span), y2 = rng.int(span)
        let xs = fineOrigins(coarse: x2, g), ys = fineOrigins(coarse: y2, g)
        return GridCrop(config: g, c1: (xs[rng.int(xs.count)], ys[rng.int(ys.count)]), c2: (x2, y2))
    }

    /// Boxes in pixels of the resized image: (x0, y0, x1, y1), end exclusive.
    public var c1Box: (x0: Int, y0: Int, x1: Int, y1: Int) {
        let m = config.cell, n = config.fineCells
        return (c1.x * m, c1.y * m, (c1.x + n) * m, (c1.y + n) * m)
    }

    public var c2Box: (x0: Int, y0: Int, x1: Int, y1: Int) {
        let m = config.cell, n = config.coarseCells
        return (c2.x * m, c2.y * m, (c2.x + n) * m, (c2.y + n) * m)
    }

    /// O1: C1 tokens (one cell each) inside C2.
    public var o1: [Bool] {
        let n = config.fineCells, nc = config.coarseCells
        return (0..<(n * n)).map { i in
            let cy = c1.y + i / n, cx = c1.x + i % n
            return cy >= c2.y && cy < c2.y + nc && cx >= c2.x && cx < c2.x + nc
        }
    }

    /// O2: C2 tokens (2 x 2 cells each, never straddling C1's edge thanks to the parity) inside C1.
    public var o2: [Bool] {
        let n = config.fineCells
        return (0..<(n * n)).map { i in
            let cy = c2.y + 2 * (i / n), cx = c2.x + 2 * (i % n)
            return cy >= c1.y && cy + 2 <= c1.y + n && cx >= c1.x && cx + 2 <= c1.x + n
        }
    }

    /// Gaussian of the offset (in units of the compared tokens) inside the k x k window, else 0.
    private func target(_ dx: Int, _ dy: Int, window: Int) -> Float {
        let r = window / 2
        guard abs(dx) <= r && abs(dy) <= r else { return 0 }
        let s = config.sigma
        return expf(-Float(dx * dx + dy * dy) / (2 * s * s))
    }

    /// Composition target (tokens x composed): row i = teacher C2 token, column j = composed
    /// block of 2 x 2 C1 tokens; offsets in composed-token units (2 cells). Rows of C2 tokens
    /// outside the overlap are zero.
    public var compositionTarget: [Float] {
        let n = config.fineCells, h = n / 2
        let inside = o2
        var t = [Float](repeating: 0, count: n * n * h * h)
        for i in 0..<(n * n) where inside[i] {
            let cy = c2.y + 2 * (i / n), cx = c2.x + 2 * (i % n)
            for j in 0..<(h * h) {
                let by = c1.y + 2 * (j / h), bx = c1.x + 2 * (j % h)
                t[i * h * h + j] = target((cx - bx) / 2, (cy - by) / 2, window: config.window)
            }
        }
        return t
    }

    /// Decomposition target (tokens x decomposed): row i = teacher C1 token, column j = one of
    /// the (2n)^2 sub-tokens a C2 token splits into (sub-token (u, v) is cell (c2.y + u, c2.x + v));
    /// offsets in C1-token units (1 cell). Rows of C1 tokens outside the overlap are zero.
    public var decompositionTarget: [Float] {
        let n = config.fineCells, nc = config.coarseCells
        let window = config.decompWindow > 0 ? config.decompWindow : config.window
        let inside = o1
        var t = [Float](repeating: 0, count: n * n * nc * nc)
        for i in 0..<(n * n) where inside[i] {
            let cy = c1.y + i / n, cx = c1.x + i % n
            for j in 0..<(nc * nc) {
                t[i * nc * nc + j] = target(cx - (c2.x + j % nc), cy - (c2.y + j / nc), window: window)
            }
        }
        return t
    }
}
