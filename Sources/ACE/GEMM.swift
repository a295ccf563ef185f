import CBLAS

/// C = alpha * op(A) * op(B) + beta * C, row-major, through OpenBLAS.
/// op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc default to the dense strides.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
) {
    let lda = lda ?? (transA ? m : k)
    let ldb = ldb ?? (transB ? k : n)
    let ldc = ldc ?? n
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Threads used by OpenBLAS for one large product.
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
public func blasThreads() -> Int { Int(openblas_get_num_threads()) }
