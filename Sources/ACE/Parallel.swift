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
/// Sixteen columns at a time accumulate in one vector register.
func accumulateColumnSums(_ x: UnsafePointer<Float>, times y: UnsafePointer<Float>? = nil, rows: Int, cols: Int,
                          into sums: UnsafeMutablePointer<Float>) {
    let blocks = (cols + 15) / 16
    parallelChunks(blocks, minPerChunk: max(1, (1 << 15) / max(rows * 16, 1))) { range in
        for block in range {
            let lo = block * 16
            guard lo + 16 <= cols else {
                for j in lo..<cols {   // the last, partial block
                    var s: Float = 0
                    for r in 0..<rows { s += x[r * cols + j] * (y?[r * cols + j] ?? 1) }
                    sums[j] += s
                }
                continue
            }
            var acc = SIMD16<Float>()
            if let y {
                for r in 0..<rows { acc += loadSIMD16(x + r * cols + lo) * loadSIMD16(y + r * cols + lo) }
            } else {
                for r in 0..<rows { acc += loadSIMD16(x + r * cols + lo) }
            }
            for k in 0..<16 { sums[lo + k] += acc[k] }
        }
    }
}
