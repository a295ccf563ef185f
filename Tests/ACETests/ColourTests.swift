import XCTest
import Foundation
@testable import ACE

/// Colour training: the views of a colour image are the grey pipeline applied per channel,
/// the colour jitter follows torchvision's ColorJitter, the field-of-view mask is the
/// inscribed ellipse.
final class ColourTests: XCTestCase {
    /// A small ACE run: 128 px images, 8 cells of 16 px, 4-cell fine views at 64 px.
    func smallConfig(chans: Int) -> PretrainConfig {
        var c = PretrainConfig()
        c.encoder = "vit_nano"; c.inChans = chans; c.batchSize = 2; c.precision = "fp32"
        c.headHidden = 16; c.headBottleneck = 8; c.headPrototypes = 16
        c.grid.imageSize = 128; c.grid.gridCells = 8; c.grid.fineCells = 4; c.grid.inputSize = 64
        c.grid.minOverlap = 1
        return c
    }

    /// Three different known patterns (a coordinate ramp, its transpose, smooth waves),
    /// height x width, in [0, 1].
    func patterns(height: Int, width: Int) -> [[Float]] {
        var out = [[Float]](repeating: [Float](repeating: 0, count: height * width), count: 3)
        for y in 0..<height {
            for x in 0..<width {
                out[0][y * width + x] = Float(x) / Float(width)
                out[1][y * width + x] = Float(y) / Float(height)
                out[2][y * width + x] = 0.5 + 0.4 * sinf(Float(x) * 0.21) * cosf(Float(y) * 0.13)
            }
        }
        return out
    }

    func views(_ t: Trainer, _ images: [Float], batch: Int, height: Int, width: Int, keys: [UInt64]) throws -> [Float] {
        try images.withUnsafeBufferPointer {
            _ = try t.makeViews($0.baseAddress!, batch: batch, height: height, width: width, imageKeys: keys)
        }
        return Array(UnsafeBufferPointer(start: t.views.data, count: t.views.count))
    }

    /// With the default (grey) augmentation on and colour jitter off, channel c of every colour
    /// view equals, bit for bit, the grey view of pattern c under mean[c] / std[c]: the same
    /// boxes, the same random transforms, per-channel statistics in the right order. Also with
    /// a random pre-crop and on DINO's random-resized views.
    func testColourViewsAreTheGreyPipelinePerChannel() throws {
        let (h, w, b) = (150, 170, 2)
        let p = patterns(height: h, width: w)
        let means: [Float] = [0.3, 0.5, 0.7], stds: [Float] = [0.2, 0.25, 0.3]
        // Image 0 is the three patterns; image 1 the same in another channel order.
        let order = [[0, 1, 2], [2, 0, 1]]
        var colourImages: [Float] = []
        for o in order { for c in o { colourImages += p[c] } }
        let keys: [UInt64] = [11, 12345]
        for variant in 0..<3 {
            var colour = smallConfig(chans: 3)
            colour.mean = ChannelValues(means); colour.std = ChannelValues(stds)
            colour.augment.blurP = 1; colour.augment.sharpenP = 1; colour.augment.brightnessContrastP = 1
            if variant == 1 { colour.preCropScaleMin = 0.7 }
            if variant == 2 { colour.objective = .dino; colour.losses = ["global"] }
            let ct = try Trainer(colour, seed: 1)
            let cv = try views(ct, colourImages, batch: b, height: h, width: w, keys: keys)
            let n = colour.grid.inputSize * colour.grid.inputSize
            for ch in 0..<3 {
                var grey = colour
                grey.inChans = 1; grey.mean = ChannelValues([means[ch]]); grey.std = ChannelValues([stds[ch]])
                let gt = try Trainer(grey, seed: 1)
                let greyImages = order.flatMap { p[$0[ch]] }
                let gv = try views(gt, greyImages, batch: b, height: h, width: w, keys: keys)
                for row in 0..<(2 * b) {
                    let a = Array(cv[((row * 3) + ch) * n ..< ((row * 3) + ch + 1) * n])
                    let g = Array(gv[row * n ..< (row + 1) * n])
                    XCTAssertEqual(a, g, "variant \(variant) view row \(row) channel \(ch)")
                }
            }
            // The channels really differ (the check above would hold for copies too otherwise).
            XCTAssertNotEqual(Array(cv[0..<n]), Array(cv[n..<(2 * n)]))
        }
    }

