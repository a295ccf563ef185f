import CDNNL
import Glibc

/// How the matrix products of a model are computed.
///
/// - fp32: OpenBLAS sgemm, the exact reference every gradient check runs against.
/// - bf16: the operands are rounded to bfloat16 (round to nearest even) and multiplied by
///   oneDNN's matmul with fp32 accumulation and fp32 output. Weights, optimizer state,
///   LayerNorm, softmax, losses and the EMA stay fp32: only the products' inputs are rounded,
///   as in PyTorch's bf16 autocast.
public enum Precision: String, Codable, CaseIterable, Sendable {
    case fp32, bf16

    /// Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as oneDNN sees it.
    public static var hardwareBF16: Bool {
        let isa = dnnl_get_effective_cpu_isa().rawValue
        return isa & dnnl_cpu_isa_avx512_core_bf16.rawValue == dnnl_cpu_isa_avx512_core_bf16.rawValue
    }

    /// bf16 where the hardware has it, fp32 elsewhere (bf16 emulated in fp32 would be slower).
    public static var automatic: Precision { hardwareBF16 ? .bf16 : .fp32 }

    /// "auto" or a precision name.
    public init(setting: String) throws {
        if setting == "auto" { self = .automatic; return }
        guard let p = Precision(rawValue: setting) else {
            throw ACEError("precision must be 'auto', 'bf16' or 'fp32', got '\(setting)'")
        }
        self = p
    }
}

/// bfloat16 bits of x, rounded to nearest even (inputs are finite: the core checks them).
@inline(__always)
func bf16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}

/// The float a bfloat16 stands for.
@inline(__always)
func bf16Value(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

/// Rounds a rows x cols block (row stride ld) of fp32 to dense bf16.
func toBF16(_ src: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int, into dst: UnsafeMutablePointer<UInt16>) {
    parallelChunks(rows, minPerChunk: max(1, 65536 / max(cols, 1))) { range in
        for r in range {
            let s = src + r * ld, d = dst + r * cols
            for j in 0..<cols { d[j] = bf16Bits(s[j]) }
        }
    }
}

/// A growable bf16 buffer (a workspace, like `Tensor`).
public final class BF16Buffer {
    public private(set) var data = UnsafeMutablePointer<UInt16>.allocate(capacity: 1)
    private var capacity = 1

    public init() {}
    deinit { data.deallocate() }

    /// Makes room for n values; contents are unspecified after growing.
    public func reserve(_ n: Int) {
        guard n > capacity else { return }
        data.deallocate()
        data = .allocate(capacity: n)
        capacity = n
    }
}

/// Strides (batch, row, column) of a matrix operand, in elements.
public struct Strides: Hashable {
    public var batch: Int, row: Int, column: Int
    public init(_ batch: Int, _ row: Int, _ column: Int) { (self.batch, self.row, self.column) = (batch, row, column) }
    /// A dense rows x cols matrix (row-major), or its transpose read in place.
    public static func dense(rows: Int, cols: Int, transposed: Bool = false) -> Strides {
        transposed ? Strides(rows * cols, 1, rows) : Strides(rows * cols, cols, 1)
    }
}

/// C[i] = alpha * A[i] B[i] + beta * C[i] for i < batch: A[i] m x k and B[i] k x n in bf16
/// at the given strides, C[i] m x n in fp32, fp32 accumulation, through oneDNN. Returns false
/// (C untouched) if oneDNN could not run it, so the caller can compute in fp32 instead.
public func bf16Matmul(batch: Int, m: Int, n: Int, k: Int, alpha: Float = 1,
                       a: UnsafePointer<UInt16>, _ sa: Strides, b: UnsafePointer<UInt16>, _ sb: Strides,
                       beta: Float = 0, c: UnsafeMutablePointer<Float>, _ sc: Strides) -> Bool {
    bf16Matmul(batch: batch, m: m, n: n, k: k, alpha: alpha, a: a, sa, b: b, sb, beta: beta,
               output: UnsafeMutableRawPointer(c), sc, epilogue: Epilogue())
}

/// What a product does to its output inside oneDNN's kernel, before storing it: adding a bias
/// per column, the exact (erf) GELU, rounding to bf16. Fusing these saves a pass over the
/// output for each, and a bf16 output is already the next product's operand.
public struct Epilogue: Hashable, Sendable {
    public var bias = false
    public var gelu = false
    public var bf16Output = false
    public init(bias: Bool = false, gelu: Bool = false, bf16Output: Bool = false) {
        (self.bias, self.gelu, self.bf16Output) = (bias, gelu, bf16Output)
    }
}

/// C[i] = epilogue(alpha * A[i] B[i] + bias + beta * C[i]): as `bf16Matmul` above, with the
/// output fp32 or bf16 (`epilogue.bf16Output`) and `bias` (n floats) when `epilogue.bias`.
func bf16Matmul(batch: Int, m: Int, n: Int, k: Int, alpha: Float = 1,
                a: UnsafePointer<UInt16>, _ sa: Strides, b: UnsafePointer<UInt16>, _ sb: Strides,
                beta: Float = 0, output c: UnsafeMutableRawPointer, _ sc: Strides,
                epilogue: Epilogue, bias: UnsafePointer<Float>? = nil) -> Bool {
    if batch == 0 || m == 0 || n == 0 { return true }
    guard let dnn = OneDNN.shared, epilogue.bias == (bias != nil) else { return false }
    let shape = OneDNN.Shape(batch: batch, m: m, n: n, k: k, a: sa, b: sb, c: sc, alpha: alpha, beta: beta,
                             epilogue: epilogue)
    return (try? dnn.run(shape, a: a, b: b, c: c, bias: bias)) != nil
}

/// C = alpha * op(A) op(B) + beta * C with bf16 operands and fp32 accumulation, through
/// oneDNN. Same conventions as `gemm`. Returns false (C untouched) if oneDNN could not run
/// the product, so the caller computes it in fp32 instead of failing.
func bf16Gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
              beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
    if m == 0 || n == 0 { return true }
    guard let dnn = OneDNN.shared else { return false }
    return dnn.withOperandBuffers(m * k, k * n) { bufA, bufB in
        // The operands as stored (op(A) = A^T is A's k x m block), rounded into dense buffers.
        toBF16(a, rows: transA ? k : m, cols: transA ? m : k, ld: lda, into: bufA)
        toBF16(b, rows: transB ? n : k, cols: transB ? k : n, ld: ldb, into: bufB)
        return bf16Matmul(batch: 1, m: m, n: n, k: k, alpha: alpha,
                          a: bufA, .dense(rows: m, cols: k, transposed: transA),
                          b: bufB, .dense(rows: k, cols: n, transposed: transB),
                          beta: beta, c: c, Strides(m * ldc, ldc, 1))
    }
}

