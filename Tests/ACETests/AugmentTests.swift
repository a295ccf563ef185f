import XCTest
import Foundation
@testable import ACE

/// Pixel value x + 1000 * y, so a value names its own coordinates.
private func coordinateImage(width: Int, height: Int) -> [Float] {
    var img = [Float](repeating: 0, count: width * height)
    for y in 0..<height { for x in 0..<width { img[y * width + x] = Float(x + 1000 * y) } }
    return img
}

private func randomImage(_ w: Int, _ h: Int, seed: UInt64) -> [Float] {
    var rng = RNG(seed: seed)
    return (0..<(w * h)).map { _ in Float(rng.uniform()) }
}

private func mean(_ a: [Float]) -> Double { a.reduce(0.0) { $0 + Double($1) } / Double(a.count) }

private func variance(_ a: [Float]) -> Double {
    let m = mean(a)
    return a.reduce(0.0) { $0 + (Double($1) - m) * (Double($1) - m) } / Double(a.count)
}

private func correlation(_ a: [Float], _ b: [Float]) -> Double {
    let ma = mean(a), mb = mean(b)
    var sab = 0.0, saa = 0.0, sbb = 0.0
    for i in 0..<a.count {
        let da = Double(a[i]) - ma, db = Double(b[i]) - mb
        sab += da * db; saa += da * da; sbb += db * db
    }
    return sab / (saa * sbb).squareRoot()
}

private func crop(_ img: [Float], width: Int, height: Int, box: (x: Int, y: Int, w: Int, h: Int), size: Int) -> [Float] {
    var out = [Float](repeating: .nan, count: size * size)
    img.withUnsafeBufferPointer { s in
        out.withUnsafeMutableBufferPointer { d in
            cropResize(s.baseAddress!, width: width, height: height, box: box, to: d.baseAddress!, size: size)
        }
    }
    return out
}

private func resize(_ img: [Float], width: Int, height: Int, outWidth: Int, outHeight: Int) throws -> [Float] {
    var out = [Float](repeating: .nan, count: outWidth * outHeight)
    try img.withUnsafeBufferPointer { s in
        try out.withUnsafeMutableBufferPointer { d in
            try resizeImage(s.baseAddress!, width: width, height: height, to: d.baseAddress!,
                            outWidth: outWidth, outHeight: outHeight)
        }
    }
    return out
}

final class AugmentTests: XCTestCase {
    // MARK: Resampling

    func testSameSizeCropIsExactCopy() {
        let (w, h) = (512, 480)
        let img = coordinateImage(width: w, height: h)
        let (x0, y0) = (48, 160)
        let out = crop(img, width: w, height: h, box: (x0, y0, 224, 224), size: 224)
        for i in 0..<224 {
            for j in 0..<224 {
                XCTAssertEqual(out[i * 224 + j], img[(y0 + i) * w + x0 + j])
                if out[i * 224 + j] != img[(y0 + i) * w + x0 + j] { return }
            }
        }
    }

    func testTwoToOneIsExactBlockMean() {
        let (w, h) = (512, 512)
        let img = coordinateImage(width: w, height: h)
        for (x0, y0) in [(32, 48), (64, 0), (0, 16)] {
            let out = crop(img, width: w, height: h, box: (x0, y0, 448, 448), size: 224)
            var bad = 0
            for i in 0..<224 {
                for j in 0..<224 {
                    let expected = Double(x0 + 2 * j) + 0.5 + 1000 * (Double(y0 + 2 * i) + 0.5)
                    if Double(out[i * 224 + j]) != expected {
                        if bad < 5 { XCTFail("box (\(x0), \(y0)) at (\(i), \(j)): \(out[i * 224 + j]) != \(expected)") }
                        bad += 1
                    }
                }
            }
            XCTAssertEqual(bad, 0)
        }
    }

