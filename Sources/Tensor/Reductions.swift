/// Reductions: sum, mean, maximum, minimum and L2 norm along an axis or over all elements,
/// Frobenius norm, and quantiles with torch.quantile's 'linear' interpolation.
///
/// Dtypes: inputs are widened to F32 (F64 stays F64); axis reductions return F32 (F64 for F64
/// input). Sums, means and norms accumulate in F64 whatever the input, so they are at least as
/// accurate as torch's F32 cascade sums, and are rounded once at the end. Whole-tensor
/// reductions return `Double`.
extension Tensor {
    // MARK: Along an axis

    /// Sum along `axis` (negative counts from the end); `keepDims` keeps the axis with size 1.
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor {
        reduceAlong(axis, keepDims, "sum", SumReducer<Float>(), SumReducer<Double>())
    }

    /// Arithmetic mean along `axis` (NaN for an empty axis, as torch).
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor {
        reduceAlong(axis, keepDims, "mean", MeanReducer<Float>(), MeanReducer<Double>())
    }

    /// Largest element along `axis` (values only, as `torch.amax`); NaN where the slice has a NaN.
    /// Precondition: the axis is not empty.
    public func maximum(axis: Int, keepDims: Bool = false) -> Tensor {
        reduceAlong(axis, keepDims, "maximum", MaxReducer<Float>(), MaxReducer<Double>(), needsElements: true)
    }

    /// Smallest element along `axis` (as `torch.amin`); NaN where the slice has a NaN.
    /// Precondition: the axis is not empty.
    public func minimum(axis: Int, keepDims: Bool = false) -> Tensor {
        reduceAlong(axis, keepDims, "minimum", MinReducer<Float>(), MinReducer<Double>(), needsElements: true)
    }

    /// Euclidean (L2) norm along `axis`, `sqrt(sum(x²))`, as `torch.linalg.vector_norm(x, dim=axis)`.
    public func norm(axis: Int, keepDims: Bool = false) -> Tensor {
        reduceAlong(axis, keepDims, "norm", NormReducer<Float>(), NormReducer<Double>())
    }

    // MARK: Over all elements

    /// Sum of all elements, accumulated in F64 (0 for an empty tensor).
    public func sum() -> Double { reduceAll(SumReducer<Float>(), SumReducer<Double>()) }

    /// Mean of all elements, accumulated in F64 (NaN for an empty tensor).
    public func mean() -> Double { reduceAll(MeanReducer<Float>(), MeanReducer<Double>()) }

    /// Largest element (NaN if any is NaN). Precondition: not empty.
    public func maximum() -> Double {
        precondition(count > 0, "maximum: empty tensor \(shape)")
        return reduceAll(MaxReducer<Float>(), MaxReducer<Double>())
    }

    /// Smallest element (NaN if any is NaN). Precondition: not empty.
    public func minimum() -> Double {
        precondition(count > 0, "minimum: empty tensor \(shape)")
        return reduceAll(MinReducer<Float>(), MinReducer<Double>())
    }

    /// Frobenius norm: the L2 norm of all elements, `sqrt(sum(x²))` accumulated in F64.
    public func frobeniusNorm() -> Double { reduceAll(NormReducer<Float>(), NormReducer<Double>()) }

    // MARK: Quantiles

    /// The `q`-quantile of all elements, as `torch.quantile(x, q)` (interpolation 'linear'),
    /// bit for bit for F32: with the elements sorted into `v`, torch (2.x, measured) computes
    /// the rank `r = Double(Float(q)) · (n − 1)` in F64, `lo = floor(r)`, `hi = ceil(r)`, the
    /// weight `w = Float(r − lo)`, and its vectorized `lerp` with one fused multiply-add:
    /// `w < 0.5 ? fma(w, v[hi] − v[lo], v[lo]) : fma(w − 1, v[hi] − v[lo], v[hi])`.
    /// NaN if any element is NaN. Unlike torch, more than 2^24 elements are accepted. Uses
    /// selection, not a full sort. Precondition: `0 <= q <= 1`, not empty.
    public func quantile(_ q: Double) -> Double {
        precondition((0...1).contains(q), "quantile: q \(q) outside [0, 1] for \(shape)")
        precondition(count > 0, "quantile: empty tensor \(shape)")
        switch computeDType(self) {
        case .f64:
            var values = asCompute(Double.self).doubles
            return values.withUnsafeMutableBufferPointer { quantileOfSlice($0.baseAddress!, $0.count, Double(q)) }
        default:
            var values = asCompute(Float.self).floats
            return values.withUnsafeMutableBufferPointer {
                Double(quantileOfSlice($0.baseAddress!, $0.count, Float(q)))
            }
        }
    }

