/// Photometric augmentation of the views (DESIGN.md section 5) and the random-resized-crop box
/// sampler of the DINO baseline.
///
/// The augmentations are purely photometric: no pixel moves, so the exact token correspondence
/// of the grid crops is kept. Images are Float32 planes (one per channel), row-major, values
/// roughly in [0, 1]. Colour images (3 channels, R G B) get the same transforms on every channel
/// with the same random values, and DINO's colour jitter and random grayscale before them.
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
    /// Colour images only (in_chans 3): with probability colorJitterP, torchvision's
    /// ColorJitter(brightness, contrast, saturation, hue) as DINO uses it (p 0.8, 0.4 / 0.4 /
    /// 0.2 / 0.1): brightness x -> b x, contrast x -> c x + (1 - c) mean(gray), saturation
    /// x -> s x + (1 - s) gray (factors uniform in [max(0, 1 - v), 1 + v], each result clamped to
    /// [0, 1]), and a hue rotation by h uniform in [-hue, hue] turns, in a random order. Then,
    /// with probability grayscaleP (DINO 0.2), every channel becomes the gray value.
    /// gray = 0.2989 R + 0.587 G + 0.114 B, as torchvision's rgb_to_grayscale.
    public var colorJitterP: Float = 0
    public var jitterBrightness: Float = 0.4
    public var jitterContrast: Float = 0.4
    public var jitterSaturation: Float = 0.2
    public var jitterHue: Float = 0.1
    public var grayscaleP: Float = 0

    /// The defaults of DESIGN.md: brightness/contrast p 0.5 +-0.2, blur p 0.5, sharpen p 0.3,
    /// gamma off.
    public init() {}

    /// Every transform off (apply() leaves the image unchanged, still drawing its random numbers).
    public static var off: AugmentConfig {
        var c = AugmentConfig()
        c.brightnessContrastP = 0; c.blurP = 0; c.sharpenP = 0; c.gammaP = 0; c.claheP = 0
        c.colorJitterP = 0; c.grayscaleP = 0
        return c
    }

    public func validate() throws {
        for (name, p) in [("brightness_contrast_p", brightnessContrastP), ("blur_p", blurP),
                          ("sharpen_p", sharpenP), ("gamma_p", gammaP), ("clahe_p", claheP),
                          ("color_jitter_p", colorJitterP), ("grayscale_p", grayscaleP)] {
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
        for (name, v) in [("jitter_brightness", jitterBrightness), ("jitter_contrast", jitterContrast),
                          ("jitter_saturation", jitterSaturation)] {
            try require(v >= 0 && v.isFinite, "\(name) must be finite and non-negative, got \(v)")
        }
        try require(jitterHue >= 0 && jitterHue <= 0.5, "jitter_hue must be in [0, 0.5], got \(jitterHue)")
    }
}

public struct PhotometricAugment {
    public let config: AugmentConfig

    /// Random numbers drawn by every apply() call on a single-channel image, whichever
    /// transforms fire.
    public static let drawsPerCall = 9
    /// Random numbers a colour (3-channel) image draws from its own colour stream: colour
    /// jitter (fire, four factors, three for the order) and grayscale.
    public static let colourDrawsPerCall = 9

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
        var unused = RNG(seed: 0)
        apply(image, channels: 1, size: size, rng: &rng, colourRNG: &unused)
    }

    /// As `apply(_:size:rng:)` on `channels` planes of size x size (1 or 3), drawing the same
    /// `drawsPerCall` uniforms from `rng`. A colour image also draws `colourDrawsPerCall`
    /// uniforms from `colourRNG` (a separate stream, so the grey draws, and with the colour
    /// transforms off the pixels, are those of each channel alone) and gets the colour jitter
    /// and grayscale of `AugmentConfig` on its [0, 1] input; then every plane gets the grey
    /// transforms with the same random values (brightness/contrast around its own mean).
    public func apply(_ image: UnsafeMutablePointer<Float>, channels: Int, size: Int, rng: inout RNG,
                      colourRNG: inout RNG) {
        let c = config
        let uGamma = rng.uniform(), uGammaValue = rng.uniform()
        let uBC = rng.uniform(), uBrightness = rng.uniform(), uContrast = rng.uniform()
        let uBlur = rng.uniform(), uSigma = rng.uniform()
        let uSharpen = rng.uniform()
        let uClahe = rng.uniform()
        var colour: [Double] = []
        if channels == 3 { colour = (0..<Self.colourDrawsPerCall).map { _ in colourRNG.uniform() } }

        guard size > 0, !size.multipliedReportingOverflow(by: size).overflow else { return }
        let n = size * size

        if channels == 3 {
            let (r, g, b) = (image, image + n, image + 2 * n)
            if colour[0] < Double(c.colorJitterP) {
                func factor(_ v: Float, _ u: Double) -> Float {
                    Float(max(0, 1 - Double(v)) + (1 + Double(v) - max(0, 1 - Double(v))) * u)
                }
                let fb = factor(c.jitterBrightness, colour[1]), fc = factor(c.jitterContrast, colour[2])
                let fs = factor(c.jitterSaturation, colour[3])
                let fh = Float(Double(c.jitterHue) * (2 * colour[4] - 1))
                for op in randomOrder(colour[5], colour[6], colour[7]) {
                    switch op {
                    case 0: adjustBrightness(r, g, b, count: n, factor: fb)
                    case 1: adjustContrast(r, g, b, count: n, factor: fc)
                    case 2: adjustSaturation(r, g, b, count: n, factor: fs)
                    default: adjustHue(r, g, b, count: n, shift: fh)
                    }
                }
            }
            if colour[8] < Double(c.grayscaleP) { toGrayscale(r, g, b, count: n) }
        }
        for ch in 0..<max(channels, 1) {
            let plane = image + ch * n
            if uClahe < Double(c.claheP) {
                clahe(plane, width: size, height: size, tiles: Int(c.claheTiles), clip: c.claheClip)
            }
            if uGamma < Double(c.gammaP) {
                let g = Float(Double(c.gammaMin) + Double(c.gammaMax - c.gammaMin) * uGammaValue)
                applyGamma(plane, count: n, gamma: g)
            }
            if uBC < Double(c.brightnessContrastP) {
                let b = Float(Double(c.brightness) * (2 * uBrightness - 1))
                let f = Float(1 + Double(c.contrast) * (2 * uContrast - 1))
                applyBrightnessContrast(plane, count: n, brightness: b, contrast: f)
            }
            if uBlur < Double(c.blurP) {
                let sigma = Float(Double(c.blurSigmaMin) + Double(c.blurSigmaMax - c.blurSigmaMin) * uSigma)
                gaussianBlur(plane, to: plane, width: size, height: size, sigma: sigma)
            }
            if uSharpen < Double(c.sharpenP) {
                unsharpMask(plane, width: size, height: size, amount: c.sharpenAmount)
            }
        }
    }
}

