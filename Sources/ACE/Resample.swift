/// Resampling of single-channel Float32 images (row-major, x to the right, y down).
///
/// Filters, chosen per axis from that axis' input and output lengths:
/// - equal lengths: exact copy (bit for bit);
/// - downscale (input longer than output): exact area-weighted averaging. Output pixel i covers
///   the source interval [i * in / out, (i + 1) * in / out) and is the mean of the source pixels
///   over it, each weighted by the length it overlaps. The overlaps are computed in integers
///   (units of 1/out pixel), so when the input is an integer multiple f of the output each output
///   pixel is exactly the mean of an f-pixel run: 448 -> 224 averages 2 x 2 blocks exactly.
///   This is the "box"/area filter (OpenCV INTER_AREA); it antialiases for every scale and keeps
///   the image mean.
/// - upscale: bilinear interpolation with half-pixel centres, source coordinate
///   (i + 0.5) * in / out - 0.5 clamped to [0, in - 1].
///
/// Both axes are applied as separable passes (rows, then columns) with precomputed weight tables.
/// The functions are single-threaded on purpose: callers parallelize over the images of a batch.

/// Per-axis resampling weights: output i reads `count[i]` source samples starting at `start[i]`
/// with weights `weights[i * stride ..< i * stride + count[i]]`.
struct ResampleTaps {
    let inSize: Int
    let outSize: Int
    var start: [Int] = []
    var count: [Int] = []
    var weights: [Float] = []
    var stride = 0

    var isIdentity: Bool { inSize == outSize }

    /// Requires inSize > 0 and outSize > 0.
    init(inSize: Int, outSize: Int) {
        self.inSize = inSize
        self.outSize = outSize
        if inSize == outSize {
            stride = 1
            start = Array(0..<outSize)
            count = [Int](repeating: 1, count: outSize)
            weights = [Float](repeating: 1, count: outSize)
        } else if inSize > outSize {
            // Area: footprint [i*in, (i+1)*in) and source pixel k = [k*out, (k+1)*out), both in
            // units of 1/out source pixel. A footprint of length in/out touches at most
            // ceil(in/out) + 1 pixels.
            stride = (inSize + outSize - 1) / outSize + 1
            start = [Int](repeating: 0, count: outSize)
            count = [Int](repeating: 0, count: outSize)
            weights = [Float](repeating: 0, count: outSize * stride)
            let scale = 1 / Double(inSize)
            for i in 0..<outSize {
                let lo = i * inSize, hi = (i + 1) * inSize
                let k0 = lo / outSize, k1 = (hi - 1) / outSize
                start[i] = k0
                count[i] = k1 - k0 + 1
                for k in k0...k1 {
                    let overlap = min(hi, (k + 1) * outSize) - max(lo, k * outSize)
                    weights[i * stride + k - k0] = Float(Double(overlap) * scale)
                }
            }
        } else {
            // Bilinear, half-pixel centres, clamped at the edges.
            stride = 2
            start = [Int](repeating: 0, count: outSize)
            count = [Int](repeating: 0, count: outSize)
            weights = [Float](repeating: 0, count: outSize * 2)
            let ratio = Double(inSize) / Double(outSize)
            for i in 0..<outSize {
                let c = min(max((Double(i) + 0.5) * ratio - 0.5, 0), Double(inSize - 1))
                let i0 = Int(c)
                let frac = c - Double(i0)
                start[i] = i0
                if i0 + 1 < inSize && frac > 0 {
                    count[i] = 2
                    weights[i * 2] = Float(1 - frac)
                    weights[i * 2 + 1] = Float(frac)
                } else {
                    count[i] = 1
                    weights[i * 2] = 1
                }
            }
        }
    }
}

/// Horizontal pass: `rows` rows of `src` (row stride `srcStride`, each starting at the box's left
/// edge) resampled with `taps` into `dst` (rows of taps.outSize, contiguous).
private func resampleRows(_ src: UnsafePointer<Float>, srcStride: Int, rows: Int, taps: ResampleTaps,
                          _ dst: UnsafeMutablePointer<Float>) {
    let outW = taps.outSize
    taps.start.withUnsafeBufferPointer { start in
        taps.count.withUnsafeBufferPointer { count in
            taps.weights.withUnsafeBufferPointer { w in
                let stride = taps.stride
                for r in 0..<rows {
                    let s = src + r * srcStride
                    let d = dst + r * outW
                    for i in 0..<outW {
                        let p = s + start[i]
                        let wi = w.baseAddress! + i * stride
                        var acc: Float = 0
                        for t in 0..<count[i] { acc += wi[t] * p[t] }
                        d[i] = acc
                    }
                }
            }
        }
    }
}

/// Vertical pass: rows of `width` samples from `src` (row stride `srcStride`) resampled with
/// `taps` into `dst` (taps.outSize rows of `width`, contiguous). Vectorizes along the rows.
private func resampleColumns(_ src: UnsafePointer<Float>, srcStride: Int, width: Int, taps: ResampleTaps,
                             _ dst: UnsafeMutablePointer<Float>) {
    for j in 0..<taps.outSize {
        let d = dst + j * width
        let n = taps.count[j], s0 = taps.start[j], base = j * taps.stride
        let w0 = taps.weights[base]
        let r0 = src + s0 * srcStride
        for x in 0..<width { d[x] = w0 * r0[x] }
        if n > 1 {
            for t in 1..<n {
                let wt = taps.weights[base + t]
                let r = src + (s0 + t) * srcStride
                for x in 0..<width { d[x] += wt * r[x] }
            }
        }
    }
}

