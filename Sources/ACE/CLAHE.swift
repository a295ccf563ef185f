/// Contrast-limited adaptive histogram equalization (Zuiderveld 1994, as OpenCV's CLAHE that
/// the ACE authors' augmentation pipeline applies through albumentations).
///
/// The image (values in [0, 1], quantized to 256 levels) is divided into tiles x tiles
/// regions. Each region's histogram is clipped at `clip` times its mean bin count, the clipped
/// excess spread evenly over all bins, and its cumulative distribution becomes that region's
/// intensity mapping. Every pixel takes the bilinear blend of the mappings of the four regions
/// whose centres surround it, so there are no seams at region borders.
func clahe(_ image: UnsafeMutablePointer<Float>, width: Int, height: Int, tiles: Int, clip: Float) {
    let levels = 256
    let tiles = max(1, min(tiles, width, height))
    // Region r along an axis of length n covers [r * n / tiles, (r + 1) * n / tiles).
    func bounds(_ r: Int, _ n: Int) -> Range<Int> { (r * n / tiles)..<((r + 1) * n / tiles) }
    func level(_ v: Float) -> Int { Int(min(max(v, 0), 1) * Float(levels - 1) + 0.5) }

    var maps = [Float](repeating: 0, count: tiles * tiles * levels)
    var histogram = [Int](repeating: 0, count: levels)
    for ty in 0..<tiles {
        for tx in 0..<tiles {
            let ys = bounds(ty, height), xs = bounds(tx, width)
            for i in 0..<levels { histogram[i] = 0 }
            for y in ys { for x in xs { histogram[level(image[y * width + x])] += 1 } }
            let pixels = ys.count * xs.count
            let limit = max(1, Int(clip * Float(pixels) / Float(levels)))
            var excess = 0
            for i in 0..<levels where histogram[i] > limit {
                excess += histogram[i] - limit
                histogram[i] = limit
            }
            // The excess, spread evenly; its remainder one count each over the first bins.
            let share = excess / levels, rest = excess % levels
            var cumulative = 0
            let base = (ty * tiles + tx) * levels
            for i in 0..<levels {
                cumulative += histogram[i] + share + (i < rest ? 1 : 0)
                maps[base + i] = Float(cumulative) / Float(pixels)
            }
        }
    }
    // Bilinear blend between region centres; beyond the outer centres the nearest region's map.
    func neighbours(_ p: Int, _ n: Int) -> (Int, Int, Float) {
        let c = (Float(p) + 0.5) * Float(tiles) / Float(n) - 0.5
        let lo = max(0, min(tiles - 1, Int(c.rounded(.down))))
        let hi = min(tiles - 1, lo + 1)
        return (lo, hi, min(max(c - Float(lo), 0), 1))
    }
    for y in 0..<height {
        let (y0, y1, fy) = neighbours(y, height)
        for x in 0..<width {
            let (x0, x1, fx) = neighbours(x, width)
            let l = level(image[y * width + x])
            func map(_ ty: Int, _ tx: Int) -> Float { maps[(ty * tiles + tx) * levels + l] }
            let top = map(y0, x0) * (1 - fx) + map(y0, x1) * fx
            let bottom = map(y1, x0) * (1 - fx) + map(y1, x1) * fx
            image[y * width + x] = top * (1 - fy) + bottom * fy
        }
    }
}
