/// exp and erf written as straight-line arithmetic, so the loops of GELU and softmax
/// vectorize (libm's expf/erff are opaque calls, one element at a time).

/// e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts for exactness), e^r by its
/// degree-6 Taylor polynomial (relative error < 3e-7 on that interval), 2^n put into the
/// exponent bits. Inputs are clamped to [-87.3, 88.3], inside the normal range of Float.
@inline(__always)
public func fastExp(_ x: Float) -> Float {
    let xc = min(max(x, -87.3), 88.3)
    let n = (xc * 1.44269504088896341).rounded(.toNearestOrEven)
    let r = (xc - n * 0.693145751953125) - n * 1.42860682030941723e-6
    var p: Float = 1.0 / 720
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    return p * Float(bitPattern: UInt32(bitPattern: Int32(n) + 127) << 23)
}

/// erf(x) by Abramowitz & Stegun 7.1.26: 1 - (a1 t + ... + a5 t^5) e^(-x^2), t = 1/(1 + p|x|),
/// absolute error below 1.5e-7 (5e-7 in Float32 arithmetic), odd symmetry restored by the sign.
@inline(__always)
public func fastErf(_ x: Float) -> Float {
    let ax = abs(x)
    let t = 1 / (1 + 0.3275911 * ax)
    var poly: Float = 1.061405429
    poly = poly * t - 1.453152027
    poly = poly * t + 1.421413741
    poly = poly * t - 0.284496736
    poly = poly * t + 0.254829592
    let y = 1 - poly * t * fastExp(-ax * ax)
    return x < 0 ? -y : y
}
