import FoundationEssentials
import Glibc

/// xoshiro256** with a SplitMix64 seeder. Its four words are the whole state, so a
/// checkpoint can store them and a resumed run draws the same numbers.
public struct RNG {
    public var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var z = seed
        func splitmix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        state = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * uniform() }

    /// Uniform integer in 0..<n.
    public mutating func int(_ n: Int) -> Int { Int(uniform() * Double(n)) }

    /// Standard normal by Box-Muller (one value per call; simplicity over speed).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Normal(0, std) truncated to [-2, 2] absolute, as timm's trunc_normal_(std=.02).
    public mutating func truncatedNormal(std: Double, bound: Double = 2) -> Float {
        while true {
            let v = normal() * std
            if abs(v) <= bound { return Float(v) }
        }
    }
}

/// SplitMix64's finalizer: a bijective mix of 64 bits, for deriving independent stream
/// seeds from structured keys (step word, image index).
@inline(__always)
public func mix64(_ value: UInt64) -> UInt64 {
    var x = value
    x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
    x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
    return x ^ (x >> 31)
}
