/// Matrix products through BLAS GEMM.
extension Tensor {
    /// `torch.matmul(self, other)`: 2-D × 2-D is a matrix product; rank ≥ 3 is a batch of them
    /// with the leading (batch) axes broadcast by NumPy rules; a 1-D left operand is a row
    /// vector and a 1-D right operand a column vector, and that axis is removed from the result
    /// (1-D × 1-D is the dot product, rank 0).
    ///
    /// Computes in F32 via `ah_sgemm` (F64 via `ah_dgemm` when either operand is F64); other
    /// dtypes are widened to F32 first. Operands whose matrices are row-major or transposed
    /// views (e.g. `w.transposed()`) go to BLAS as they are, with a transpose flag and leading
    /// dimension; only other layouts are copied. A right operand shared by the whole batch
    /// (2-D, or broadcast) with a left operand whose rows are evenly spaced becomes one GEMM.
    /// Precondition: inner dimensions agree and batch axes broadcast. Stops if BLAS is missing.
    public func matmul(_ other: Tensor) -> Tensor {
        precondition(rank >= 1 && other.rank >= 1, "matmul: rank-0 operand in \(shape) @ \(other.shape)")
        switch computeDType(self, other) {
        case .f64: return matmulTyped(Double.self, self, other)
        default: return matmulTyped(Float.self, self, other)
        }
    }
}

/// `a @ b` in `T`; see `Tensor.matmul`.
private func matmulTyped<T: ComputeScalar>(_: T.Type, _ lhs: Tensor, _ rhs: Tensor) -> Tensor {
    BLAS.require()
    var a = lhs.asCompute(T.self), b = rhs.asCompute(T.self)
    let vectorLeft = a.rank == 1, vectorRight = b.rank == 1
    if vectorLeft { a = a.unsqueezed(0) }
    if vectorRight { b = b.unsqueezed(1) }
    let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1], n = b.shape[b.rank - 1]
    precondition(b.shape[b.rank - 2] == k, "matmul: inner dimensions differ in \(lhs.shape) @ \(rhs.shape)")
    let batchShape = broadcastShape(Array(a.shape.dropLast(2)), Array(b.shape.dropLast(2)), "matmul batch of \(lhs.shape) @ \(rhs.shape)")
    a = a.expanded(to: batchShape + [m, k])
    b = b.expanded(to: batchShape + [k, n])
    var resultShape = batchShape
    if !vectorLeft { resultShape.append(m) }
    if !vectorRight { resultShape.append(n) }
    let batchCount = batchShape.reduce(1, *)
    // Nothing to compute, or only empty sums (k = 0; BLAS would also reject lda = 0).
    if batchCount * m * n == 0 || k == 0 { return Tensor(zeros: resultShape, dtype: T.dtype) }
    let out = Tensor(uninitialized: batchShape + [m, n], dtype: T.dtype)
    let c = out.typedBase(T.self)

    let layoutA = GEMMOperand<T>(a), layoutB = GEMMOperand<T>(b)
    // The operands' storage (possibly fresh copies) must outlive every BLAS call reading it.
    withExtendedLifetime((layoutA, layoutB)) {
        let batchRank = batchShape.count
        // One GEMM for the whole batch when b is the same matrix for every batch element and
        // a's [batch..., m] rows are evenly spaced with unit column stride: rows = batch * m.
        if batchRank > 0, layoutB.batchStrides.allSatisfy({ $0 == 0 }), !layoutA.transposed,
           let rowStride = uniformStride(shape: Array(layoutA.tensor.shape.dropLast()),
                                         strides: Array(layoutA.tensor.strides.dropLast())),
           rowStride >= Swift.max(1, k) || batchCount * m == 1 {
            T.gemm(transA: false, transB: layoutB.transposed, m: batchCount * m, n: n, k: k, alpha: 1,
                   a: layoutA.base, lda: batchCount * m == 1 ? Swift.max(1, k) : rowStride,
                   b: layoutB.base, ldb: layoutB.leadingDimension, beta: 0, c: c, ldc: n)
            return
        }
        // One GEMM per batch element, at offsets from the (possibly broadcast, stride 0) batch strides.
        var index = [Int](repeating: 0, count: batchRank)
        for batch in 0..<batchCount {
            var offsetA = 0, offsetB = 0
            for d in 0..<batchRank {
                offsetA += index[d] * layoutA.batchStrides[d]
                offsetB += index[d] * layoutB.batchStrides[d]
            }
            // beta = 0: BLAS does not read C then (the uninitialized output may hold NaN bytes).
            T.gemm(transA: layoutA.transposed, transB: layoutB.transposed, m: m, n: n, k: k, alpha: 1,
                   a: layoutA.base + offsetA, lda: layoutA.leadingDimension,
                   b: layoutB.base + offsetB, ldb: layoutB.leadingDimension,
                   beta: 0, c: c + batch * m * n, ldc: n)
            var d = batchRank - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < batchShape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }
    return out.reshaped(resultShape)
}

/// A batch of matrices (`[batch..., rows, cols]`, dtype `T`) as BLAS sees it: a base pointer,
/// whether each matrix is stored transposed, its leading dimension, and the batch strides.
/// Keeps the tensor it points into alive.
struct GEMMOperand<T: ComputeScalar> {
    let tensor: Tensor
    let base: UnsafePointer<T>
    let transposed: Bool
    let leadingDimension: Int
    let batchStrides: [Int]