    /// The `q`-quantile along `axis`, as `torch.quantile(x, q, dim=axis, keepdim=keepDims)`
    /// (interpolation 'linear'; see `quantile(_:)`). Precondition: `0 <= q <= 1`, axis not empty.
    public func quantile(_ q: Double, axis: Int, keepDims: Bool = false) -> Tensor {
        precondition((0...1).contains(q), "quantile: q \(q) outside [0, 1] for \(shape)")
        switch computeDType(self) {
        case .f64: return quantileAlong(Double(q), axis, keepDims)
        default: return quantileAlong(Float(q), axis, keepDims)
        }
    }
}

// MARK: - Axis and whole-tensor drivers

extension Tensor {
    /// Runs `f32` or `f64` (by compute dtype) along `axis` into a new contiguous tensor.
    func reduceAlong<R32: AxisReducer, R64: AxisReducer>(
        _ axis: Int, _ keepDims: Bool, _ name: String, _ f32: R32, _ f64: R64, needsElements: Bool = false
    ) -> Tensor where R32.Scalar == Float, R64.Scalar == Double {
        let axis = normalizedAxis(axis, name)
        precondition(!needsElements || shape[axis] > 0, "\(name): empty axis \(axis) in \(shape)")
        switch computeDType(self) {
        case .f64: return reduce(f64, contiguousCompute(Double.self), axis: axis, keepDims: keepDims)
        default: return reduce(f32, contiguousCompute(Float.self), axis: axis, keepDims: keepDims)
        }
    }

    /// Runs `f32` or `f64` (by compute dtype) over all elements.
    func reduceAll<R32: AxisReducer, R64: AxisReducer>(_ f32: R32, _ f64: R64) -> Double
    where R32.Scalar == Float, R64.Scalar == Double {
        switch computeDType(self) {
        case .f64: return reduceContiguous(f64, contiguousCompute(Double.self))
        default: return reduceContiguous(f32, contiguousCompute(Float.self))
        }
    }

    /// This tensor in `T`'s dtype and contiguous (no copy when it already is both).
    func contiguousCompute<T: ComputeScalar>(_: T.Type) -> Tensor {
        let x = asCompute(T.self)
        return x.isContiguous ? x : x.contiguous()
    }
}

/// The shape after reducing `axis`: removed, or kept with size 1.
func reducedShape(_ shape: [Int], axis: Int, keepDims: Bool) -> [Int] {
    var s = shape
    if keepDims { s[axis] = 1 } else { s.remove(at: axis) }
    return s
}