/// One CPU engine and stream, matmul primitives created once per shape and kept, and the
/// bf16 operand buffers of `gemm`. Executions are serialized: oneDNN already uses every core
/// for one product.
final class OneDNN {
    /// nil where oneDNN cannot create a CPU engine.
    nonisolated(unsafe) static let shared = try? OneDNN()

    struct Shape: Hashable {
        let batch: Int, m: Int, n: Int, k: Int
        let a: Strides, b: Strides, c: Strides
        let alpha: Float, beta: Float
        var epilogue = Epilogue()
    }

    private var engine: dnnl_engine_t?
    private var stream: dnnl_stream_t?
    private typealias Entry = (primitive: dnnl_primitive_t, a: dnnl_memory_desc_t, b: dnnl_memory_desc_t,
                               c: dnnl_memory_desc_t, bias: dnnl_memory_desc_t)
    private var primitives: [Shape: Entry] = [:]
    private let bufferA = BF16Buffer(), bufferB = BF16Buffer()
    private let lock = Lock(), operandLock = Lock()

    private init() throws {
        try check(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine")
        try check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "stream")
    }

    private func check(_ status: dnnl_status_t, _ what: String) throws {
        try require(status == dnnl_success, "oneDNN \(what) failed with status \(status.rawValue)")
    }

    /// Runs body with the shared operand buffers (at least na and nb values), one caller at a time.
    func withOperandBuffers<T>(_ na: Int, _ nb: Int,
                               _ body: (UnsafeMutablePointer<UInt16>, UnsafeMutablePointer<UInt16>) -> T) -> T {
        operandLock.locked {
            bufferA.reserve(na)
            bufferB.reserve(nb)
            return body(bufferA.data, bufferB.data)
        }
    }

    func run(_ shape: Shape, a: UnsafePointer<UInt16>, b: UnsafePointer<UInt16>, c: UnsafeMutableRawPointer,
             bias: UnsafePointer<Float>? = nil) throws {
        try lock.locked { try execute(shape, a: a, b: b, c: c, bias: bias) }
    }

