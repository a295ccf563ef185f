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

/// sums[j] += sum over rows of x[r, j] (times y[r, j] when given), split over columns: each
/// column is still summed in row order, so the result does not depend on the number of threads.
func accumulateColumnSums(_ x: UnsafePointer<Float>, times y: UnsafePointer<Float>? = nil, rows: Int, cols: Int,
                          into sums: UnsafeMutablePointer<Float>) {
    let width = 64
    parallelChunks((cols + width - 1) / width, minPerChunk: max(1, (1 << 16) / max(rows * width, 1))) { blocks in
        for block in blocks {
            let lo = block * width, hi = min(cols, lo + width)
            for r in 0..<rows {
                let row = x + r * cols
                if let y {
                    let other = y + r * cols
                    for j in lo..<hi { sums[j] += row[j] * other[j] }
                } else {
                    for j in lo..<hi { sums[j] += row[j] }
                }
            }
        }
    }
}