    func testIntegerFactorFourAndNonSquareBox() {
        // 64 x 32 box -> 16: 4 x 2 runs in x, 2 in y... here x factor 4, y factor 2.
        let (w, h) = (100, 90)
        let img = coordinateImage(width: w, height: h)
        let (x0, y0) = (7, 30)
        let out = crop(img, width: w, height: h, box: (x0, y0, 64, 32), size: 16)
        for i in 0..<16 {
            for j in 0..<16 {
                let expected = Double(x0 + 4 * j) + 1.5 + 1000 * (Double(y0 + 2 * i) + 0.5)
                XCTAssertEqual(Double(out[i * 16 + j]), expected, accuracy: 1e-6 * expected)
            }
        }
    }

    func testNonIntegerDownscaleKeepsMeanAndMonotone() {
        let (w, h) = (400, 360)
        // Ramps in x and in y, separately, to catch a transposition.
        var rampX = [Float](repeating: 0, count: w * h), rampY = rampX
        for y in 0..<h { for x in 0..<w { rampX[y * w + x] = Float(x) / 400; rampY[y * w + x] = Float(y) / 360 } }
        let box = (x: 37, y: 11, w: 300, h: 300)
        func boxMean(_ img: [Float]) -> Double {
            var s = 0.0
            for y in box.y..<(box.y + box.h) { for x in box.x..<(box.x + box.w) { s += Double(img[y * w + x]) } }
            return s / Double(box.w * box.h)
        }
        for (img, alongX) in [(rampX, true), (rampY, false)] {
            let out = crop(img, width: w, height: h, box: box, size: 224)
            XCTAssertEqual(mean(out), boxMean(img), accuracy: 1e-5)
            for i in 0..<224 {
                for j in 1..<224 {
                    let (a, b) = alongX ? (out[i * 224 + j - 1], out[i * 224 + j]) : (out[(j - 1) * 224 + i], out[j * 224 + i])
                    XCTAssertLessThan(a, b, "not increasing at \(i), \(j) (alongX \(alongX))")
                    // Constant along the other axis.
                    let (c, d) = alongX ? (out[j], out[i * 224 + j]) : (out[j * 224], out[j * 224 + i])
                    XCTAssertEqual(c, d, accuracy: 1e-6)
                }
            }
            // Output 0 covers source [0, s), s = 300/224: all of pixel 0 and s - 1 of pixel 1, so
            // its value is box origin + (s - 1) / s (in pixels of the ramp).
            let s = 300.0 / 224
            let expectedFirst = alongX ? (Double(box.x) + (s - 1) / s) / 400 : (Double(box.y) + (s - 1) / s) / 360
            XCTAssertEqual(Double(out[0]), expectedFirst, accuracy: 1e-6)
            let expectedLast = alongX ? (Double(box.x + 299) - (s - 1) / s) / 400 : (Double(box.y + 299) - (s - 1) / s) / 360
            XCTAssertEqual(Double(out[223 * 224 + 223]), expectedLast, accuracy: 1e-6)
        }
    }

    func testAreaDownscaleOfRandomImageKeepsMean() throws {
        let img = randomImage(1000, 700, seed: 3)
        let out = try resize(img, width: 1000, height: 700, outWidth: 512, outHeight: 512)
        XCTAssertEqual(mean(out), mean(img), accuracy: 1e-5)
        XCTAssertLessThan(variance(out), variance(img))
    }

