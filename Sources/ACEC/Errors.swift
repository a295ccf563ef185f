import ACE
import FoundationEssentials
import Glibc

// Every exported function returns 0 on success and nonzero on failure; the message of the
// last failure on the calling thread is read with ace_last_error().

private let errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

func setLastError(_ message: String) {
    free(pthread_getspecific(errorKey))
    pthread_setspecific(errorKey, strdup(message))
}

/// Runs body, turning a thrown error into status 1 and a stored message.
@inline(__always)
func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return 0
    } catch let e as ACEError {
        setLastError(e.message)
    } catch {
        setLastError("\(error)")
    }
    return 1
}

@_cdecl("ace_last_error")
public func ace_last_error() -> UnsafePointer<CChar>? {
    guard let p = pthread_getspecific(errorKey) else { return nil }
    return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
}

@_cdecl("ace_set_num_threads")
public func ace_set_num_threads(_ n: Int32) -> Int32 {
    guarded {
        guard n >= 1 && n <= 1024 else { throw ACEError("thread count must be in 1...1024, got \(n)") }
        setThreads(Int(n))
    }
}

@_cdecl("ace_get_num_threads")
public func ace_get_num_threads() -> Int32 { Int32(workerCount) }

/// C = op(A) op(B), row-major, in the given precision ("fp32", "bf16" or "auto"; NULL means
/// fp32); exposed so the Python tests and benchmarks check and time the very products the
/// core uses.
@_cdecl("ace_gemm")
public func ace_gemm(_ transA: Int32, _ transB: Int32, _ m: Int64, _ n: Int64, _ k: Int64,
                     _ a: UnsafePointer<Float>?, _ b: UnsafePointer<Float>?, _ c: UnsafeMutablePointer<Float>?,
                     _ precision: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        guard m > 0, n > 0, k > 0, let a, let b, let c else { throw ACEError("gemm: empty or null operands") }
        let p = try precision.map { try Precision(setting: String(cString: $0)) } ?? .fp32
        gemm(transA: transA != 0, transB: transB != 0, m: Int(m), n: Int(n), k: Int(k), a: a, b: b, c: c, precision: p)
    }
}
