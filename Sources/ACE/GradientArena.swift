/// The gradients of a list of parameters in one contiguous Float32 buffer, in list order.
/// Data-parallel ranks average all of them with a single allreduce of this buffer; every
/// parameter's `grad` tensor is a view into it and keeps it alive.
public final class GradientArena {
    public let data: UnsafeMutablePointer<Float>
    public let count: Int

    public init(_ parameters: [Parameter]) {
        count = parameters.reduce(0) { $0 + $1.count }
        data = .allocate(capacity: max(count, 1))
        data.initialize(repeating: 0, count: max(count, 1))
        var offset = 0
        for p in parameters {
            p.grad.adopt(data + offset, owner: self)
            offset += p.count
        }
    }

    public func zero() { data.update(repeating: 0, count: count) }

    deinit { data.deallocate() }
}