    private func execute(_ shape: Shape, a: UnsafePointer<UInt16>, b: UnsafePointer<UInt16>,
                         c: UnsafeMutableRawPointer, bias: UnsafePointer<Float>?) throws {
        var entry = try primitives[shape] ?? create(shape)
        primitives[shape] = entry
        omp_set_num_threads(Int32(workerCount))
        var memA: dnnl_memory_t?, memB: dnnl_memory_t?, memC: dnnl_memory_t?, memBias: dnnl_memory_t?
        defer { for mem in [memA, memB, memC, memBias] where mem != nil { dnnl_memory_destroy(mem) } }
        try check(dnnl_memory_create(&memA, &entry.a, engine, UnsafeMutableRawPointer(mutating: a)), "memory")
        try check(dnnl_memory_create(&memB, &entry.b, engine, UnsafeMutableRawPointer(mutating: b)), "memory")
        try check(dnnl_memory_create(&memC, &entry.c, engine, c), "memory")
        var args = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: memA),
                    dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: memB),
                    dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: memC)]
        if let bias {
            try check(dnnl_memory_create(&memBias, &entry.bias, engine, UnsafeMutableRawPointer(mutating: bias)),
                      "memory")
            args.append(dnnl_exec_arg_t(arg: DNNL_ARG_BIAS, memory: memBias))
        }
        try check(dnnl_primitive_execute(entry.primitive, stream, Int32(args.count), &args), "matmul")
        try check(dnnl_stream_wait(stream), "stream wait")
    }

    private func create(_ s: Shape) throws -> Entry {
        func desc(_ rows: Int, _ cols: Int, _ st: Strides, _ type: dnnl_data_type_t,
                  batch: Int? = nil) throws -> dnnl_memory_desc_t {
            var md = dnnl_memory_desc_t()
            let dims: [Int64] = [Int64(batch ?? s.batch), Int64(rows), Int64(cols)]
            let strides: [Int64] = [Int64(st.batch), Int64(st.row), Int64(st.column)]
            try check(dnnl_memory_desc_init_by_strides(&md, 3, dims, type, strides), "memory descriptor")
            return md
        }
        var a = try desc(s.m, s.k, s.a, dnnl_bf16)
        var b = try desc(s.k, s.n, s.b, dnnl_bf16)
        var c = try desc(s.m, s.n, s.c, s.epilogue.bf16Output ? dnnl_bf16 : dnnl_f32)
        // One bias row, broadcast over the batch and the rows.
        var bias = try desc(1, s.n, Strides(s.n, s.n, 1), dnnl_f32, batch: 1)
        var op = dnnl_matmul_desc_t()
        let status = s.epilogue.bias ? dnnl_matmul_desc_init(&op, &a, &b, &bias, &c)
                                     : dnnl_matmul_desc_init(&op, &a, &b, nil, &c)
        try check(status, "matmul descriptor")
        var attr: dnnl_primitive_attr_t?
        try check(dnnl_primitive_attr_create(&attr), "attributes")
        defer { dnnl_primitive_attr_destroy(attr) }
        if s.alpha != 1 {
            var scale = s.alpha
            try check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "output scale")
        }
        if s.beta != 0 || s.epilogue.gelu {
            var ops: dnnl_post_ops_t?
            try check(dnnl_post_ops_create(&ops), "post-ops")
            defer { dnnl_post_ops_destroy(ops) }
            if s.beta != 0 { try check(dnnl_post_ops_append_sum(ops, s.beta), "sum post-op") }
            if s.epilogue.gelu {
                try check(dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_gelu_erf, 0, 0), "GELU post-op")
            }
            try check(dnnl_primitive_attr_set_post_ops(attr, ops), "post-ops")
        }
        var pd: dnnl_primitive_desc_t?
        try check(dnnl_primitive_desc_create(&pd, &op, attr, engine, nil), "matmul primitive descriptor")
        defer { dnnl_primitive_desc_destroy(pd) }
        var primitive: dnnl_primitive_t?
        try check(dnnl_primitive_create(&primitive, pd), "matmul primitive")
        guard let primitive else { throw ACEError("oneDNN returned no matmul primitive") }
        return (primitive, a, b, c, bias)
    }

    /// The implementation oneDNN chose for a shape (e.g. "brg:avx512_core_bf16"), for tests.
    func implementation(_ s: Shape) throws -> String {
        let entry = try lock.locked {
            let entry = try primitives[s] ?? create(s)
            primitives[s] = entry
            return entry
        }
        var pd: const_dnnl_primitive_desc_t?
        try check(dnnl_primitive_get_primitive_desc(entry.primitive, &pd), "primitive descriptor")
        var info: UnsafePointer<CChar>?
        try check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info), "implementation")
        return info.map { String(cString: $0) } ?? ""
    }
}
