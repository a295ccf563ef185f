import Synchronization

/// A lock around state shared between threads: handles called from several Python threads,
/// the bf16 primitive cache, errors collected from parallel workers.
public final class Lock: @unchecked Sendable {
    private let mutex = Mutex(())

    public init() {}

    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        try mutex.withLock { _ in try body() }
    }
}
