/// Softmax.
extension Tensor {
    /// `torch.softmax(self, dim: axis)`: `exp(x - max) / sum(exp(x - max))` along `axis`, so
    /// large inputs do not overflow. A slice of all `-inf` gives NaN (as torch); `-inf` entries
    /// elsewhere give 0 (attention masks). Computes in F32 (F64 for F64 input), with the sum
    /// accumulated in F64; returns that dtype, contiguous. F32 uses the vectorized `exp`
    /// (< 1 ulp, as torch's Sleef exp), so results agree with torch to a few ulp.
    public func softmax(axis: Int = -1) -> Tensor {
        let axis = normalizedAxis(axis, "softmax")
        switch computeDType(self) {
        case .f64: return softmaxTyped(Double.self, contiguousCompute(Double.self), axis)
        default: return softmaxTyped(Float.self, contiguousCompute(Float.self), axis)
        }
    }
}

/// Softmax of contiguous `x` (dtype `T`) along `axis`.
private func softmaxTyped<T: ComputeScalar>(_: T.Type, _ x: Tensor, _ axis: Int) -> Tensor {
    let (outer, length, inner) = outerLengthInner(x.shape, axis: axis)
    let out = Tensor(uninitialized: x.shape, dtype: T.dtype)
    if x.count == 0 { return out }
    let px = UnsafePointer(x.typedBase(T.self)), po = out.typedBase(T.self)
    if inner == 1 {
        // Contiguous rows: max, then exp and sum, then scale by the reciprocal (as torch's
        // vectorized last-axis kernel does).
        Parallel.forChunks(outer, cost: 8 * length) { range in
            for o in range {
                let src = px + o * length, dst = po + o * length
                let top = foldAll(MaxReducer<T>(), src, length)
                for i in 0..<length { dst[i] = T.exponential(src[i] - top) }
                let total = foldAll(SumReducer<T>(), UnsafePointer(dst), length)
                let scale = T(roundingDouble: 1 / total)
                for i in 0..<length { dst[i] *= scale }
            }
        }
        return out
    }
    // Axis with a stride: work on blocks [length, width] of columns, keeping per-column max
    // and sum in small buffers so every inner loop runs along contiguous memory.
    let tile = 1024
    Parallel.forChunks(outer * inner, cost: 8 * length) { range in
        let top = UnsafeMutablePointer<T>.allocate(capacity: Swift.min(tile, range.count))
        let total = UnsafeMutablePointer<Double>.allocate(capacity: Swift.min(tile, range.count))
        defer { top.deallocate(); total.deallocate() }
        var index = range.lowerBound
        while index < range.upperBound {
            let o = index / inner, j0 = index % inner
            let width = Swift.min(inner - j0, range.upperBound - index, tile)
            let base = o * length * inner + j0
            for j in 0..<width { top[j] = -.infinity }
            for k in 0..<length {
                let row = px + base + k * inner
                for j in 0..<width { top[j] = MaxReducer<T>().combine(top[j], row[j]) }
            }
            for j in 0..<width { total[j] = 0 }
            for k in 0..<length {
                let src = px + base + k * inner, dst = po + base + k * inner
                for j in 0..<width {
                    let e = T.exponential(src[j] - top[j])
                    dst[j] = e
                    total[j] += e.doubleValue
                }
            }
            for j in 0..<width { top[j] = T(roundingDouble: 1 / total[j]) } // reuse as the scale
            for k in 0..<length {
                let dst = po + base + k * inner
                for j in 0..<width { dst[j] *= top[j] }
            }
            index += width
        }
    }
    return out
}
