/// A per-channel intensity statistic (the normalization mean or std): one number for every
/// channel, or one per channel (R, G, B for colour images). JSON: a number, or a list of them.
/// A single value still encodes as a plain number, so grey configs and checkpoints written
/// before colour training read and write the same bytes.
public struct ChannelValues: Codable, Equatable, Sendable, ExpressibleByFloatLiteral {
    public var values: [Float]

    public init(_ values: [Float]) { self.values = values }
    public init(floatLiteral value: Float) { values = [value] }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let x = try? c.decode(Float.self) { values = [x] } else { values = try c.decode([Float].self) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if values.count == 1 { try c.encode(values[0]) } else { try c.encode(values) }
    }

    /// The value of channel `c` (the single value for every channel).
    @inline(__always)
    public func callAsFunction(_ c: Int) -> Float { values.count == 1 ? values[0] : values[c] }

    /// One value, or one per channel of `channels`; every value finite (and positive).
    func validate(_ name: String, channels: Int, positive: Bool) throws {
        try require(values.count == 1 || values.count == channels,
                    "\(name) must be one number or one per channel (\(channels)), got \(values.count) values")
        for x in values {
            try require(x.isFinite, "\(name) must be finite, got \(x)")
            if positive { try require(x > 0, "\(name) must be positive, got \(x)") }
        }
    }
}