/// Resamples the box of `src` (row stride `stride`) to outW x outH into `dst`. Inputs must be
/// validated: positive sizes, box inside the source.
func resampleBox(_ src: UnsafePointer<Float>, stride: Int, box: (x: Int, y: Int, w: Int, h: Int),
                 to dst: UnsafeMutablePointer<Float>, outWidth: Int, outHeight: Int) {
    let origin = src + box.y * stride + box.x
    let tx = ResampleTaps(inSize: box.w, outSize: outWidth)
    let ty = ResampleTaps(inSize: box.h, outSize: outHeight)
    switch (tx.isIdentity, ty.isIdentity) {
    case (true, true):
        for r in 0..<box.h { (dst + r * outWidth).update(from: origin + r * stride, count: box.w) }
    case (false, true):
        resampleRows(origin, srcStride: stride, rows: box.h, taps: tx, dst)
    case (true, false):
        resampleColumns(origin, srcStride: stride, width: box.w, taps: ty, dst)
    case (false, false):
        // Rows first; columns first only when that intermediate would be far smaller (a very
        // tall image), so ordinary images keep one fixed, reproducible order.
        let rowsFirst = box.h * outWidth <= (1 << 26) || box.h * outWidth <= outHeight * box.w
        let tmp = UnsafeMutablePointer<Float>.allocate(capacity: rowsFirst ? box.h * outWidth : outHeight * box.w)
        defer { tmp.deallocate() }
        if rowsFirst {
            resampleRows(origin, srcStride: stride, rows: box.h, taps: tx, tmp)
            resampleColumns(tmp, srcStride: outWidth, width: outWidth, taps: ty, dst)
        } else {
            resampleColumns(origin, srcStride: stride, width: box.w, taps: ty, tmp)
            resampleRows(tmp, srcStride: box.w, rows: outHeight, taps: tx, dst)
        }
    }
}

/// Crops the integer-pixel box from the width x height image `src` and resizes it to
/// size x size into `dst` (see the filter rules at the top of this file; each axis of a
/// non-square box is scaled independently). The box must lie inside the image and all sizes
/// must be positive: this unchecked version is for callers that built the box themselves
/// (grid cropping); use `cropResizeChecked` for sizes from outside.
public func cropResize(_ src: UnsafePointer<Float>, width: Int, height: Int,
                       box: (x: Int, y: Int, w: Int, h: Int),
                       to dst: UnsafeMutablePointer<Float>, size: Int) {
    resampleBox(src, stride: width, box: box, to: dst, outWidth: size, outHeight: size)
}

/// As `cropResize`, throwing ACEError for non-positive or overflowing sizes and for a box
/// that is empty or not inside the image.
public func cropResizeChecked(_ src: UnsafePointer<Float>, width: Int, height: Int,
                              box: (x: Int, y: Int, w: Int, h: Int),
                              to dst: UnsafeMutablePointer<Float>, size: Int) throws {
    try checkResample(width: width, height: height, outWidth: size, outHeight: size)
    try require(box.w > 0 && box.h > 0, "crop box must be non-empty, got \(box.w) x \(box.h)")
    try require(box.x >= 0 && box.y >= 0 && box.x <= width - box.w && box.y <= height - box.h,
                "crop box (x \(box.x), y \(box.y), w \(box.w), h \(box.h)) is not inside the \(width) x \(height) image")
    cropResize(src, width: width, height: height, box: box, to: dst, size: size)
}

/// Resizes the whole width x height image to size x size (the aspect ratio is not kept: each
/// axis is scaled independently, with the rules at the top of this file). Used to bring user
/// images to the grid's image size. Throws ACEError for non-positive or overflowing sizes.
public func resizeImage(_ src: UnsafePointer<Float>, width: Int, height: Int,
                        to dst: UnsafeMutablePointer<Float>, size: Int) throws {
    try resizeImage(src, width: width, height: height, to: dst, outWidth: size, outHeight: size)
}

/// Resizes the whole width x height image to outWidth x outHeight. Throws ACEError for
/// non-positive or overflowing sizes.
public func resizeImage(_ src: UnsafePointer<Float>, width: Int, height: Int,
                        to dst: UnsafeMutablePointer<Float>, outWidth: Int, outHeight: Int) throws {
    try checkResample(width: width, height: height, outWidth: outWidth, outHeight: outHeight)
    resampleBox(src, stride: width, box: (0, 0, width, height), to: dst, outWidth: outWidth, outHeight: outHeight)
}

private func checkResample(width: Int, height: Int, outWidth: Int, outHeight: Int) throws {
    try require(width > 0 && height > 0, "image size must be positive, got \(width) x \(height)")
    try require(outWidth > 0 && outHeight > 0, "output size must be positive, got \(outWidth) x \(outHeight)")
    try require(width <= Limits.imageSide && height <= Limits.imageSide && width * height <= Limits.imagePixels,
                "image size \(width) x \(height) exceeds the limits (\(Limits.imageSide) px per side, \(Limits.imagePixels) pixels)")
    try require(outWidth <= Limits.gridImageSide && outHeight <= Limits.gridImageSide,
                "output size \(outWidth) x \(outHeight) exceeds the limit of \(Limits.gridImageSide) px per side")
    // Pixel counts and the integer area overlaps (index * length) must not overflow.
    for (a, b) in [(width, height), (outWidth, outHeight), (width, outWidth + 1), (height, outHeight + 1),
                   (height, outWidth)] {
        try require(!a.multipliedReportingOverflow(by: b).overflow, "image sizes \(width) x \(height) -> \(outWidth) x \(outHeight) are too large")
    }
}
