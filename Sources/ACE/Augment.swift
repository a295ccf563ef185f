/// Photometric augmentation of the views (DESIGN.md section 5) and the random-resized-crop box
/// sampler of the DINO baseline.
///
/// The augmentations are purely photometric: no pixel moves, so the exact token correspondence
/// of the grid crops is kept. Images are single-channel Float32, row-major, values roughly in
/// [0, 1].
import Glibc

public struct AugmentConfig: Settings, Equatable {
    /// Probability of brightness/contrast; brightness is an additive shift uniform in
    /// [-brightness, brightness], contrast a factor uniform in [1 - contrast, 1 + contrast]
    /// applied around the image mean: x -> (x - mean) * c + mean + b (no clamping).
    public var brightnessContrastP: Float = 0.5
    public var brightness: Float = 0.2
    public var contrast: Float = 0.2
    /// Probability of a Gaussian blur with sigma uniform in [blurSigmaMin, blurSigmaMax]
    /// (pixels of the view).
    public var blurP: Float = 0.5
    public var blurSigmaMin: Float = 0.1
    public var blurSigmaMax: Float = 2.0
    /// Probability of an unsharp mask x + amount * (x - blur_sigma1(x)).
    public var sharpenP: Float = 0.3
    public var sharpenAmount: Float = 1.0
    /// Probability of a gamma x -> clamp(x, 0, 1)^gamma, gamma uniform in [gammaMin, gammaMax].
    public var gammaP: Float = 0.0
    public var gammaMin: Float = 0.7
    public var gammaMax: Float = 1.5
    /// Probability of CLAHE (see clahe()) with the given clip limit and tiles per side; the
    /// authors' code applies it with p 0.3.
    public var claheP: Float = 0
    public var claheClip: Float = 4
    public var claheTiles: Float = 8

    /// The defaults of DESIGN.md: brightness/contrast p 0.5 +-0.2, blur p 0.5, sharpen p 0.3,
    /// gamma off.
    public init() {}

    /// Every transform off (apply() leaves the image unchanged, still drawing its random numbers).
    public static var off: AugmentConfig {
        var c = AugmentConfig()
        c.brightnessContrastP = 0; c.blurP = 0; c.sharpenP = 0; c.gammaP = 0; c.claheP = 0
        return c
    }

    public func validate() throws {
        for (name, p) in [("brightness_contrast_p", brightnessContrastP), ("blur_p", blurP),
                          ("sharpen_p", sharpenP), ("gamma_p", gammaP), ("clahe_p", claheP)] {
            try require(p >= 0 && p <= 1, "\(name) must be a probability in [0, 1], got \(p)")
        }
        try require(brightness >= 0 && brightness.isFinite,
                    "brightness must be finite and non-negative, got \(brightness)")
        try require(contrast >= 0 && contrast <= 1, "contrast must be in [0, 1], got \(contrast)")
        try require(blurSigmaMin >= 0 && blurSigmaMin <= blurSigmaMax && blurSigmaMax.isFinite,
                    "blur sigma range must satisfy 0 <= blur_sigma_min <= blur_sigma_max, "
                    + "got [\(blurSigmaMin), \(blurSigmaMax)]")
        try require(sharpenAmount >= 0 && sharpenAmount.isFinite,
                    "sharpen_amount must be finite and non-negative, got \(sharpenAmount)")
        try require(claheClip >= 1 && claheClip <= 256, "clahe_clip must be in [1, 256], got \(claheClip)")
        try require(claheTiles >= 1 && claheTiles <= 64 && claheTiles == claheTiles.rounded(),
                    "clahe_tiles must be a whole number in 1...64, got \(claheTiles)")
        try require(gammaMin > 0 && gammaMin <= gammaMax && gammaMax.isFinite,
                    "gamma range must satisfy 0 < gamma_min <= gamma_max, got [\(gammaMin), \(gammaMax)]")
    }
}

public struct PhotometricAugment {
    public let config: AugmentConfig

    /// Random numbers drawn by every apply() call, whichever transforms fire.
    public static let drawsPerCall = 9

    /// The config is used as given; call `config.validate()` first for configs from outside
    /// (an invalid config never traps, it may give meaningless pixels).
    public init(_ config: AugmentConfig) { self.config = config }

