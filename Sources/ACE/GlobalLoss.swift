import Glibc

/// DINO's cross-view loss (DESIGN.md section 5): the teacher's centered, sharpened softmax of
/// one view is the target for the student's softmax of the other view.
/// Rows 0..<B of both logit matrices are view 1 (C1), rows B..<2B view 2 (C2); the loss is
/// the mean over the 2B (teacher view, student view) pairs of -sum_k p_t log p_s.
public struct GlobalLoss {
    public var studentTemp: Float
    public var teacherTemp: Float

    public init(studentTemp: Float, teacherTemp: Float) {
        self.studentTemp = studentTemp
        self.teacherTemp = teacherTemp
    }

    /// Returns the loss and writes dStudent = weight * dLoss/dStudentLogits.
    public func callAsFunction(student: Tensor, teacher: Tensor, center: Tensor, weight: Float, dStudent: Tensor) -> Double {
        let rows = student.shape[0], k = student.shape[1], b = rows / 2
        dStudent.reshape(student.shape)
        var total = 0.0
        var pt = [Float](repeating: 0, count: k), ps = [Float](repeating: 0, count: k)
        for r in 0..<rows {
            let partner = r < b ? r + b : r - b
            let t = teacher.data + partner * k, s = student.data + r * k, c = center.data
            for j in 0..<k { pt[j] = (t[j] - c[j]) / teacherTemp }
            softmaxInPlace(&pt)
            var m = -Float.infinity
            for j in 0..<k { ps[j] = s[j] / studentTemp; m = max(m, ps[j]) }
            var sum: Float = 0
            for j in 0..<k { sum += expf(ps[j] - m) }
            let logZ = m + logf(sum)
            var loss: Float = 0
            let d = dStudent.data + r * k, scale = weight / (Float(rows) * studentTemp)
            for j in 0..<k {
                let logP = ps[j] - logZ
                loss -= pt[j] * logP
                d[j] = scale * (expf(logP) - pt[j])
            }
            total += Double(loss)
        }
        return total / Double(rows)
    }

    /// The mean over rows of the teacher logits: the batch statistic that moves the center,
    /// center <- momentum * center + (1 - momentum) * mean (summed in Double, stored as Float).
    public static func batchMean(_ teacher: Tensor, into mean: Tensor) {
        let rows = teacher.shape[0], k = teacher.shape[1]
        var sum = [Double](repeating: 0, count: k)
        for r in 0..<rows { for j in 0..<k { sum[j] += Double(teacher[r * k + j]) } }
        mean.reshape([k])
        for j in 0..<k { mean[j] = Float(sum[j] / Double(rows)) }
    }
}

func softmaxInPlace(_ x: inout [Float]) {
    x.withUnsafeMutableBufferPointer { softmaxRow($0.baseAddress!, $0.count) }
}
