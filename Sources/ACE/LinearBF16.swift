/// A linear layer's products in bf16 (oneDNN, fp32 accumulation): the bias is added inside
/// the forward product's kernel, and backward rounds dy once for both of its products. Each
/// function returns false, having changed no accumulated gradient, if oneDNN could not run a
/// product; the caller then computes the layer in fp32.
extension Linear {
    /// y = epilogue(x W^T + b) (+ y when accumulating) for rows of bf16 x; y is fp32 or bf16
    /// as the epilogue says. False (y untouched) if oneDNN could not run it.
    func productBF16(_ x: UnsafePointer<UInt16>, rows: Int, into y: UnsafeMutableRawPointer,
                     epilogue: Epilogue, accumulate: Bool = false) -> Bool {
        weightBF16.reserve(weight.count)
        toBF16(weight.value.data, rows: outFeatures, cols: inFeatures, ld: inFeatures, into: weightBF16.data)
        var e = epilogue
        e.bias = hasBias
        return bf16Matmul(batch: 1, m: rows, n: outFeatures, k: inFeatures,
                          a: x, .dense(rows: rows, cols: inFeatures),
                          b: weightBF16.data, .dense(rows: inFeatures, cols: outFeatures, transposed: true),
                          beta: accumulate ? 1 : 0, output: y, .dense(rows: rows, cols: outFeatures),
                          epilogue: e, bias: hasBias ? bias.value.data : nil)
    }

    /// y = x W^T + b for fp32 rows x, rounded to bf16 on the way in.
    func forwardBF16(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) -> Bool {
        guard let dnn = OneDNN.shared else { return false }
        return dnn.withOperandBuffers(rows * inFeatures, 1) { xBF16, _ in
            toBF16(x, rows: rows, cols: inFeatures, ld: inFeatures, into: xBF16)
            return productBF16(xBF16, rows: rows, into: UnsafeMutableRawPointer(y), epilogue: Epilogue())
        }
    }

    /// dx = dy W (unless dx is nil), then dW += dy^T x. `roundInput` writes the layer's input
    /// in bf16 into the buffer it is given; it runs after dx is written, so a caller can fuse
    /// work on dx with it (the MLP computes its GELU backward there). The bias gradient is the
    /// caller's (`accumulateBiasGradient`).
    func backwardBF16(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>?,
                      roundInput: (UnsafeMutablePointer<UInt16>) -> Void) -> Bool {
        guard let dnn = OneDNN.shared else { return false }
        return dnn.withOperandBuffers(rows * outFeatures, rows * inFeatures) { dyBF16, xBF16 in
            toBF16(dy, rows: rows, cols: outFeatures, ld: outFeatures, into: dyBF16)
            if let dx {
                weightBF16.reserve(weight.count)
                toBF16(weight.value.data, rows: outFeatures, cols: inFeatures, ld: inFeatures, into: weightBF16.data)
                guard bf16Matmul(batch: 1, m: rows, n: inFeatures, k: outFeatures,
                                 a: dyBF16, .dense(rows: rows, cols: outFeatures),
                                 b: weightBF16.data, .dense(rows: outFeatures, cols: inFeatures),
                                 c: dx, .dense(rows: rows, cols: inFeatures)) else { return false }
            }
            roundInput(xBF16)
            return bf16Matmul(batch: 1, m: outFeatures, n: inFeatures, k: rows,
                              a: dyBF16, .dense(rows: outFeatures, cols: rows, transposed: true),
                              b: xBF16, .dense(rows: rows, cols: inFeatures),
                              beta: 1, c: weight.grad.data, .dense(rows: outFeatures, cols: inFeatures))
        }
    }
}