    func testUpscaleIsBilinearAndMonotone() throws {
        // 4 -> 8 along x: half-pixel centres give source coords -0.25 (clamped 0), 0.25, 0.75, ...
        let src: [Float] = [0, 1, 2, 3]
        let out = try resize(src, width: 4, height: 1, outWidth: 8, outHeight: 1)
        let expected: [Float] = [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]
        for i in 0..<8 { XCTAssertEqual(out[i], expected[i], accuracy: 1e-6) }
        // Same along y (column vector), which must not be transposed.
        let outY = try resize(src, width: 1, height: 4, outWidth: 1, outHeight: 8)
        for i in 0..<8 { XCTAssertEqual(outY[i], expected[i], accuracy: 1e-6) }
        // Mixed: up in x, down in y, constant image stays constant.
        let constant = [Float](repeating: 0.37, count: 300 * 700)
        let c = try resize(constant, width: 300, height: 700, outWidth: 512, outHeight: 512)
        for v in c { XCTAssertEqual(v, 0.37, accuracy: 1e-6) }
        // Ramp upscaled is non-decreasing and inside the range.
        let ramp = (0..<(100 * 100)).map { Float($0 % 100) }
        let r = try resize(ramp, width: 100, height: 100, outWidth: 224, outHeight: 224)
        for i in 0..<224 {
            for j in 1..<224 { XCTAssertLessThanOrEqual(r[i * 224 + j - 1], r[i * 224 + j]) }
            XCTAssertEqual(r[i * 224], 0, accuracy: 1e-4); XCTAssertEqual(r[i * 224 + 223], 99, accuracy: 1e-4)
        }
    }

    func testResizeSameSizeIsCopy() throws {
        let img = randomImage(64, 64, seed: 9)
        XCTAssertEqual(try resize(img, width: 64, height: 64, outWidth: 64, outHeight: 64), img)
    }

    func testCheckedRejectsBadInput() {
        let img = [Float](repeating: 0, count: 100 * 80)
        var out = [Float](repeating: 0, count: 32 * 32)
        func attempt(_ box: (x: Int, y: Int, w: Int, h: Int), width: Int = 100, height: Int = 80, size: Int = 32) throws {
            try img.withUnsafeBufferPointer { s in
                try out.withUnsafeMutableBufferPointer { d in
                    try cropResizeChecked(s.baseAddress!, width: width, height: height, box: box, to: d.baseAddress!, size: size)
                }
            }
        }
        XCTAssertNoThrow(try attempt((0, 0, 100, 80)))
        XCTAssertNoThrow(try attempt((10, 20, 64, 60)))
        XCTAssertThrowsError(try attempt((40, 0, 64, 64)))      // past the right edge
        XCTAssertThrowsError(try attempt((0, 20, 64, 64)))      // past the bottom edge
        XCTAssertThrowsError(try attempt((-1, 0, 10, 10)))
        XCTAssertThrowsError(try attempt((0, -1, 10, 10)))
        XCTAssertThrowsError(try attempt((0, 0, 0, 10)))
        XCTAssertThrowsError(try attempt((0, 0, 10, 10), size: 0))
        XCTAssertThrowsError(try attempt((0, 0, 10, 10), width: 0))
        XCTAssertThrowsError(try attempt((Int.max, 0, 10, 10)))
        XCTAssertThrowsError(try attempt((0, 0, 10, 10), size: Int.max))
        func attemptResize(width: Int, height: Int, outWidth: Int, outHeight: Int) throws {
            try img.withUnsafeBufferPointer { s in
                try out.withUnsafeMutableBufferPointer { d in
                    try resizeImage(s.baseAddress!, width: width, height: height, to: d.baseAddress!,
                                    outWidth: outWidth, outHeight: outHeight)
                }
            }
        }
        XCTAssertNoThrow(try attemptResize(width: 100, height: 80, outWidth: 32, outHeight: 32))
        XCTAssertThrowsError(try attemptResize(width: 100, height: 80, outWidth: -3, outHeight: 5))
        XCTAssertThrowsError(try attemptResize(width: 100, height: -80, outWidth: 3, outHeight: 5))
        XCTAssertThrowsError(try attemptResize(width: Int.max, height: 2, outWidth: 3, outHeight: 5))
    }

    // MARK: Blur and sharpen