    /// Applies the random photometric transforms in place to one size x size view, in the order
    /// CLAHE and gamma (on the input, which lies in [0, 1]), brightness/contrast, blur, sharpen. Draws
    /// exactly `drawsPerCall` uniforms per call (every random value is drawn even when its
    /// transform is skipped, and the draws happen before any size check), so the RNG stream stays
    /// aligned no matter which transforms fire. A transform with probability p fires when its
    /// uniform u satisfies u < p (p = 0: never, p = 1: always). A non-positive size is a no-op.
    public func apply(_ image: UnsafeMutablePointer<Float>, size: Int, rng: inout RNG) {
        let c = config
        let uGamma = rng.uniform(), uGammaValue = rng.uniform()
        let uBC = rng.uniform(), uBrightness = rng.uniform(), uContrast = rng.uniform()
        let uBlur = rng.uniform(), uSigma = rng.uniform()
        let uSharpen = rng.uniform()
        let uClahe = rng.uniform()

        guard size > 0, !size.multipliedReportingOverflow(by: size).overflow else { return }
        let n = size * size

        if uClahe < Double(c.claheP) {
            clahe(image, width: size, height: size, tiles: Int(c.claheTiles), clip: c.claheClip)
        }
        if uGamma < Double(c.gammaP) {
            let g = Float(Double(c.gammaMin) + Double(c.gammaMax - c.gammaMin) * uGammaValue)
            applyGamma(image, count: n, gamma: g)
        }
        if uBC < Double(c.brightnessContrastP) {
            let b = Float(Double(c.brightness) * (2 * uBrightness - 1))
            let f = Float(1 + Double(c.contrast) * (2 * uContrast - 1))
            applyBrightnessContrast(image, count: n, brightness: b, contrast: f)
        }
        if uBlur < Double(c.blurP) {
            let sigma = Float(Double(c.blurSigmaMin) + Double(c.blurSigmaMax - c.blurSigmaMin) * uSigma)
            gaussianBlur(image, to: image, width: size, height: size, sigma: sigma)
        }
        if uSharpen < Double(c.sharpenP) {
            unsharpMask(image, width: size, height: size, amount: c.sharpenAmount)
        }
    }
}

// MARK: - Transforms (internal; inputs assumed validated)

/// x -> clamp(x, 0, 1)^gamma.
func applyGamma(_ x: UnsafeMutablePointer<Float>, count: Int, gamma: Float) {
    for i in 0..<count {
        let v = min(max(x[i], 0), 1)
        x[i] = powf(v, gamma)
    }
}

/// x -> (x - mean) * contrast + mean + brightness, mean over the whole image.
func applyBrightnessContrast(_ x: UnsafeMutablePointer<Float>, count: Int, brightness: Float, contrast: Float) {
    guard count > 0 else { return }
    var s = 0.0
    for i in 0..<count { s += Double(x[i]) }
    let mean = Float(s / Double(count))
    let offset = mean + brightness - mean * contrast
    for i in 0..<count { x[i] = x[i] * contrast + offset }
}

/// Half-sample symmetric reflection ("fedcba|abcdef|fedcba", OpenCV BORDER_REFLECT, scipy
/// 'reflect'), periodic with period 2n so any offset is valid. With this border a normalized
/// symmetric kernel keeps the image sum exactly.
@inline(__always)
func reflectIndex(_ i: Int, _ n: Int) -> Int {
    let period = 2 * n
    var m = i % period
    if m < 0 { m += period }
    return m < n ? m : period - 1 - m
}

/// Normalized Gaussian kernel of radius ceil(3 sigma), capped at `maxRadius`.
func gaussianKernel(sigma: Float, maxRadius: Int) -> [Float] {
    let r3 = (3 * Double(sigma)).rounded(.up)
    let r = r3.isFinite ? Int(min(max(r3, 0), Double(max(maxRadius, 0)))) : max(maxRadius, 0)
    let s2 = 2 * Double(sigma) * Double(sigma)
    var k = [Double](repeating: 0, count: 2 * r + 1)
    for i in -r...r { k[i + r] = exp(-Double(i * i) / s2) }
    let total = k.reduce(0, +)
    return k.map { Float($0 / total) }
}

