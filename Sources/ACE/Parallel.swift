import Dispatch

/// How many workers the products and elementwise kernels use (set by `setThreads`).
public nonisolated(unsafe) var workerCount: Int = {
    pinBLASToOneThread()
    return 2
}()

public func setThreads(_ n: Int) {
    pinBLASToOneThread()
    workerCount = max(1, n)
}

/// Runs body(range) over `n` items split into at most one contiguous chunk per worker,
/// each at least `minPerChunk` long. Small jobs run inline.
@inline(__always)
public func parallelChunks(_ n: Int, minPerChunk: Int = 16, _ body: (Range<Int>) -> Void) {
    parallelWorkers(n, minPerChunk: minPerChunk) { range, _ in body(range) }
}

/// As parallelChunks, also telling each chunk its worker index (below `workers`, for
/// per-worker scratch sized by the caller).
@inline(__always)
public func parallelWorkers(_ n: Int, minPerChunk: Int = 16, workers: Int = workerCount,
                            _ body: (Range<Int>, Int) -> Void) {
    let chunks = min(workers, max(1, n / max(minPerChunk, 1)))
    if chunks <= 1 { body(0..<n, 0); return }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        body((n * c / chunks)..<(n * (c + 1) / chunks), c)
    }
}