/// Views a contiguous shape as `[outer, shape[axis], inner]`.
func outerLengthInner(_ shape: [Int], axis: Int) -> (outer: Int, length: Int, inner: Int) {
    (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
}

/// Reduces all elements of contiguous `x` (dtype `R.Scalar`; the parameter keeps it alive),
/// finishing in F64 (not rounded to the input type).
func reduceContiguous<R: AxisReducer>(_ r: R, _ x: Tensor) -> Double {
    r.finishDouble(foldAll(r, UnsafePointer(x.typedBase(R.Scalar.self)), x.count), count: x.count)
}

/// Reduces contiguous `x` (dtype `R.Scalar`) along `axis`.
func reduce<R: AxisReducer>(_ r: R, _ x: Tensor, axis: Int, keepDims: Bool) -> Tensor {
    typealias T = R.Scalar
    let (outer, length, inner) = outerLengthInner(x.shape, axis: axis)
    let out = Tensor(uninitialized: reducedShape(x.shape, axis: axis, keepDims: keepDims), dtype: T.dtype)
    let px = UnsafePointer(x.typedBase(T.self)), po = out.typedBase(T.self)
    if inner == 1 {
        // Each output folds one contiguous row.
        Parallel.forChunks(outer, cost: Swift.max(length, 1)) { range in
            for o in range { po[o] = r.finish(foldAll(r, px + o * length, length), count: length) }
        }
        return out
    }
    // Each output column j of block o folds x[o, 0..<length, j]: accumulate whole rows into a
    // vector of accumulators (vectorizes across j), in tiles that stay in L1.
    let tile = 1024
    Parallel.forChunks(outer * inner, cost: Swift.max(length, 1)) { range in
        var acc = [R.Accumulator](repeating: r.initial, count: Swift.min(tile, range.count))
        acc.withUnsafeMutableBufferPointer { accBuffer in
            let a = accBuffer.baseAddress!
            var index = range.lowerBound
            while index < range.upperBound {
                let o = index / inner, j0 = index % inner
                let width = Swift.min(inner - j0, range.upperBound - index, tile)
                for j in 0..<width { a[j] = r.initial }
                for k in 0..<length {
                    let row = px + (o * length + k) * inner + j0
                    for j in 0..<width { a[j] = r.combine(a[j], row[j]) }
                }
                for j in 0..<width { po[index + j] = r.finish(a[j], count: length) }
                index += width
            }
        }
    }
    return out
}

/// Folds `n` contiguous elements with eight independent accumulators, merged at the end.
@inline(__always)
func foldAll<R: AxisReducer>(_ r: R, _ p: UnsafePointer<R.Scalar>, _ n: Int) -> R.Accumulator {
    var a0 = r.initial, a1 = r.initial, a2 = r.initial, a3 = r.initial
    var a4 = r.initial, a5 = r.initial, a6 = r.initial, a7 = r.initial
    var i = 0
    while i + 8 <= n {
        a0 = r.combine(a0, p[i]); a1 = r.combine(a1, p[i + 1])
        a2 = r.combine(a2, p[i + 2]); a3 = r.combine(a3, p[i + 3])
        a4 = r.combine(a4, p[i + 4]); a5 = r.combine(a5, p[i + 5])
        a6 = r.combine(a6, p[i + 6]); a7 = r.combine(a7, p[i + 7])
        i += 8
    }
    while i < n { a0 = r.combine(a0, p[i]); i += 1 }
    return r.merge(r.merge(r.merge(a0, a1), r.merge(a2, a3)), r.merge(r.merge(a4, a5), r.merge(a6, a7)))
}

// MARK: - Reducers

/// How one reduction folds a slice: start from `initial`, `combine` each element, `merge`
/// partial results (folding uses independent accumulators to break the add-latency chain and
/// allow vectorizing without reassociating one long sum), then `finish` with the slice length.
protocol AxisReducer {
    associatedtype Scalar: ComputeScalar
    associatedtype Accumulator
    var initial: Accumulator { get }
    func combine(_ acc: Accumulator, _ x: Scalar) -> Accumulator
    func merge(_ a: Accumulator, _ b: Accumulator) -> Accumulator
    func finish(_ acc: Accumulator, count: Int) -> Scalar
    /// `finish` without the final rounding to `Scalar` (whole-tensor results are F64).
    func finishDouble(_ acc: Accumulator, count: Int) -> Double
}

struct SumReducer<Scalar: ComputeScalar>: AxisReducer {
    var initial: Double { 0 }
    @inline(__always) func combine(_ acc: Double, _ x: Scalar) -> Double { acc + x.doubleValue }
    @inline(__always) func merge(_ a: Double, _ b: Double) -> Double { a + b }
    @inline(__always) func finish(_ acc: Double, count: Int) -> Scalar { Scalar(roundingDouble: acc) }
    func finishDouble(_ acc: Double, count: Int) -> Double { acc }
}

struct MeanReducer<Scalar: ComputeScalar>: AxisReducer {
    var initial: Double { 0 }
    @inline(__always) func combine(_ acc: Double, _ x: Scalar) -> Double { acc + x.doubleValue }
    @inline(__always) func merge(_ a: Double, _ b: Double) -> Double { a + b }
    // 0/0 = NaN for an empty slice, which is torch's answer too.
    @inline(__always) func finish(_ acc: Double, count: Int) -> Scalar { Scalar(roundingDouble: acc / Double(count)) }
    func finishDouble(_ acc: Double, count: Int) -> Double { acc / Double(count) }
}

struct NormReducer<Scalar: ComputeScalar>: AxisReducer {
    var initial: Double { 0 }
    @inline(__always) func combine(_ acc: Double, _ x: Scalar) -> Double {
        let d = x.doubleValue
        return acc + d * d
    }
    @inline(__always) func merge(_ a: Double, _ b: Double) -> Double { a + b }
    @inline(__always) func finish(_ acc: Double, count: Int) -> Scalar { Scalar(roundingDouble: acc.squareRoot()) }
    func finishDouble(_ acc: Double, count: Int) -> Double { acc.squareRoot() }
}

struct MaxReducer<Scalar: ComputeScalar>: AxisReducer {
    var initial: Scalar { -.infinity }
    // `x != x` is the NaN test: once the accumulator is NaN, `x > acc` stays false and it sticks.
    @inline(__always) func combine(_ acc: Scalar, _ x: Scalar) -> Scalar { (x > acc || x != x) ? x : acc }
    @inline(__always) func merge(_ a: Scalar, _ b: Scalar) -> Scalar { combine(a, b) }
    @inline(__always) func finish(_ acc: Scalar, count: Int) -> Scalar { acc }
    func finishDouble(_ acc: Scalar, count: Int) -> Double { acc.doubleValue }
}

struct MinReducer<Scalar: ComputeScalar>: AxisReducer {
    var initial: Scalar { .infinity }
    @inline(__always) func combine(_ acc: Scalar, _ x: Scalar) -> Scalar { (x < acc || x != x) ? x : acc }
    @inline(__always) func merge(_ a: Scalar, _ b: Scalar) -> Scalar { combine(a, b) }
    @inline(__always) func finish(_ acc: Scalar, count: Int) -> Scalar { acc }
    func finishDouble(_ acc: Scalar, count: Int) -> Double { acc.doubleValue }
}

// MARK: - Quantile

extension Tensor {
    /// Quantile along `axis` in `T`: each slice is gathered into a scratch buffer and selected.
    func quantileAlong<T: ComputeScalar>(_ q: T, _ axis: Int, _ keepDims: Bool) -> Tensor {
        let axis = normalizedAxis(axis, "quantile")
        precondition(shape[axis] > 0, "quantile: empty axis \(axis) in \(shape)")
        let x = contiguousCompute(T.self)
        let (outer, length, inner) = outerLengthInner(shape, axis: axis)
        let out = Tensor(uninitialized: reducedShape(shape, axis: axis, keepDims: keepDims), dtype: T.dtype)
        let px = UnsafePointer(x.typedBase(T.self)), po = out.typedBase(T.self)
        defer { withExtendedLifetime(x) {} } // x (maybe a fresh copy) must outlive the reads below.
        // Selection costs a few passes over the slice: weight the parallel threshold accordingly.
        Parallel.forChunks(outer * inner, cost: 4 * length) { range in
            let scratch = UnsafeMutablePointer<T>.allocate(capacity: length)
            defer { scratch.deallocate() }
            for index in range {
                let o = index / inner, j = index % inner
                let slice = px + o * length * inner + j
                for k in 0..<length { scratch[k] = slice[k * inner] }
                po[index] = quantileOfSlice(scratch, length, q)
            }
        }
        return out
    }
}

/// torch.quantile 'linear' on `n > 0` values (reordered in place), as documented on
/// `Tensor.quantile(_:)`; `q` is already rounded to `T`. NaN if any value is NaN (torch sorts
/// NaN last and fills the result with NaN).
func quantileOfSlice<T: ComputeScalar>(_ v: UnsafeMutablePointer<T>, _ n: Int, _ q: T) -> T {
    for i in 0..<n where v[i].isNaN { return .nan }
    let rank = q.doubleValue * Double(n - 1)
    let below = Int(rank.rounded(.down)), above = Int(rank.rounded(.up))
    selectOrderStatistic(v, n, below)
    let low = v[below]
    var high = low
    if above > below {
        // After selection everything right of `below` is >= v[below]; the next order
        // statistic is the smallest of them.
        high = v[below + 1]
        for i in (below + 2)..<Swift.max(n, below + 2) where v[i] < high { high = v[i] }
    }
    let weight = T(roundingDouble: rank - Double(below)), span = high - low
    // torch's vectorized lerp: one rounding each (fused); w − 1 is exact for w in [0.5, 1).
    return weight < 0.5 ? low.addingProduct(weight, span) : high.addingProduct(weight - 1, span)
}

/// Reorders `v[0..<n]` (no NaN) so that `v[k]` is the k-th smallest, everything before it is
/// `<=` and everything after it `>=` (introselect: median-of-three quickselect that falls back
/// to sorting the remaining range after `2 log2 n` unbalanced rounds).
func selectOrderStatistic<T: ComputeScalar>(_ v: UnsafeMutablePointer<T>, _ n: Int, _ k: Int) {
    precondition(k >= 0 && k < n)
    var lo = 0, hi = n - 1
    var budget = 2 * (Int.bitWidth - n.leadingZeroBitCount)
    while hi > lo {
        if hi - lo < 16 || budget == 0 {
            var rest = UnsafeMutableBufferPointer(start: v + lo, count: hi - lo + 1)
            rest.sort()
            return
        }
        budget -= 1
        // Median of three as the pivot value (guards against sorted and reversed inputs).
        let mid = lo + (hi - lo) / 2
        if v[mid] < v[lo] { v.swapAt(mid, lo) }
        if v[hi] < v[lo] { v.swapAt(hi, lo) }
        if v[hi] < v[mid] { v.swapAt(hi, mid) }
        let pivot = v[mid]
        // Hoare partition: afterwards v[lo...j] <= pivot, v[i...hi] >= pivot, and anything
        // strictly between j and i equals the pivot.
        var i = lo, j = hi
        while i <= j {
            while v[i] < pivot { i += 1 }
            while v[j] > pivot { j -= 1 }
            if i <= j {
                v.swapAt(i, j)
                i += 1
                j -= 1
            }
        }
        if k <= j {
            hi = j
        } else if k >= i {
            lo = i
        } else {
            return
        }
    }
}

extension UnsafeMutablePointer {
    /// Swaps two elements (indices relative to this pointer).
    @inline(__always) fileprivate func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]
        self[i] = self[j]
        self[j] = t
    }
}
