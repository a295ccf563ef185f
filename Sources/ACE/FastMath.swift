/// exp and erf written as straight-line arithmetic, so the loops of GELU and softmax
/// vectorize (libm's expf/erff are opaque calls, one element at a time).

/// a * b + c with one rounding (a fused multiply-add instruction where the target has one:
/// Swift does not contract a * b + c by itself).
@inline(__always)
func mulAdd(_ a: Float, _ b: Float, _ c: Float) -> Float { c.addingProduct(a, b) }

/// e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts for exactness), e^r by its
/// degree-6 Taylor polynomial (relative error < 3e-7 on that interval), 2^n put into the
/// exponent bits. Inputs are clamped to [-87.3, 88.3], inside the normal range of Float.
@inline(__always)
public func fastExp(_ x: Float) -> Float {
    let xc = min(max(x, -87.3), 88.3)
    let n = (xc * 1.44269504088896341).rounded(.toNearestOrEven)
    let r = mulAdd(-n, 1.42860682030941723e-6, mulAdd(-n, 0.693145751953125, xc))
    var p: Float = 1.0 / 720
    p = mulAdd(p, r, 1.0 / 120)
    p = mulAdd(p, r, 1.0 / 24)
    p = mulAdd(p, r, 1.0 / 6)
    p = mulAdd(p, r, 0.5)
    p = mulAdd(p, r, 1)
    p = mulAdd(p, r, 1)
    return p * Float(bitPattern: UInt32(bitPattern: Int32(n) + 127) << 23)
}

/// log(1 + x) for x in [0, 1]: 2 atanh(t) with t = x / (2 + x) <= 1/3, by its series up to
/// t^13 (the first term left out is below 3e-8 relative).
@inline(__always)
public func fastLog1p(_ x: Float) -> Float {
    let t = x / (2 + x), t2 = t * t
    var p: Float = 1.0 / 13
    p = p * t2 + 1.0 / 11
    p = p * t2 + 1.0 / 9
    p = p * t2 + 1.0 / 7
    p = p * t2 + 1.0 / 5
    p = p * t2 + 1.0 / 3
    p = p * t2 + 1
    return 2 * t * p
}

/// erf(x) by Abramowitz & Stegun 7.1.26: 1 - (a1 t + ... + a5 t^5) e^(-x^2), t = 1/(1 + p|x|),
/// absolute error below 1.5e-7 (5e-7 in Float32 arithmetic), odd symmetry restored by the sign.
@inline(__always)
public func fastErf(_ x: Float) -> Float {
    let ax = abs(x)
    let t = 1 / (1 + 0.3275911 * ax)
    var poly: Float = 1.061405429
    poly = mulAdd(poly, t, -1.453152027)
    poly = mulAdd(poly, t, 1.421413741)
    poly = mulAdd(poly, t, -0.284496736)
    poly = mulAdd(poly, t, 0.254829592)
    let y = mulAdd(-poly * t, fastExp(-ax * ax), 1)
    return x < 0 ? -y : y
}

// SIMD16 helpers. The standard library's `pointwiseMax`, `max()` and `sum()` on SIMD types
// are generic loops over lanes that compile to one scalar at a time through the stack
// (6x slower for a softmax row); comparisons with `replacing(with:where:)` and halving
// additions lower to vector instructions.

@inline(__always)
func loadSIMD16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always)
func storeSIMD16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

@inline(__always)
func lanewiseMax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> { a.replacing(with: b, where: b .> a) }

@inline(__always)
func horizontalMax(_ v: SIMD16<Float>) -> Float {
    let a = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)
    let c = b.lowHalf.replacing(with: b.highHalf, where: b.highHalf .> b.lowHalf)
    return max(c[0], c[1])
}

@inline(__always)
func horizontalSum(_ v: SIMD16<Float>) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// x[0] + ... + x[n-1], on 16 lanes.
@inline(__always)
func laneSum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let lanes = n / 16 * 16
    var acc = SIMD16<Float>()
    for j in stride(from: 0, to: lanes, by: 16) { acc += loadSIMD16(x + j) }
    var s = horizontalSum(acc)
    for j in lanes..<n { s += x[j] }
    return s
}

/// sum_j (x[j] - mean)^2, on 16 lanes.
@inline(__always)
func laneSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, mean: Float) -> Float {
    let lanes = n / 16 * 16
    var acc = SIMD16<Float>()
    let m = SIMD16<Float>(repeating: mean)
    for j in stride(from: 0, to: lanes, by: 16) { let d = loadSIMD16(x + j) - m; acc += d * d }
    var s = horizontalSum(acc)
    for j in lanes..<n { let d = x[j] - mean; s += d * d }
    return s
}

/// sum_j a[j] b[j], on 16 lanes.
@inline(__always)
func laneDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    let lanes = n / 16 * 16
    var acc = SIMD16<Float>()
    for j in stride(from: 0, to: lanes, by: 16) { acc += loadSIMD16(a + j) * loadSIMD16(b + j) }
    var s = horizontalSum(acc)
    for j in lanes..<n { s += a[j] * b[j] }
    return s
}
