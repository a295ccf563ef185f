/// Errors raised by the core. Every failure reachable from the C ABI is one of these,
/// never a trap: a trap would kill the user's Python interpreter and lose their run.
public struct ACEError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw ACEError(message()) }
}