/// Separable Gaussian blur of a width x height image with mirrored borders and a normalized
/// kernel of radius ceil(3 sigma) (capped at the image size: larger sigmas are nonsense for a
/// view). `dst` may equal `src`. sigma <= 0 (or NaN) copies.
func gaussianBlur(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>,
                  width: Int, height: Int, sigma: Float) {
    let n = width * height
    guard n > 0 else { return }
    guard sigma > 0 else {
        if UnsafePointer(dst) != src { dst.update(from: src, count: n) }
        return
    }
    let kernel = gaussianKernel(sigma: sigma, maxRadius: max(width, height))
    let r = kernel.count / 2
    let taps = kernel.count
    let tmp = UnsafeMutablePointer<Float>.allocate(capacity: n)
    defer { tmp.deallocate() }
    let padded = UnsafeMutablePointer<Float>.allocate(capacity: width + 2 * r)
    defer { padded.deallocate() }
    kernel.withUnsafeBufferPointer { kb in
        let k = kb.baseAddress!
        // Rows: pad each row by reflection, then convolve.
        for y in 0..<height {
            let row = src + y * width
            for p in 0..<(width + 2 * r) { padded[p] = row[reflectIndex(p - r, width)] }
            let out = tmp + y * width
            for x in 0..<width {
                var acc: Float = 0
                for t in 0..<taps { acc += k[t] * padded[x + t] }
                out[x] = acc
            }
        }
        // Columns: each output row is a weighted sum of reflected rows of tmp.
        for y in 0..<height {
            let out = dst + y * width
            let r0 = tmp + reflectIndex(y - r, height) * width
            let k0 = k[0]
            for x in 0..<width { out[x] = k0 * r0[x] }
            if taps > 1 {
                for t in 1..<taps {
                    let kt = k[t]
                    let rt = tmp + reflectIndex(y + t - r, height) * width
                    for x in 0..<width { out[x] += kt * rt[x] }
                }
            }
        }
    }
}

/// Unsharp mask in place: x + amount * (x - blur_sigma1(x)).
func unsharpMask(_ x: UnsafeMutablePointer<Float>, width: Int, height: Int, amount: Float) {
    let n = width * height
    guard n > 0 else { return }
    let blurred = UnsafeMutablePointer<Float>.allocate(capacity: n)
    defer { blurred.deallocate() }
    gaussianBlur(x, to: blurred, width: width, height: height, sigma: 1)
    for i in 0..<n { x[i] += amount * (x[i] - blurred[i]) }
}

// MARK: - Random resized crop (DINO baseline)

/// torchvision's RandomResizedCrop box sampling: up to 10 attempts of an area fraction uniform
/// in `scale` and an aspect ratio (w / h) log-uniform in `ratio`, w and h rounded half-to-even
/// as Python's round; the first box that fits is placed uniformly. Otherwise the centre crop of
/// the whole image clipped to the ratio range. Returns (x, y, w, h) in pixels, x right, y down.
/// Never traps: non-positive image sizes return an empty box (0, 0, 0, 0), which
/// `cropResizeChecked` rejects; invalid scale/ratio ranges fall back to the centre crop.
public func randomResizedCrop(width: Int, height: Int, scale: (Float, Float) = (0.4, 1),
                              ratio: (Float, Float) = (3.0 / 4, 4.0 / 3),
                              rng: inout RNG) -> (x: Int, y: Int, w: Int, h: Int) {
    guard width > 0, height > 0 else { return (0, 0, 0, 0) }
    let area = Double(width) * Double(height)
    let logLo = log(Double(ratio.0)), logHi = log(Double(ratio.1))
    for _ in 0..<10 {
        let target = area * rng.uniform(Double(scale.0), Double(scale.1))
        let aspect = exp(rng.uniform(logLo, logHi))
        let wd = (target * aspect).squareRoot().rounded(.toNearestOrEven)
        let hd = (target / aspect).squareRoot().rounded(.toNearestOrEven)
        guard wd.isFinite, hd.isFinite, wd > 0, hd > 0, wd <= Double(width), hd <= Double(height) else { continue }
        let w = Int(wd), h = Int(hd)
        let y = rng.int(height - h + 1)
        let x = rng.int(width - w + 1)
        return (x, y, w, h)
    }
    // Fallback: centre crop.
    let inRatio = Double(width) / Double(height)
    let rmin = Double(min(ratio.0, ratio.1)), rmax = Double(max(ratio.0, ratio.1))
    var w = width, h = height
    if rmin > 0 && rmax.isFinite {
        if inRatio < rmin {
            h = Int(min(max((Double(width) / rmin).rounded(.toNearestOrEven), 1), Double(height)))
        } else if inRatio > rmax {
            w = Int(min(max((Double(height) * rmax).rounded(.toNearestOrEven), 1), Double(width)))
        }
    }
    return ((width - w) / 2, (height - h) / 2, w, h)
}
