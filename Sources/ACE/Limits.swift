import Glibc

/// Size limits checked before anything is allocated. A Swift allocation that fails, or an
/// integer that overflows, traps and would kill the user's interpreter; sizes that come from
/// outside (configs, checkpoint headers, array shapes) are therefore checked here first and
/// refused with an ACEError naming the quantity and the limit.
public enum Limits {
    /// Largest side of an image given to the core, in pixels.
    public static let imageSide = 65_536
    /// Largest number of pixels of one image given to the core.
    public static let imagePixels = 1 << 30
    /// Largest encoder input side (img_size, and the height/width of a forward), in pixels.
    public static let inputSide = 8192
    /// Largest square the grid cropper resizes images to.
    public static let gridImageSide = 16_384
    /// Largest width of any layer (embed_dim, head widths, hidden widths).
    public static let width = 1 << 16
    /// Largest transformer depth.
    public static let depth = 1024
    /// Largest number of DINO prototypes K.
    public static let prototypes = 1 << 22
    /// Largest batch of images in one call.
    public static let batch = 1 << 16
    /// Largest number of optimizer steps of a run (epochs x steps_per_epoch).
    public static let steps = 1 << 40

    /// The machine's physical memory in bytes: the budget every estimate is checked against.
    public static var physicalMemory: Double {
        Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Throws unless `bytes` (an estimate, computed in floating point so it cannot overflow)
    /// fits in the machine's memory.
    public static func requireMemory(_ bytes: Double, for what: @autoclosure () -> String) throws {
        let budget = physicalMemory
        if bytes.isFinite && bytes <= budget { return }
        throw ACEError("\(what()) needs about \(gib(bytes)) of memory; this machine has \(gib(budget))")
    }

    /// Throws unless lo <= value <= hi, naming the setting.
    public static func require(_ value: Int, in range: ClosedRange<Int>, _ name: String) throws {
        try ACE.require(range.contains(value),
                        "\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }

    static func gib(_ bytes: Double) -> String {
        guard bytes.isFinite else { return "an unbounded amount" }
        let g = bytes / Double(1 << 30)
        return g >= 10 ? "\(Int(g.rounded())) GiB" : "\(Double(Int(g * 100)) / 100) GiB"
    }
}

/// a * b for sizes from outside, throwing instead of trapping on overflow.
func checkedProduct(_ factors: [Int], _ what: @autoclosure () -> String) throws -> Int {
    var p = 1
    for f in factors {
        let (r, overflow) = p.multipliedReportingOverflow(by: f)
        try require(f >= 0 && !overflow, "\(what()) is too large: \(factors.map(String.init).joined(separator: " x "))")
        p = r
    }
    return p
}
