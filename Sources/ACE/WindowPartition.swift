/// Window partition with an optional cyclic shift, as a permutation of a grid's tokens.
///
/// timm rolls the (H, W) grid by (-shift, -shift), then cuts it into windows ordered
/// row-major (window rows, then window columns), each window's tokens row-major. Both steps
/// only reorder tokens, so together they are one permutation: window token j of the
/// partition is grid token `source[j]`. Partition gathers by it, window reverse (with the
/// roll back) scatters by it, and each one's backward is the other.
public struct WindowPartition {
    public let side: Int, window: Int, shift: Int
    /// source[j]: the grid token (row-major in the unshifted grid) at window position j.
    public let source: [Int]

    public init(side: Int, window: Int, shift: Int) {
        precondition(side % window == 0 && shift >= 0 && shift < window)
        self.side = side; self.window = window; self.shift = shift
        let perSide = side / window
        var src = [Int](repeating: 0, count: side * side)
        var j = 0
        for wy in 0..<perSide {
            for wx in 0..<perSide {
                for ty in 0..<window {
                    for tx in 0..<window {
                        // roll(x, -shift)[y] = x[y + shift]
                        let y = (wy * window + ty + shift) % side, x = (wx * window + tx + shift) % side
                        src[j] = y * side + x
                        j += 1
                    }
                }
            }
        }
        source = src
    }

    public var windowsPerImage: Int { (side / window) * (side / window) }
    public var windowArea: Int { window * window }

    /// (B, side*side, C) grid -> (B * windows, window*window, C).
    public func partition(_ x: Tensor, into y: Tensor) {
        let b = x.shape[0], c = x.shape[2], t = side * side
        y.reshape([b * windowsPerImage, windowArea, c])
        move(b, c, t) { i, j in (y.data + (i * t + j) * c).update(from: x.data + (i * t + source[j]) * c, count: c) }
    }

    /// (B * windows, window*window, C) -> (B, side*side, C): the inverse of `partition`.
    public func reverse(_ x: Tensor, into y: Tensor) {
        let t = side * side, b = x.count / (t * x.shape[x.shape.count - 1]), c = x.shape[x.shape.count - 1]
        y.reshape([b, t, c])
        move(b, c, t) { i, j in (y.data + (i * t + source[j]) * c).update(from: x.data + (i * t + j) * c, count: c) }
    }

    private func move(_ b: Int, _ c: Int, _ t: Int, _ body: (Int, Int) -> Void) {
        parallelChunks(b * t, minPerChunk: max(16, 16384 / max(c, 1))) { range in
            for r in range { body(r / t, r % t) }
        }
    }

    /// timm's shifted-window mask (nW, N, N): 0 where two tokens of a window come from the same
    /// region of the rolled grid, -100 where the roll brought together tokens that are not
    /// neighbours in the image. nil without a shift.
    public func attentionMask() -> Tensor? {
        guard shift > 0 else { return nil }
        // Regions of the rolled grid along one axis: [0, side - window), [side - window,
        // side - shift), [side - shift, side).
        func region(_ p: Int) -> Int { p < side - window ? 0 : (p < side - shift ? 1 : 2) }
        let perSide = side / window, n = windowArea
        let mask = Tensor([windowsPerImage, n, n])
        for wy in 0..<perSide {
            for wx in 0..<perSide {
                let w = wy * perSide + wx
                let label = (0..<n).map { i in
                    region(wy * window + i / window) * 3 + region(wx * window + i % window)
                }
                for i in 0..<n {
                    for j in 0..<n { mask[(w * n + i) * n + j] = label[i] == label[j] ? 0 : -100 }
                }
            }
        }
        return mask
    }
}

/// timm's relative position index of a window x window window: for tokens i = (yi, xi) and
/// j = (yj, xj), (yi - yj + w - 1) * (2w - 1) + (xi - xj + w - 1), a row of the
/// ((2w-1)^2, heads) bias table.
public func relativePositionIndex(window w: Int) -> [Int] {
    let n = w * w
    var index = [Int](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in 0..<n {
            index[i * n + j] = (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1)
        }
    }
    return index
}
