import Dispatch

/// How many workers the elementwise kernels and per-head attention products use.
/// Set together with OpenBLAS's thread count by `setThreads`.
public nonisolated(unsafe) var workerCount = 2

public func setThreads(_ n: Int) {
    workerCount = max(1, n)
    setBLASThreads(workerCount)
}

/// Runs body(range) over `n` items split into one contiguous chunk per worker.
/// Small jobs run inline: a dispatch costs more than a few thousand flops.
@inline(__always)
public func parallelChunks(_ n: Int, minPerChunk: Int = 16, _ body: (Range<Int>) -> Void) {
    parallelWorkers(n, minPerChunk: minPerChunk) { range, _ in body(range) }
}

/// As parallelChunks, also telling each chunk its worker index (for per-worker scratch).
@inline(__always)
public func parallelWorkers(_ n: Int, minPerChunk: Int = 16, _ body: (Range<Int>, Int) -> Void) {
    let chunks = min(workerCount, max(1, n / minPerChunk))
    if chunks <= 1 { body(0..<n, 0); return }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        body((n * c / chunks)..<(n * (c + 1) / chunks), c)
    }
}

/// Runs many small independent BLAS calls (one per sample and head) across the workers,
/// with OpenBLAS single-threaded meanwhile so the two levels do not oversubscribe the cores.
/// body(item, worker) may use scratch space owned by `worker` (0..<workerCount).
public func parallelSmallProducts(_ n: Int, _ body: (Int, Int) -> Void) {
    let saved = blasThreads()
    if workerCount > 1 { setBLASThreads(1) }
    parallelWorkers(n, minPerChunk: 1) { r, w in for i in r { body(i, w) } }
    if workerCount > 1 { setBLASThreads(saved) }
}
