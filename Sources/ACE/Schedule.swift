import Glibc

/// DINO's schedules, as functions of the step: linear warm-up (as DINO's linspace, reaching
/// `base` at its last step) then a half cosine from `base` to `final` over the remaining
/// steps; held at `final` after the last step.
public struct CosineSchedule: Codable, Equatable {
    public var base: Double
    public var final: Double
    public var totalSteps: Int
    public var warmupSteps: Int = 0
    public var warmupStart: Double = 0

    public init(base: Double, final: Double, totalSteps: Int, warmupSteps: Int = 0, warmupStart: Double = 0) {
        self.base = base; self.final = final
        self.totalSteps = max(totalSteps, 1); self.warmupSteps = max(0, min(warmupSteps, totalSteps))
        self.warmupStart = warmupStart
    }

    public func callAsFunction(_ step: Int) -> Double {
        if step < warmupSteps {
            // DINO's np.linspace(start, base, W): step i gets start + (base - start) i / (W - 1).
            guard warmupSteps > 1 else { return warmupStart }
            return warmupStart + (base - warmupStart) * Double(step) / Double(warmupSteps - 1)
        }
        let span = totalSteps - warmupSteps
        guard span > 0, step < totalSteps else { return final }
        let progress = Double(step - warmupSteps) / Double(span)
        return final + 0.5 * (base - final) * (1 + cos(Double.pi * progress))
    }
}
