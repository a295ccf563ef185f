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
    parallelWorkers(n, minPerChunk: minPerChunk, workers: workerCount) { range, _ in body(range) }
}

/// As parallelChunks, also telling each chunk its worker index (below `workers`, for
/// per-worker scratch). `workers` has no default: the caller reads `workerCount` once and uses
/// that value both to size its scratch and here, so a concurrent `setThreads` cannot make the
/// split outgrow the scratch.
@inline(__always)
public func parallelWorkers(_ n: Int, minPerChunk: Int = 16, workers: Int,
                            _ body: (Range<Int>, Int) -> Void) {
    let chunks = min(workers, max(1, n / max(minPerChunk, 1)))
    if chunks <= 1 { body(0..<n, 0); return }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        body((n * c / chunks)..<(n * (c + 1) / chunks), c)
    }
}

/// sums[j] += sum over rows of x[r, j] (times y[r, j] when given). Rows are cut into at most
/// 16 fixed blocks, each summed in row order (streaming through memory) in parallel, then the
/// blocks' sums are added in block order: the result does not depend on the number of threads.
func accumulateColumnSums(_ x: UnsafePointer<Float>, times y: UnsafePointer<Float>? = nil, rows: Int, cols: Int,
                          into sums: UnsafeMutablePointer<Float>) {
    let blockRows = max(256, (rows + 15) / 16), blocks = (rows + blockRows - 1) / blockRows
    var partial = [Float](repeating: 0, count: blocks * cols)
    partial.withUnsafeMutableBufferPointer { buffer in
        let partial = buffer.baseAddress!
        parallelChunks(blocks, minPerChunk: 1) { range in
            for block in range {
                let out = partial + block * cols
                for r in (block * blockRows)..<min(rows, (block + 1) * blockRows) {
                    let row = x + r * cols
                    if let y {
                        let other = y + r * cols
                        for j in 0..<cols { out[j] += row[j] * other[j] }
                    } else {
                        for j in 0..<cols { out[j] += row[j] }
                    }
                }
            }
        }
        for block in 0..<blocks {
            for j in 0..<cols { sums[j] += partial[block * cols + j] }
        }
    }
}
