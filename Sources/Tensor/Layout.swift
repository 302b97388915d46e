/// Views and copies that change how elements are laid out, never their values.
extension Tensor {
    /// The same elements under a new shape. One dimension may be -1 (inferred).
    /// A view when contiguous, otherwise a contiguous copy first.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var shape = newShape
        if let i = shape.firstIndex(of: -1) {
            let known = shape.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot infer -1 in \(newShape) for \(count) elements")
            shape[i] = count / known
        }
        precondition(shape.reduce(1, *) == count, "cannot reshape \(self.shape) to \(newShape)")
        let base = isContiguous ? self : contiguous()
        return Tensor(storage: base.storage, dtype: dtype, shape: shape, offset: base.offset)
    }

    /// Reorders dimensions (a view).
    public func permuted(_ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<rank), "bad permutation \(order) for rank \(rank)")
        return Tensor(storage: storage, dtype: dtype, shape: order.map { shape[$0] },
                      strides: order.map { strides[$0] }, offset: offset)
    }

    /// Swaps two dimensions (a view); defaults to the last two.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        let a = a < 0 ? a + rank : a, b = b < 0 ? b + rank : b
        var order = Array(0..<rank)
        order.swapAt(a, b)
        return permuted(order)
    }

    /// Elements `range` along `axis` (a view), with an optional step.
    public func sliced(axis: Int, _ range: Range<Int>, step: Int = 1) -> Tensor {
        let axis = axis < 0 ? axis + rank : axis
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[axis] && step > 0,
                     "slice \(range) out of bounds for dim \(axis) of \(shape)")
        var newShape = shape, newStrides = strides
        newShape[axis] = (range.count + step - 1) / step
        newStrides[axis] = strides[axis] * step
        return Tensor(storage: storage, dtype: dtype, shape: newShape, strides: newStrides,
                      offset: offset + range.lowerBound * strides[axis])
    }

    /// Inserts a dimension of size 1 (a view).
    public func unsqueezed(_ axis: Int) -> Tensor {
        let axis = axis < 0 ? axis + rank + 1 : axis
        var s = shape, st = strides
        s.insert(1, at: axis)
        st.insert(axis < rank ? strides[axis] * shape[axis] : 1, at: axis)
        return Tensor(storage: storage, dtype: dtype, shape: s, strides: st, offset: offset)
    }

    /// Removes a dimension of size 1 (a view).
    public func squeezed(_ axis: Int) -> Tensor {
        let axis = axis < 0 ? axis + rank : axis
        precondition(shape[axis] == 1, "cannot squeeze dim \(axis) of \(shape)")
        var s = shape, st = strides
        s.remove(at: axis)
        st.remove(at: axis)
        return Tensor(storage: storage, dtype: dtype, shape: s, strides: st, offset: offset)
    }

    /// Broadcasts to `target` by NumPy rules (a view with stride 0 on expanded axes).
    public func expanded(to target: [Int]) -> Tensor {
        precondition(target.count >= rank, "cannot expand \(shape) to \(target)")
        let lead = target.count - rank
        var newStrides = [Int](repeating: 0, count: target.count)
        for i in 0..<target.count where i >= lead {
            let d = shape[i - lead]
            precondition(d == target[i] || d == 1, "cannot expand \(shape) to \(target)")
            newStrides[i] = d == target[i] ? strides[i - lead] : 0
        }
        return Tensor(storage: storage, dtype: dtype, shape: target, strides: newStrides, offset: offset)
    }

    /// The same elements in a new row-major owned storage (same dtype).
    public func contiguous() -> Tensor {
        let out = Tensor(uninitialized: shape, dtype: dtype)
        copyElements(from: self, into: out.baseAddress)
        return out
    }

    /// An owned copy that is safe to write to (always a new allocation).
    public func copy() -> Tensor { contiguous() }
}

/// Copies `src`'s elements in row-major order to `dst` (dense, same dtype).
/// The innermost dimension is copied as a run when its stride is 1.
func copyElements(from src: Tensor, into dst: UnsafeMutableRawPointer) {
    let es = src.dtype.byteSize
    let n = src.count
    if n == 0 { return }
    if src.isContiguous {
        dst.copyMemory(from: src.baseAddress, byteCount: n * es)
        return
    }
    // Collapse to (outer index space) × innermost dimension.
    let rank = src.rank
    let inner = src.shape[rank - 1], innerStride = src.strides[rank - 1]
    let outerShape = Array(src.shape.dropLast()), outerStrides = Array(src.strides.dropLast())
    let outerCount = outerShape.reduce(1, *)
    let base = src.baseAddress
    var index = [Int](repeating: 0, count: outerShape.count)
    var out = dst
    for _ in 0..<outerCount {
        var off = 0
        for d in 0..<index.count { off += index[d] * outerStrides[d] }
        let rowStart = base + off * es
        if innerStride == 1 {
            out.copyMemory(from: rowStart, byteCount: inner * es)
        } else if es == 4 {
            let s = rowStart.assumingMemoryBound(to: UInt32.self), d = out.assumingMemoryBound(to: UInt32.self)
            for i in 0..<inner { d[i] = s[i * innerStride] }
        } else if es == 2 {
            let s = rowStart.assumingMemoryBound(to: UInt16.self), d = out.assumingMemoryBound(to: UInt16.self)
            for i in 0..<inner { d[i] = s[i * innerStride] }
        } else if es == 8 {
            let s = rowStart.assumingMemoryBound(to: UInt64.self), d = out.assumingMemoryBound(to: UInt64.self)
            for i in 0..<inner { d[i] = s[i * innerStride] }
        } else {
            let s = rowStart.assumingMemoryBound(to: UInt8.self), d = out.assumingMemoryBound(to: UInt8.self)
            for i in 0..<inner { d[i] = s[i * innerStride] }
        }
        out += inner * es
        // Advance the outer multi-index (row-major).
        var d = index.count - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < outerShape[d] { break }
            index[d] = 0
            d -= 1
        }
    }
}