    /// A scalar mean/std still reads and writes as a number; a per-channel one as a list, whose
    /// length must match in_chans; colour jitter on a grey run is refused.
    func testChannelValuesConfig() throws {
        var c = PretrainConfig()
        XCTAssertTrue(c.json.contains("\"mean\":0.757"), c.json)
        c.inChans = 3; c.mean = ChannelValues([0.1, 0.2, 0.3])
        XCTAssertTrue(c.json.contains("\"mean\":[0.1,0.2,0.3]"), c.json)
        XCTAssertEqual(try PretrainConfig(json: c.json, what: "pretraining"), c)
        let given = try PretrainConfig(json: #"{"in_chans": 3, "std": [0.5, 0.25, 0.125], "mean": 0.5}"#, what: "p")
        XCTAssertEqual(given.std(2), 0.125); XCTAssertEqual(given.mean(2), 0.5)
        for (json, message) in [(#"{"mean": [0.1, 0.2, 0.3]}"#, "one per channel (1)"),
                                (#"{"in_chans": 3, "std": [0.5, 0, 1]}"#, "std must be positive"),
                                (#"{"augment": {"color_jitter_p": 0.8}}"#, "colour images"),
                                (#"{"in_chans": 3, "augment": {"jitter_hue": 0.7}}"#, "jitter_hue")] {
            XCTAssertThrowsError(try PretrainConfig(json: json, what: "p").validate(), json) { error in
                XCTAssertTrue("\(error)".contains(message), "\(json): \(error)")
            }
        }
    }

    // MARK: - Colour jitter known answers

    func rgb(_ pixels: [(Float, Float, Float)]) -> [Float] {
        pixels.map(\.0) + pixels.map(\.1) + pixels.map(\.2)
    }

    func jitter(_ image: [Float], _ f: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                        UnsafeMutablePointer<Float>, Int) -> Void) -> [Float] {
        var x = image
        let n = x.count / 3
        x.withUnsafeMutableBufferPointer { p in f(p.baseAddress!, p.baseAddress! + n, p.baseAddress! + 2 * n, n) }
        return x
    }

    func testSaturationZeroGivesTheGrayImage() {
        let image = rgb([(0.9, 0.2, 0.1), (0.1, 0.8, 0.3), (0.5, 0.5, 0.5), (0, 0, 1)])
        let out = jitter(image) { adjustSaturation($0, $1, $2, count: $3, factor: 0) }
        for i in 0..<4 {
            let l: Float = 0.2989 * image[i] + 0.587 * image[4 + i] + 0.114 * image[8 + i]
            for c in 0..<3 { XCTAssertEqual(out[c * 4 + i], l, accuracy: 1e-6) }
        }
        // Factor 1 keeps the image; factor 2 doubles the distance from gray (clamped).
        XCTAssertEqual(jitter(image) { adjustSaturation($0, $1, $2, count: $3, factor: 1) }, image)
        let twice = jitter(image) { adjustSaturation($0, $1, $2, count: $3, factor: 2) }
        let l1: Float = 0.2989 * image[1] + 0.587 * image[5] + 0.114 * image[9]
        XCTAssertEqual(twice[5], min(1, 2 * image[5] - l1), accuracy: 1e-6)
    }

    func testHueRotationOfPureColours() {
        let image = rgb([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.6, 0.6), (0.5, 0.25, 0)])
        let third = jitter(image) { adjustHue($0, $1, $2, count: $3, shift: 1.0 / 3) }
        // Red -> green -> blue -> red; gray stays gray.
        let expected = rgb([(0, 1, 0), (0, 0, 1), (1, 0, 0), (0.6, 0.6, 0.6), (0, 0.5, 0.25)])
        for (a, e) in zip(third, expected) { XCTAssertEqual(a, e, accuracy: 1e-5) }
        // Half a turn: complementary colours; a negative shift wraps.
        let half = jitter(image) { adjustHue($0, $1, $2, count: $3, shift: -0.5) }
        let complement = rgb([(0, 1, 1), (1, 0, 1), (1, 1, 0), (0.6, 0.6, 0.6), (0, 0.25, 0.5)])
        for (a, e) in zip(half, complement) { XCTAssertEqual(a, e, accuracy: 1e-5) }
        // HSV round trip on arbitrary colours.
        for (r, g, b) in [(0.3, 0.7, 0.2), (0.9, 0.1, 0.5), (0.05, 0.4, 0.95)] as [(Float, Float, Float)] {
            let (h, s, v) = rgbToHSV(r, g, b)
            let back = hsvToRGB(h, s, v)
            XCTAssertEqual(back.0, r, accuracy: 1e-6); XCTAssertEqual(back.1, g, accuracy: 1e-6)
            XCTAssertEqual(back.2, b, accuracy: 1e-6)
        }
    }

    func testBrightnessAndContrastFactors() {
        let image = rgb([(0.2, 0.4, 0.6), (0.8, 0.1, 0.3)])
        let bright = jitter(image) { adjustBrightness($0, $1, $2, count: $3, factor: 1.5) }
        for (a, x) in zip(bright, image) { XCTAssertEqual(a, min(1, 1.5 * x), accuracy: 1e-7) }
        let flat = jitter(image) { adjustContrast($0, $1, $2, count: $3, factor: 0) }
        var mean: Float = 0
        for i in 0..<2 {
            let l: Float = 0.2989 * image[i] + 0.587 * image[2 + i] + 0.114 * image[4 + i]
            mean += l / 2
        }
        for a in flat { XCTAssertEqual(a, mean, accuracy: 1e-6) }
    }

    /// The jitter fires with its probability, in a uniformly random order, and grayscale
    /// makes the three planes equal; a grey image draws exactly what it drew before.
    func testJitterStreamsAndOrder() {
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 4), count: 4)
        var rng = RNG(seed: 3)
        for _ in 0..<4000 {
            let o = randomOrder(rng.uniform(), rng.uniform(), rng.uniform())
            XCTAssertEqual(o.sorted(), [0, 1, 2, 3])
            for (slot, op) in o.enumerated() { counts[slot][op] += 1 }
        }
        for row in counts { for c in row { XCTAssertEqual(Double(c) / 4000, 0.25, accuracy: 0.03) } }

        var config = AugmentConfig.off
        config.grayscaleP = 1
        let size = 8
        var image = (0..<(3 * size * size)).map { Float($0 % 17) / 17 }
        var a = RNG(seed: 1), colourRNG = RNG(seed: 2)
        image.withUnsafeMutableBufferPointer {
            PhotometricAugment(config).apply($0.baseAddress!, channels: 3, size: size, rng: &a, colourRNG: &colourRNG)
        }
        XCTAssertEqual(Array(image[0..<64]), Array(image[64..<128]))
        XCTAssertEqual(Array(image[0..<64]), Array(image[128..<192]))
        var expected = RNG(seed: 1), expectedColour = RNG(seed: 2)
        for _ in 0..<PhotometricAugment.drawsPerCall { _ = expected.next() }
        for _ in 0..<PhotometricAugment.colourDrawsPerCall { _ = expectedColour.next() }
        XCTAssertEqual(a.next(), expected.next())
        XCTAssertEqual(colourRNG.next(), expectedColour.next())
    }

    // MARK: - Field of view

    func testFieldOfViewIsTheInscribedEllipse() {
        for (w, h) in [(64, 64), (101, 80)] {
            var image = [Float](repeating: 1, count: w * h)
            image.withUnsafeMutableBufferPointer { maskFieldOfView($0.baseAddress!, width: w, height: h) }
            let kept = image.reduce(0, +)
            XCTAssertEqual(Double(kept) / Double(w * h), Double.pi / 4, accuracy: 0.02)
            XCTAssertEqual(image[0], 0); XCTAssertEqual(image[w * h - 1], 0)
            XCTAssertEqual(image[(h / 2) * w + w / 2], 1)
            // Symmetric under both mirrors.
            for y in 0..<h { for x in 0..<w {
                XCTAssertEqual(image[y * w + x], image[y * w + (w - 1 - x)])
                XCTAssertEqual(image[y * w + x], image[(h - 1 - y) * w + x])
            } }
        }
    }
}
