import CBLAS

/// C = alpha * op(A) * op(B) + beta * C, row-major, through OpenBLAS.
/// op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc default to the dense strides.
///
/// Threading: OpenBLAS itself runs single-threaded. Large products are split by rows of C
/// across the core's workers, each a single-threaded sgemm. One pool of threads then
/// serves the products and the elementwise kernels alike, instead of OpenBLAS's threads
/// spinning (sched_yield) on the cores while the elementwise kernels need them.
///
/// With `precision: .bf16` the operands are rounded to bfloat16 and multiplied by oneDNN with
/// fp32 accumulation (see `Precision`); oneDNN threads the product itself.
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil,
    precision: Precision = .fp32
) {
    let lda = lda ?? (transA ? m : k)
    let ldb = ldb ?? (transB ? k : n)
    let ldc = ldc ?? n
    if precision == .bf16 && bf16Gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                      b: b, ldb: ldb, beta: beta, c: c, ldc: ldc) {
        return
    }
    // Below about a million multiply-adds a split costs more than it saves.
    let workers = workerCount
    let rowsPerChunk = m * n * k < (1 << 20) || workers == 1 ? m : max(8, m / workers)
    parallelChunks(m, minPerChunk: rowsPerChunk) { rows in
        let aOffset = transA ? rows.lowerBound : rows.lowerBound * lda
        serialGemm(transA: transA, transB: transB, m: rows.count, n: n, k: k, alpha: alpha,
                   a: a + aOffset, lda: lda, b: b, ldb: ldb, beta: beta,
                   c: c + rows.lowerBound * ldc, ldc: ldc)
    }
}

/// One single-threaded sgemm call (for use inside an already parallel loop).
@inline(__always)
public func serialGemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda ?? (transA ? m : k)),
        b, Int32(ldb ?? (transB ? k : n)), beta, c, Int32(ldc ?? n))
}

/// OpenBLAS stays single-threaded; see `gemm`.
func pinBLASToOneThread() { openblas_set_num_threads(1) }
