/// Shape ops that build a new tensor from pieces: concatenation and constant padding.
/// Values are copied bit for bit: these ops keep the dtype (no widening to F32).
extension Tensor {
    /// Joins `tensors` along `axis`, as `torch.cat`. Shapes must agree on every other axis.
    /// All of one dtype: that dtype; mixed dtypes: converted to the compute dtype (F64 when any
    /// is F64, else F32). Non-contiguous inputs are fine. Precondition: at least one tensor.
    public static func concat(_ tensors: [Tensor], axis: Int) -> Tensor {
        precondition(!tensors.isEmpty, "concat: no tensors")
        let first = tensors[0]
        let axis = first.normalizedAxis(axis, "concat")
        for t in tensors {
            precondition(t.rank == first.rank
                          && zip(t.shape, first.shape).enumerated().allSatisfy { $0.offset == axis || $0.element.0 == $0.element.1 },
                          "concat: shape \(t.shape) does not match \(first.shape) outside axis \(axis)")
        }
        let dtype = tensors.allSatisfy { $0.dtype == first.dtype } ? first.dtype
            : (tensors.contains { $0.dtype == .f64 } ? DType.f64 : .f32)
        var shape = first.shape
        shape[axis] = tensors.reduce(0) { $0 + $1.shape[axis] }
        let out = Tensor(uninitialized: shape, dtype: dtype)
        let es = dtype.byteSize
        let (outer, total, inner) = outerLengthInner(shape, axis: axis)
        var start = 0
        for t in tensors {
            let src = t.dtype == dtype ? (t.isContiguous ? t : t.contiguous()) : t.to(dtype)
            let rowBytes = src.shape[axis] * inner * es
            if rowBytes > 0 {
                // Block o of this input is rows [start, start + len) of block o of the output.
                for o in 0..<outer {
                    (out.baseAddress + (o * total + start) * inner * es)
                        .copyMemory(from: src.baseAddress + o * rowBytes, byteCount: rowBytes)
                }
            }
            start += src.shape[axis]
            withExtendedLifetime(src) {} // src (maybe a fresh copy) must outlive the copies above.
        }
        return out
    }

    /// Pads with a constant, as `torch.nn.functional.pad(x, pad, value=value)`: `pad` lists
    /// (before, after) pairs starting from the LAST axis, e.g. `[left, right, top, bottom]` pads
    /// W then H of NCHW. Negative amounts crop. Precondition: an even count of at most 2 × rank.
    public func padded(torchPad pad: [Int], value: Double = 0) -> Tensor {
        precondition(pad.count % 2 == 0 && pad.count / 2 <= rank,
                     "padded: torch pad \(pad) needs pairs for at most \(rank) axes of \(shape)")
        var widths = [(before: Int, after: Int)](repeating: (0, 0), count: rank)
        for pair in 0..<(pad.count / 2) {
            widths[rank - 1 - pair] = (pad[2 * pair], pad[2 * pair + 1])
        }
        return padded(widths, value: value)
    }

    /// Pads each axis with `widths[axis].before` elements before and `.after` after, filled with
    /// `value` (converted to this dtype; F8 tensors padded with a nonzero value become F32).
    /// Negative widths crop instead. Keeps the dtype. Precondition: one pair per axis, and the
    /// result has no negative size.
    public func padded(_ widths: [(before: Int, after: Int)], value: Double = 0) -> Tensor {
        precondition(widths.count == rank, "padded: \(widths.count) pad pairs for shape \(shape)")
        if dtype.isReadOnly && value != 0 { return to(.f32).padded(widths, value: value) }
        // Crop first (a view), so only non-negative padding remains.
        var source = self
        for (axis, w) in widths.enumerated() where w.before < 0 || w.after < 0 {
            let lo = Swift.max(0, -w.before), hi = shape[axis] - Swift.max(0, -w.after)
            precondition(lo <= hi, "padded: cropping \(w) leaves a negative size on axis \(axis) of \(shape)")
            source = source.sliced(axis: axis, lo..<hi)
        }
        let before = widths.map { Swift.max(0, $0.before) }, after = widths.map { Swift.max(0, $0.after) }
        let outShape = (0..<rank).map { source.shape[$0] + before[$0] + after[$0] }
        let out: Tensor
        if value == 0 {
            out = Tensor(zeros: outShape, dtype: dtype)
        } else {
            out = Tensor(uninitialized: outShape, dtype: dtype)
            fillElements(out, with: Tensor(shape: [], doubles: [value]).to(dtype))
        }
        if source.count == 0 || rank == 0 {
            if rank == 0 { copyElements(from: source, into: out.baseAddress) }
            return out
        }
        // Copy each innermost row of the source into place.
        let src = source.isContiguous ? source : source.contiguous()
        let es = dtype.byteSize, rowLength = src.shape[rank - 1], outStrides = out.strides
        var index = [Int](repeating: 0, count: rank - 1)
        var dstOffset = (0..<rank).reduce(0) { $0 + before[$1] * outStrides[$1] }
        defer { withExtendedLifetime(src) {} } // src (maybe a fresh copy) must outlive the copies.
        for row in 0..<(src.count / rowLength) {
            (out.baseAddress + dstOffset * es)
                .copyMemory(from: src.baseAddress + row * rowLength * es, byteCount: rowLength * es)
            var d = rank - 2
            while d >= 0 {
                index[d] += 1
                dstOffset += outStrides[d]
                if index[d] < src.shape[d] { break }
                dstOffset -= outStrides[d] * src.shape[d]
                index[d] = 0
                d -= 1
            }
        }
        return out
    }
}

/// Fills contiguous `out` with the single element of `element` (same dtype, rank 0).
private func fillElements(_ out: Tensor, with element: Tensor) {
    let n = out.count
    switch out.dtype.byteSize {
    case 1: out.baseAddress.initializeMemory(as: UInt8.self, repeating: element.baseAddress.load(as: UInt8.self), count: n)
    case 2: out.baseAddress.initializeMemory(as: UInt16.self, repeating: element.baseAddress.load(as: UInt16.self), count: n)
    case 4: out.baseAddress.initializeMemory(as: UInt32.self, repeating: element.baseAddress.load(as: UInt32.self), count: n)
    default: out.baseAddress.initializeMemory(as: UInt64.self, repeating: element.baseAddress.load(as: UInt64.self), count: n)
    }
}