// MARK: - Colour transforms (torchvision's ColorJitter semantics on float images)

/// A uniformly random order of the four jitter transforms (0 brightness, 1 contrast,
/// 2 saturation, 3 hue) from three uniforms: Fisher-Yates, swapping slot i with slot
/// floor(u * (i + 1)) for i = 3, 2, 1.
func randomOrder(_ u3: Double, _ u2: Double, _ u1: Double) -> [Int] {
    var order = [0, 1, 2, 3]
    for (i, u) in [(3, u3), (2, u2), (1, u1)] { order.swapAt(i, min(Int(u * Double(i + 1)), i)) }
    return order
}

@inline(__always) func clamp01(_ x: Float) -> Float { min(max(x, 0), 1) }

/// torchvision's rgb_to_grayscale weights.
@inline(__always) func gray(_ r: Float, _ g: Float, _ b: Float) -> Float { 0.2989 * r + 0.587 * g + 0.114 * b }

/// x -> clamp(f x, 0, 1) on every channel.
func adjustBrightness(_ r: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                      _ b: UnsafeMutablePointer<Float>, count: Int, factor f: Float) {
    for p in [r, g, b] { for i in 0..<count { p[i] = clamp01(f * p[i]) } }
}

/// x -> clamp(f x + (1 - f) m, 0, 1), m the mean gray value of the image.
func adjustContrast(_ r: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                    _ b: UnsafeMutablePointer<Float>, count: Int, factor f: Float) {
    guard count > 0 else { return }
    var s = 0.0
    for i in 0..<count { s += Double(gray(r[i], g[i], b[i])) }
    let offset = (1 - f) * Float(s / Double(count))
    for p in [r, g, b] { for i in 0..<count { p[i] = clamp01(f * p[i] + offset) } }
}

/// x -> clamp(f x + (1 - f) gray, 0, 1) per pixel: f = 0 gives the gray image, f = 1 the input.
func adjustSaturation(_ r: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                      _ b: UnsafeMutablePointer<Float>, count: Int, factor f: Float) {
    for i in 0..<count {
        let l = (1 - f) * gray(r[i], g[i], b[i])
        r[i] = clamp01(f * r[i] + l); g[i] = clamp01(f * g[i] + l); b[i] = clamp01(f * b[i] + l)
    }
}

/// Every channel the gray value.
func toGrayscale(_ r: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                 _ b: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { let l = gray(r[i], g[i], b[i]); r[i] = l; g[i] = l; b[i] = l }
}

/// Rotates the hue by `shift` turns (h -> (h + shift) mod 1 in HSV), keeping saturation and
/// value. Inputs are clamped to [0, 1] first (HSV is defined there).
func adjustHue(_ r: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
               _ b: UnsafeMutablePointer<Float>, count: Int, shift: Float) {
    for i in 0..<count {
        let (h, s, v) = rgbToHSV(clamp01(r[i]), clamp01(g[i]), clamp01(b[i]))
        var hh = (h + shift).truncatingRemainder(dividingBy: 1)
        if hh < 0 { hh += 1 }
        (r[i], g[i], b[i]) = hsvToRGB(hh, s, v)
    }
}

/// RGB in [0, 1] -> (hue in [0, 1) turns, saturation, value); gray pixels have hue 0.
func rgbToHSV(_ r: Float, _ g: Float, _ b: Float) -> (Float, Float, Float) {
    let v = max(r, g, b), lo = min(r, g, b), chroma = v - lo
    guard chroma > 0 else { return (0, 0, v) }
    var h: Float
    if v == r { h = (g - b) / chroma } else if v == g { h = 2 + (b - r) / chroma } else { h = 4 + (r - g) / chroma }
    h /= 6
    if h < 0 { h += 1 }
    if h >= 1 { h -= 1 }
    return (h, chroma / v, v)
}

/// (hue in [0, 1) turns, saturation, value) -> RGB, the inverse of `rgbToHSV`.
func hsvToRGB(_ h: Float, _ s: Float, _ v: Float) -> (Float, Float, Float) {
    let h6 = h * 6, sector = min(Int(h6), 5), f = h6 - Float(sector)
    let p = clamp01(v * (1 - s)), q = clamp01(v * (1 - s * f)), t = clamp01(v * (1 - s * (1 - f)))
    switch sector {
    case 0: return (v, t, p)
    case 1: return (q, v, p)
    case 2: return (p, v, t)
    case 3: return (p, q, v)
    case 4: return (t, p, v)
    default: return (v, p, q)
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
