import ACE

/// Resizes `count` single-channel images of height x width (contiguous) to outHeight x
/// outWidth with the core's resampler: the filter that makes the training views, so that
/// inference sees the pixels training saw. Parallel over the images.
@_cdecl("ace_resize")
public func ace_resize(_ src: UnsafePointer<Float>?, _ count: Int64, _ height: Int64, _ width: Int64,
                       _ dst: UnsafeMutablePointer<Float>?, _ outHeight: Int64, _ outWidth: Int64) -> Int32 {
    guarded {
        guard let src, let dst else { throw ACEError("resize: null image buffer") }
        try Limits.require(Int(count), in: 0...Limits.batch, "image count")
        let (h, w, oh, ow) = (Int(height), Int(width), Int(outHeight), Int(outWidth))
        guard count > 0 else { return }
        // The first image alone checks the sizes, which every image shares: the others cannot throw.
        try resizeImage(src, width: w, height: h, to: dst, outWidth: ow, outHeight: oh)
        parallelChunks(Int(count) - 1, minPerChunk: 1) { others in
            for i in others.map({ $0 + 1 }) {
                try? resizeImage(src + i * h * w, width: w, height: h, to: dst + i * oh * ow, outWidth: ow, outHeight: oh)
            }
        }
    }
}