    /// Uses `t`'s own layout when BLAS can read it, else a contiguous copy of its matrices.
    init(_ t: Tensor) {
        let r = t.rank
        if let layout = gemmLayout(rows: t.shape[r - 2], cols: t.shape[r - 1],
                                   rowStride: t.strides[r - 2], colStride: t.strides[r - 1]) {
            tensor = t
            (transposed, leadingDimension) = layout
        } else {
            // Copy only the matrices: broadcast batch axes stay stride 0 (not materialized).
            let batchShape = Array(t.shape.dropLast(2))
            let distinct = batchShape.enumerated().map { t.strides[$0.offset] == 0 ? 1 : $0.element }
            let sliced = t.slicedBatch(toSizes: distinct).contiguous()
            tensor = sliced.expanded(to: t.shape)
            transposed = false
            leadingDimension = Swift.max(1, t.shape[r - 1])
        }
        base = UnsafePointer(tensor.typedBase(T.self))
        batchStrides = Array(tensor.strides.dropLast(2))
    }
}

extension Tensor {
    /// The first `sizes[d]` elements of each leading axis `d` (a view).
    fileprivate func slicedBatch(toSizes sizes: [Int]) -> Tensor {
        var t = self
        for (d, size) in sizes.enumerated() where size != shape[d] { t = t.sliced(axis: d, 0..<size) }
        return t
    }
}

/// How a `[rows, cols]` matrix with these element strides can be passed to row-major BLAS:
/// as stored (element (i, j) at `i * ld + j`) or transposed (at `j * ld + i`, i.e. a
/// row-major `[cols, rows]` matrix). nil when neither (e.g. a column-sliced view with steps,
/// or a broadcast row). BLAS requires `ld >= max(1, cols)` resp. `max(1, rows)`.
func gemmLayout(rows: Int, cols: Int, rowStride: Int, colStride: Int) -> (transposed: Bool, ld: Int)? {
    // A size-1 axis has an arbitrary stride; it constrains nothing.
    if colStride == 1 || cols == 1 {
        let ld = rows == 1 ? Swift.max(1, cols) : rowStride
        if ld >= Swift.max(1, cols) { return (false, ld) }
    }
    if rowStride == 1 || rows == 1 {
        let ld = cols == 1 ? Swift.max(1, rows) : colStride
        if ld >= Swift.max(1, rows) { return (true, ld) }
    }
    return nil
}

/// The stride of the single axis that (shape, strides) steps through memory as, when each
/// outer axis advances exactly one whole inner block; nil otherwise. Size-1 axes don't count;
/// all axes of size 1 give 0 (one element: any stride will do).
func uniformStride(shape: [Int], strides: [Int]) -> Int? {
    guard let last = shape.indices.last(where: { shape[$0] != 1 }) else { return 0 }
    let unit = strides[last]
    var size = shape[last]
    for d in stride(from: last - 1, through: 0, by: -1) where shape[d] != 1 {
        if strides[d] != unit * size { return nil }
        size *= shape[d]
    }
    return unit
}

extension Tensor {
    /// `self += alpha · (a @ b)` in place, as one GEMM with beta = 1 (no product tensor): the
    /// form bypass adapters use to add a low-rank term straight into a layer's output.
    /// `a` is `[..., k]` (its leading axes flattened into rows, `self`'s rows), `b` a 2-D
    /// `[k, n]` matrix (a transposed view is read as it is). Precondition: `self` is
    /// contiguous F32 over writable storage with `a`'s row count × n elements, and neither
    /// operand views `self`'s storage.
    public func addMatmul(_ a: Tensor, _ b: Tensor, alpha: Double) {
        precondition(dtype == .f32 && isContiguous && storage.isWritable,
                     "addMatmul: target \(shape) must be contiguous, writable F32")
        precondition(a.rank >= 1 && b.rank == 2 && a.shape[a.rank - 1] == b.shape[0],
                     "addMatmul: \(a.shape) @ \(b.shape) do not fit")
        let k = b.shape[0], n = b.shape[1]
        let rows = a.count / Swift.max(k, 1)
        precondition(rows * n == count, "addMatmul: \(a.shape) @ \(b.shape) has \(rows * n) elements, target \(shape) \(count)")
        precondition(a.storage !== storage && b.storage !== storage, "addMatmul: an operand views the target")
        guard rows > 0, n > 0, k > 0 else { return }
        BLAS.require()
        // Rows of `a` must be one row-major matrix for a single GEMM; other layouts are copied.
        let left = a.asCompute(Float.self).contiguous().reshaped([rows, k])
        let right = GEMMOperand<Float>(b.asCompute(Float.self))
        withExtendedLifetime((left, right)) {
            Float.gemm(transA: false, transB: right.transposed, m: rows, n: n, k: k, alpha: Float(alpha),
                       a: UnsafePointer(left.typedBase(Float.self)), lda: k,
                       b: right.base, ldb: right.leadingDimension, beta: 1, c: typedBase(Float.self), ldc: n)
        }
    }
}
