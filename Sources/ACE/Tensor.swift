/// A contiguous row-major Float32 buffer with a shape.
///
/// Tensors are workspaces: `reshape` reuses the allocation when it is large enough, so a
/// layer that runs the same batch shape every step allocates only once.
public final class Tensor {
    public private(set) var shape: [Int]
    public private(set) var data: UnsafeMutablePointer<Float>
    private var capacity: Int
    /// Set when the tensor lives in memory another object owns (a gradient arena): the
    /// tensor keeps that owner alive and never frees or reallocates its storage.
    private var storageOwner: AnyObject?

    public var count: Int { shape.reduce(1, *) }

    public init(_ shape: [Int]) {
        self.shape = shape
        capacity = max(shape.reduce(1, *), 1)
        data = .allocate(capacity: capacity)
        data.initialize(repeating: 0, count: capacity)
    }

    public convenience init(_ shape: [Int], _ values: [Float]) {
        self.init(shape)
        precondition(values.count == count)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    deinit { if storageOwner == nil { data.deallocate() } }

    /// Moves the contents into `storage` (at least `count` floats, kept alive by `owner`)
    /// and uses it from now on; the tensor's shape can no longer grow.
    public func adopt(_ storage: UnsafeMutablePointer<Float>, owner: AnyObject) {
        storage.update(from: data, count: count)
        if storageOwner == nil { data.deallocate() }
        data = storage
        capacity = count
        storageOwner = owner
    }

    /// Gives the tensor a new shape; contents are unspecified unless the size is unchanged.
    public func reshape(_ newShape: [Int]) {
        let n = newShape.reduce(1, *)
        if n > capacity {
            precondition(storageOwner == nil, "a tensor in shared storage cannot grow")
            data.deallocate()
            capacity = n
            data = .allocate(capacity: n)
            data.initialize(repeating: 0, count: n)
        }
        shape = newShape
    }

    public func zero() { data.update(repeating: 0, count: count) }

    public func copy(from other: Tensor) {
        reshape(other.shape)
        data.update(from: other.data, count: count)
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }
}

/// A trainable tensor with its gradient, named as in timm's state dict.
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let grad: Tensor
    /// Weight decay applies to weight matrices only, not to biases, norms or tokens.
    public let decays: Bool

    public init(_ name: String, _ shape: [Int], decays: Bool) {
        self.name = name
        value = Tensor(shape)
        grad = Tensor(shape)
        self.decays = decays
    }

    public var shape: [Int] { value.shape }
    public var count: Int { value.count }
}