    private func blurred(_ img: [Float], _ w: Int, _ h: Int, sigma: Float) -> [Float] {
        var out = [Float](repeating: .nan, count: w * h)
        img.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                gaussianBlur(s.baseAddress!, to: d.baseAddress!, width: w, height: h, sigma: sigma)
            }
        }
        return out
    }

    func testBlurKeepsConstantsAndMeanAndReducesVariance() {
        let constant = [Float](repeating: 0.42, count: 64 * 48)
        for v in blurred(constant, 64, 48, sigma: 1.7) { XCTAssertEqual(v, 0.42, accuracy: 1e-6) }
        let img = randomImage(96, 80, seed: 5)
        // 0.1 is the default minimum (practically the identity); 40 exceeds the radius cap.
        for sigma: Float in [0.1, 0.5, 0.7, 2, 5, 40] {
            let b = blurred(img, 96, 80, sigma: sigma)
            XCTAssertEqual(mean(b), mean(img), accuracy: 1e-4, "sigma \(sigma)")
            if sigma >= 0.5 {
                XCTAssertLessThan(variance(b), variance(img), "sigma \(sigma)")
            } else {
                XCTAssertLessThanOrEqual(variance(b), variance(img), "sigma \(sigma)")
            }
        }
        XCTAssertLessThan(variance(blurred(img, 96, 80, sigma: 2)), variance(blurred(img, 96, 80, sigma: 1)))
        XCTAssertEqual(blurred(img, 96, 80, sigma: 0), img)
    }

    func testBlurOfCentredDeltaIsSymmetric() {
        let n = 31
        var delta = [Float](repeating: 0, count: n * n)
        delta[15 * n + 15] = 1
        let k = blurred(delta, n, n, sigma: 2)
        XCTAssertEqual(k.reduce(0.0) { $0 + Double($1) }, 1, accuracy: 1e-5)
        for y in 0..<n {
            for x in 0..<n {
                let v = k[y * n + x]
                XCTAssertEqual(v, k[y * n + (n - 1 - x)])
                XCTAssertEqual(v, k[(n - 1 - y) * n + x])
                XCTAssertEqual(v, k[x * n + y])
            }
        }
        // Peak in the centre, decreasing outwards, and Gaussian profile exp(-d^2 / 8) ratio.
        XCTAssertEqual(k.max(), k[15 * n + 15])
        XCTAssertEqual(Double(k[15 * n + 17] / k[15 * n + 15]), exp(-4.0 / 8), accuracy: 1e-5)
        XCTAssertEqual(k[15 * n + 15 + 7], 0)  // beyond radius ceil(3 * 2) = 6
        XCTAssertGreaterThan(k[15 * n + 15 + 6], 0)
    }

    func testBlurMatchesNaiveReflectConvolution() {
        // Small image with a radius (8) larger than its height (7), to exercise repeated
        // mirroring (the radius is capped at the longer side, 9, so this stays uncapped).
        let (w, h) = (9, 7)
        let img = randomImage(w, h, seed: 8)
        for sigma: Float in [1.2, 2.5] {
            let r = Int((3 * Double(sigma)).rounded(.up))
            var kern = (-r...r).map { exp(-Double($0 * $0) / (2 * Double(sigma) * Double(sigma))) }
            let total = kern.reduce(0, +)
            kern = kern.map { $0 / total }
            // Reference: mirror "cba|abc|cba" extended periodically, built by explicit reflection.
            func mirror(_ i: Int, _ n: Int) -> Int {
                var i = i
                while i < 0 || i >= n { i = i < 0 ? -1 - i : 2 * n - 1 - i }
                return i
            }
            let out = blurred(img, w, h, sigma: sigma)
            for y in 0..<h {
                for x in 0..<w {
                    var s = 0.0
                    for dy in -r...r {
                        for dx in -r...r {
                            s += kern[dy + r] * kern[dx + r] * Double(img[mirror(y + dy, h) * w + mirror(x + dx, w)])
                        }
                    }
                    XCTAssertEqual(Double(out[y * w + x]), s, accuracy: 1e-5, "sigma \(sigma) at (\(x), \(y))")
                }
            }
        }
    }

    func testSharpenIncreasesVarianceAndKeepsConstants() {
        let n = 64
        var rng = RNG(seed: 12)
        var img = [Float](repeating: 0, count: n * n)
        for y in 0..<n { for x in 0..<n { img[y * n + x] = Float(x + y) / Float(2 * n) + 0.02 * Float(rng.normal()) } }
        var sharp = img
        sharp.withUnsafeMutableBufferPointer { unsharpMask($0.baseAddress!, width: n, height: n, amount: 1) }
        XCTAssertGreaterThan(variance(sharp), variance(img))
        XCTAssertNotEqual(sharp, img)
        var constant = [Float](repeating: 0.3, count: n * n)
        constant.withUnsafeMutableBufferPointer { unsharpMask($0.baseAddress!, width: n, height: n, amount: 1.5) }
        for v in constant { XCTAssertEqual(v, 0.3, accuracy: 1e-6) }
    }

    // MARK: apply()

    private func allOn() -> AugmentConfig {
        var c = AugmentConfig()
        c.brightnessContrastP = 1; c.blurP = 1; c.sharpenP = 1; c.gammaP = 1
        return c
    }

    private func augmented(_ img: [Float], size: Int, config: AugmentConfig, seed: UInt64) -> ([Float], RNG) {
        var rng = RNG(seed: seed)
        var out = img
        out.withUnsafeMutableBufferPointer { PhotometricAugment(config).apply($0.baseAddress!, size: size, rng: &rng) }
        return (out, rng)
    }

    private func sameState(_ a: RNG, _ b: RNG) -> Bool {
        a.state.0 == b.state.0 && a.state.1 == b.state.1 && a.state.2 == b.state.2 && a.state.3 == b.state.3
    }

    func testApplyDeterministicPerSeedAndSeedsDiffer() {
        let img = randomImage(32, 32, seed: 4)
        for config in [AugmentConfig(), allOn()] {
            for seed: UInt64 in [1, 2, 3, 77] {
                let (a, ra) = augmented(img, size: 32, config: config, seed: seed)
                let (b, rb) = augmented(img, size: 32, config: config, seed: seed)
                XCTAssertEqual(a, b)
                XCTAssertTrue(sameState(ra, rb))
            }
        }
        let (a, _) = augmented(img, size: 32, config: allOn(), seed: 1)
        let (b, _) = augmented(img, size: 32, config: allOn(), seed: 2)
        XCTAssertNotEqual(a, b)
        XCTAssertNotEqual(a, img)
        // With the defaults, over many seeds some outputs change and some do not.
        var changed = 0
        for seed: UInt64 in 0..<40 where augmented(img, size: 32, config: AugmentConfig(), seed: seed).0 != img { changed += 1 }
        XCTAssertGreaterThan(changed, 10)
        XCTAssertLessThan(changed, 40)
    }

    func testAllOffIsIdentityAndStreamStaysAligned() {
        let img = randomImage(40, 40, seed: 6)
        let (same, rOff) = augmented(img, size: 40, config: .off, seed: 9)
        XCTAssertEqual(same.map(\.bitPattern), img.map(\.bitPattern))
        let (changed, rOn) = augmented(img, size: 40, config: allOn(), seed: 9)
        XCTAssertNotEqual(changed, img)
        XCTAssertTrue(sameState(rOff, rOn))
        let (_, rDefault) = augmented(img, size: 40, config: AugmentConfig(), seed: 9)
        XCTAssertTrue(sameState(rOff, rDefault))
        // Exactly drawsPerCall uniforms.
        var expected = RNG(seed: 9)
        for _ in 0..<PhotometricAugment.drawsPerCall { _ = expected.uniform() }
        XCTAssertTrue(sameState(rOff, expected))
        // Size 0 / negative: no trap, same draws.
        var rng = RNG(seed: 9)
        var one: Float = 0.5
        PhotometricAugment(allOn()).apply(&one, size: -1, rng: &rng)
        XCTAssertEqual(one, 0.5)
        XCTAssertTrue(sameState(rng, expected))
    }

    func testBrightnessContrastIsAffine() {
        var c = AugmentConfig.off
        c.brightnessContrastP = 1
        let img = randomImage(48, 48, seed: 10)
        var sawChange = false
        for seed: UInt64 in 0..<5 {
            let (out, _) = augmented(img, size: 48, config: c, seed: seed)
            XCTAssertEqual(correlation(out, img), 1, accuracy: 1e-6)
            // Slope within [0.8, 1.2], mean shift within +-0.2.
            let slope = (variance(out) / variance(img)).squareRoot()
            XCTAssertGreaterThanOrEqual(slope, 0.8 - 1e-5); XCTAssertLessThanOrEqual(slope, 1.2 + 1e-5)
            XCTAssertLessThanOrEqual(abs(mean(out) - mean(img)), 0.2 + 1e-5)
            if out != img { sawChange = true }
        }
        XCTAssertTrue(sawChange)
    }

    func testSingleTransformsMatchTheirKernels() {
        let n = 32
        let img = randomImage(n, n, seed: 13)
        // Blur only with a fixed sigma equals gaussianBlur.
        var c = AugmentConfig.off
        c.blurP = 1; c.blurSigmaMin = 1.3; c.blurSigmaMax = 1.3
        XCTAssertEqual(augmented(img, size: n, config: c, seed: 1).0, blurred(img, n, n, sigma: 1.3))
        // Gamma only with a fixed gamma: clamp(x)^2.
        c = .off
        c.gammaP = 1; c.gammaMin = 2; c.gammaMax = 2
        var shifted = img.map { $0 * 1.4 - 0.2 }
        let (g, _) = augmented(shifted, size: n, config: c, seed: 1)
        for i in 0..<(n * n) {
            let v = min(max(shifted[i], 0), 1)
            XCTAssertEqual(g[i], v * v, accuracy: 1e-6)
        }
        // Sharpen only equals the unsharp mask.
        c = .off
        c.sharpenP = 1; c.sharpenAmount = 0.8
        shifted.withUnsafeMutableBufferPointer { unsharpMask($0.baseAddress!, width: n, height: n, amount: 0.8) }
        var input = img.map { $0 * 1.4 - 0.2 }
        var rng = RNG(seed: 1)
        input.withUnsafeMutableBufferPointer { PhotometricAugment(c).apply($0.baseAddress!, size: n, rng: &rng) }
        XCTAssertEqual(input, shifted)
    }

    // MARK: Config

    func testConfigJSONAndValidation() throws {
        var c = AugmentConfig()
        c.blurSigmaMax = 3; c.gammaP = 0.25
        let text = c.json
        for key in ["brightness_contrast_p", "blur_sigma_min", "blur_sigma_max", "sharpen_amount", "gamma_p", "gamma_min"] {
            XCTAssertTrue(text.contains("\"\(key)\""), "missing \(key) in \(text)")
        }
        XCTAssertEqual(try AugmentConfig(json: text, what: "augment"), c)
        let partial = try AugmentConfig(json: #"{"blur_p": 0.1}"#, what: "augment")
        var expected = AugmentConfig()
        expected.blurP = 0.1
        XCTAssertEqual(partial, expected)
        XCTAssertThrowsError(try AugmentConfig(json: #"{"blur_pp": 0.1}"#, what: "augment")) { error in
            XCTAssertTrue("\(error)".contains("unknown setting 'blur_pp'"), "\(error)")
        }
        XCTAssertNoThrow(try AugmentConfig().validate())
        XCTAssertNoThrow(try AugmentConfig.off.validate())
        let bad: [(inout AugmentConfig) -> Void] = [
            { $0.blurP = 1.5 }, { $0.sharpenP = -0.1 }, { $0.gammaP = .nan }, { $0.brightness = -0.1 },
            { $0.contrast = 1.5 }, { $0.blurSigmaMin = 3 }, { $0.blurSigmaMin = -1 }, { $0.blurSigmaMax = .infinity },
            { $0.gammaMin = 0 }, { $0.gammaMax = 0.5 }, { $0.sharpenAmount = -1 },
        ]
        for (i, mutate) in bad.enumerated() {
            var b = AugmentConfig()
            mutate(&b)
            XCTAssertThrowsError(try b.validate(), "case \(i)")
        }
    }

    // MARK: Random resized crop

    func testRandomResizedCropBoxes() {
        var rng = RNG(seed: 21)
        var fractions: [Double] = []
        for (w, h) in [(512, 512), (640, 480), (300, 700)] {
            for _ in 0..<500 {
                let b = randomResizedCrop(width: w, height: h, rng: &rng)
                XCTAssertGreaterThan(b.w, 0); XCTAssertGreaterThan(b.h, 0)
                XCTAssertGreaterThanOrEqual(b.x, 0); XCTAssertGreaterThanOrEqual(b.y, 0)
                XCTAssertLessThanOrEqual(b.x + b.w, w); XCTAssertLessThanOrEqual(b.y + b.h, h)
                let frac = Double(b.w * b.h) / Double(w * h)
                fractions.append(frac)
                // Rounding w and h moves the area by at most ~ (w + h) / 2 + 1 pixels.
                let slack = (Double(b.w + b.h) / 2 + 1) / Double(w * h)
                XCTAssertGreaterThanOrEqual(frac, 0.4 - slack); XCTAssertLessThanOrEqual(frac, 1 + slack)
                let aspect = Double(b.w) / Double(b.h)
                let ok = aspect >= 0.75 * (1 - 2.0 / Double(b.h)) - 1e-9 && aspect <= 4.0 / 3 * (1 + 2.0 / Double(b.h)) + 1e-9
                XCTAssertTrue(ok || (b.w == w && b.h == h) || b.x == (w - b.w) / 2, "aspect \(aspect)")
            }
        }
        // The fractions actually spread over the range.
        XCTAssertLessThan(fractions.min()!, 0.45)
        XCTAssertGreaterThan(fractions.max()!, 0.9)
        // Deterministic per seed.
        var r1 = RNG(seed: 5), r2 = RNG(seed: 5)
        for _ in 0..<50 {
            let a = randomResizedCrop(width: 333, height: 250, rng: &r1)
            let b = randomResizedCrop(width: 333, height: 250, rng: &r2)
            XCTAssertTrue(a == b)
        }
        var r3 = RNG(seed: 6)
        var differs = false
        r1 = RNG(seed: 5)
        for _ in 0..<5 where randomResizedCrop(width: 333, height: 250, rng: &r1) != randomResizedCrop(width: 333, height: 250, rng: &r3) { differs = true }
        XCTAssertTrue(differs)
    }

    func testRandomResizedCropFallbackAndBadInput() {
        var rng = RNG(seed: 1)
        // A square crop of 90% of a 100 x 10 strip never fits: centre crop clipped to ratio 1.
        let b = randomResizedCrop(width: 100, height: 10, scale: (0.9, 1), ratio: (1, 1), rng: &rng)
        XCTAssertTrue(b == (45, 0, 10, 10), "\(b)")
        let tall = randomResizedCrop(width: 10, height: 100, scale: (0.9, 1), ratio: (1, 1), rng: &rng)
        XCTAssertTrue(tall == (0, 45, 10, 10), "\(tall)")
        XCTAssertTrue(randomResizedCrop(width: 0, height: 10, rng: &rng) == (0, 0, 0, 0))
        XCTAssertTrue(randomResizedCrop(width: -5, height: -5, rng: &rng) == (0, 0, 0, 0))
        // Nonsense ranges do not trap and give a valid box.
        for (scale, ratio) in [((Float.nan, 1), (Float(0.75), Float(1.33))), ((0.4, 1), (-1, 2)), ((0.4, 1), (.nan, .infinity)),
                               ((2, 3), (0.75, 1.33)), ((-1, 0), (0.75, 1.33))] as [((Float, Float), (Float, Float))] {
            let c = randomResizedCrop(width: 64, height: 48, scale: scale, ratio: ratio, rng: &rng)
            XCTAssertTrue(c.w > 0 && c.h > 0 && c.x >= 0 && c.y >= 0 && c.x + c.w <= 64 && c.y + c.h <= 48, "\(c)")
        }
    }
}
