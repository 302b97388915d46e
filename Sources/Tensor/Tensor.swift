/// An n-dimensional array: shape and strides (in elements) over a storage.
///
/// A tensor is a value; the storage it views is shared. Views (reshape of a contiguous
/// tensor, permute, transpose, slice, broadcast) share storage; every other op returns a
/// new tensor with owned, contiguous storage. Storage is only mutated through
/// `withUnsafeMutableBytes`, on tensors the caller created.
public struct Tensor: @unchecked Sendable {
    // @unchecked Sendable: see Storage; a tensor never writes to storage it did not create.

    /// The bytes this tensor views.
    public let storage: Storage
    /// Element type.
    public let dtype: DType
    /// Size of each dimension.
    public let shape: [Int]
    /// Step between neighbours along each dimension, in elements (0 for a broadcast axis).
    public let strides: [Int]
    /// Index of the first element in the storage, in elements.
    public let offset: Int

    /// A view over existing storage. Checks that every addressed element lies inside it.
    public init(storage: Storage, dtype: DType, shape: [Int], strides: [Int]? = nil, offset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let strides = strides ?? Tensor.contiguousStrides(for: shape)
        precondition(strides.count == shape.count, "strides \(strides) do not match shape \(shape)")
        self.storage = storage
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.offset = offset
        if !shape.contains(0) {
            var lo = offset, hi = offset
            for (d, s) in zip(shape, strides) {
                if s >= 0 { hi += (d - 1) * s } else { lo += (d - 1) * s }
            }
            precondition(lo >= 0 && (hi + 1) * dtype.byteSize <= storage.byteCount,
                         "view \(shape)/\(strides)+\(offset) exceeds storage of \(storage.byteCount) bytes")
        }
    }

    /// A new zero-filled contiguous tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        let n = shape.reduce(1, *)
        self.init(storage: Storage(zeroedByteCount: n * dtype.byteSize), dtype: dtype, shape: shape)
    }

    /// A new contiguous tensor whose bytes the caller must fully write before reading.
    public init(uninitialized shape: [Int], dtype: DType = .f32) {
        let n = shape.reduce(1, *)
        self.init(storage: Storage(uninitializedByteCount: n * dtype.byteSize), dtype: dtype, shape: shape)
    }

    /// A new F32 tensor from values in row-major order.
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values for shape \(shape)")
        self.init(uninitialized: shape, dtype: .f32)
        values.withUnsafeBytes { src in
            storage.bytes.copyMemory(from: src.baseAddress!, byteCount: src.count)
        }
    }

    /// A new F64 tensor from values in row-major order.
    public init(shape: [Int], doubles: [Double]) {
        precondition(shape.reduce(1, *) == doubles.count, "\(doubles.count) values for shape \(shape)")
        self.init(uninitialized: shape, dtype: .f64)
        doubles.withUnsafeBytes { src in
            storage.bytes.copyMemory(from: src.baseAddress!, byteCount: src.count)
        }
    }

    /// A 0-rank F32 tensor.
    public init(scalar: Float) { self.init(shape: [], values: [scalar]) }

    /// Row-major strides for a shape.
    public static func contiguousStrides(for shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var step = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = step
            step *= max(shape[i], 1)
        }
        return strides
    }

    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Bytes the elements take when contiguous.
    public var byteCount: Int { count * dtype.byteSize }

    /// True when elements are laid out row-major without gaps.
    public var isContiguous: Bool {
        if shape.contains(0) { return true } // no elements: any strides describe the same (empty) layout
        var expected = 1
        for i in stride(from: rank - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != expected { return false }
            expected *= shape[i]
        }
        return true
    }

    /// Address of the first element.
    public var baseAddress: UnsafeMutableRawPointer { storage.bytes + offset * dtype.byteSize }

    /// Read access to the bytes of a contiguous tensor.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(isContiguous, "withUnsafeBytes needs a contiguous tensor")
        return try body(UnsafeRawBufferPointer(start: baseAddress, count: byteCount))
    }

    /// Write access to the bytes of a contiguous tensor with writable storage.
    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        precondition(isContiguous && storage.isWritable, "write access needs a contiguous owned tensor")
        return try body(UnsafeMutableRawBufferPointer(start: baseAddress, count: byteCount))
    }

    /// Read access to the elements of a contiguous F32 tensor.
    public func withFloats<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32 && isContiguous, "withFloats needs contiguous F32, got \(dtype)")
        return try body(UnsafeBufferPointer(start: baseAddress.assumingMemoryBound(to: Float.self), count: count))
    }

    /// Write access to the elements of a contiguous, owned F32 tensor.
    public func withMutableFloats<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32 && isContiguous && storage.isWritable, "withMutableFloats needs owned contiguous F32")
        return try body(UnsafeMutableBufferPointer(start: baseAddress.assumingMemoryBound(to: Float.self), count: count))
    }

    /// Read access to the elements of a contiguous F64 tensor.
    public func withDoubles<R>(_ body: (UnsafeBufferPointer<Double>) throws -> R) rethrows -> R {
        precondition(dtype == .f64 && isContiguous, "withDoubles needs contiguous F64, got \(dtype)")
        return try body(UnsafeBufferPointer(start: baseAddress.assumingMemoryBound(to: Double.self), count: count))
    }

    /// Write access to the elements of a contiguous, owned F64 tensor.
    public func withMutableDoubles<R>(_ body: (UnsafeMutableBufferPointer<Double>) throws -> R) rethrows -> R {
        precondition(dtype == .f64 && isContiguous && storage.isWritable, "withMutableDoubles needs owned contiguous F64")
        return try body(UnsafeMutableBufferPointer(start: baseAddress.assumingMemoryBound(to: Double.self), count: count))
    }

    /// The elements as F32, row-major (converted and made contiguous as needed).
    public var floats: [Float] {
        let t = self.to(.f32)
        return t.withFloats { Array($0) }
    }

    /// The elements as F64, row-major.
    public var doubles: [Double] {
        let t = self.to(.f64)
        return t.withDoubles { Array($0) }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor(\(dtype.rawValue), \(shape))" }
}
