/// The circular field of view of a colour fundus photograph: the camera images a disc, the
/// corners are black (or carry text and noise). Masking them out keeps that border from being
/// learned as content, and makes every image's background the same.

/// True when pixel (x, y) of a width x height image lies in the inscribed ellipse (the circle
/// of a square image): ((x + 0.5) / width - 0.5)^2 + ((y + 0.5) / height - 0.5)^2 <= 1/4,
/// evaluated in Double in exactly this order (ace.preprocess.fov_mask computes the same).
@inline(__always)
public func insideFieldOfView(x: Int, y: Int, width: Int, height: Int) -> Bool {
    let dx = (Double(x) + 0.5) / Double(width) - 0.5
    let dy = (Double(y) + 0.5) / Double(height) - 0.5
    return dx * dx + dy * dy <= 0.25
}

/// Zeroes, in place, the pixels of one width x height plane outside the field of view.
public func maskFieldOfView(_ image: UnsafeMutablePointer<Float>, width: Int, height: Int) {
    for y in 0..<height {
        let row = image + y * width
        for x in 0..<width where !insideFieldOfView(x: x, y: y, width: width, height: height) { row[x] = 0 }
    }
}
