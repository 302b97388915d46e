import CKernels

// Dense linear algebra on 2-D tensors (and batches of square matrices) through LAPACKE.
//
// Every op computes in F64 when its input is F64 and in F32 otherwise: F32 stays F32, and F16,
// BF16 and F8 inputs are widened to F32 (exact). Integer and BOOL inputs are rejected.
// Results are new, contiguous tensors in that compute dtype; inputs are never written
// (LAPACK overwrites its operands, so each op first copies them).
//
// LAPACK's status (`info`) is never ignored: a nonzero value becomes a
// `LinearAlgebraError`. The randomized truncated SVD lives in LinearAlgebra+Randomized.swift.

/// Why a linear-algebra op could not produce its result.
public enum LinearAlgebraError: Error, Equatable, CustomStringConvertible {
    /// A LAPACK routine returned a nonzero `info`. Negative: argument `-info` was illegal
    /// (LAPACKE also reports a NaN in an input matrix this way). Positive: the routine's own
    /// failure (for `?gesdd`: the divide-and-conquer iteration did not converge).
    /// `batchIndex` is the matrix of a batch that failed (nil for a single matrix).
    case lapackFailure(routine: String, info: Int, batchIndex: Int?)
    /// The matrix is exactly singular: LU factorization found `U[info-1, info-1] == 0`.
    /// (Nearly singular matrices are not detected; their results are merely inaccurate.)
    case singularMatrix(routine: String, info: Int, batchIndex: Int?)
    /// An input's shape breaks the op's rule.
    case invalidShape(op: String, shapes: [[Int]], rule: String)
    /// An input's dtype is not floating point.
    case unsupportedDType(op: String, dtype: DType)
    /// A non-tensor argument is out of range.
    case invalidArgument(op: String, rule: String)

    /// LAPACK's status value, when the error came from LAPACK.
    public var info: Int? {
        switch self {
        case .lapackFailure(_, let info, _), .singularMatrix(_, let info, _): return info
        default: return nil
        }
    }

    public var description: String {
        func batch(_ i: Int?) -> String { i.map { " (matrix \($0) of the batch)" } ?? "" }
        switch self {
        case let .lapackFailure(routine, info, index):
            let meaning = info < 0
                ? "argument \(-info) was illegal or the input contains NaN"
                : "the routine did not converge"
            return "LinearAlgebra: LAPACK \(routine) failed with info \(info): \(meaning)\(batch(index))"
        case let .singularMatrix(routine, info, index):
            return "LinearAlgebra: LAPACK \(routine): matrix is singular, U[\(info - 1), \(info - 1)] is exactly zero (info \(info))\(batch(index))"
        case let .invalidShape(op, shapes, rule):
            return "LinearAlgebra.\(op): shapes \(shapes.map { "\($0)" }.joined(separator: ", ")): \(rule)"
        case let .unsupportedDType(op, dtype):
            return "LinearAlgebra.\(op): dtype \(dtype.rawValue) is not floating point"
        case let .invalidArgument(op, rule):
            return "LinearAlgebra.\(op): \(rule)"
        }
    }
}

// MARK: - Public ops

/// Singular value decomposition `A = U · diag(S) · Vt` of a matrix `[m, n]` (LAPACK `?gesdd`).
///
/// With `k = min(m, n)`: reduced (default) returns `u [m, k]`, `s [k]`, `vt [k, n]`;
/// `fullMatrices: true` returns `u [m, m]`, `s [k]`, `vt [n, n]`. Singular values are
/// non-negative and descending; U's columns and Vt's rows are orthonormal.
/// F64 input computes in F64, every other float dtype in F32.
/// - Throws: `LinearAlgebraError` for a non-matrix or non-float input, or when LAPACK fails
///   (including NaN in the input).
public func svd(_ a: Tensor, fullMatrices: Bool = false) throws -> (u: Tensor, s: Tensor, vt: Tensor) {
    try LinAlg.requireMatrix(a, op: "svd")
    switch try LinAlg.computeDType(a, op: "svd") {
    case .f64: return try svdTyped(a, LinAlg.F64.self, fullMatrices: fullMatrices)
    default: return try svdTyped(a, LinAlg.F32.self, fullMatrices: fullMatrices)
    }
}

/// Reduced QR factorization `A = Q · R` of a matrix `[m, n]` (LAPACK `?geqrf` + `?orgqr`).
///
/// With `k = min(m, n)`: `q [m, k]` has orthonormal columns, `r [k, n]` is upper triangular
/// (its diagonal may be negative: LAPACK's Householder convention, the same as torch and numpy).
/// - Throws: `LinearAlgebraError` for a non-matrix or non-float input, or when LAPACK fails.
public func qr(_ a: Tensor) throws -> (q: Tensor, r: Tensor) {
    try LinAlg.requireMatrix(a, op: "qr")
    switch try LinAlg.computeDType(a, op: "qr") {
    case .f64: return try qrTyped(a, LinAlg.F64.self)
    default: return try qrTyped(a, LinAlg.F32.self)
    }
}

/// Solves `A · X = B` (LAPACK `?gesv`, LU with partial pivoting).
///
/// `a` is `[..., n, n]`; `b` is either `[..., n, k]` (matrix right-hand sides) or `[..., n]`
/// (one vector per matrix), with the same leading (batch) dimensions as `a` — no broadcasting.
/// The result has `b`'s shape. Computes in F64 when either input is F64, else in F32.
/// - Throws: `LinearAlgebraError.singularMatrix` (with the batch index) when a matrix is exactly
///   singular; shape, dtype and LAPACK errors as `LinearAlgebraError`.
public func solve(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    let batchShape = try LinAlg.requireSquareBatch(a, op: "solve")
    let vectorRHS = b.rank == a.rank - 1
    let n = a.shape[a.rank - 1]
    let rhsBatch = Array(b.shape.prefix(batchShape.count))
    let rule = "b must be [..., n, k] or [..., n] with a's batch dimensions, for a [..., n, n]"
    guard (vectorRHS || b.rank == a.rank), rhsBatch == batchShape, b.shape[batchShape.count] == n else {
        throw LinearAlgebraError.invalidShape(op: "solve", shapes: [a.shape, b.shape], rule: rule)
    }
    let da = try LinAlg.computeDType(a, op: "solve"), db = try LinAlg.computeDType(b, op: "solve")
    if da == .f64 || db == .f64 {
        return try solveTyped(a, b, LinAlg.F64.self, vectorRHS: vectorRHS)
    }
    return try solveTyped(a, b, LinAlg.F32.self, vectorRHS: vectorRHS)
}

/// Inverse of a square matrix `[n, n]` or of each matrix of a batch `[..., n, n]`
/// (LAPACK `?getrf` + `?getri`). Used, e.g., for OFT's Cayley transform over `[blocks, b, b]`.
/// - Throws: `LinearAlgebraError.singularMatrix` (with the batch index) when a matrix is exactly
///   singular; shape, dtype and LAPACK errors as `LinearAlgebraError`.
public func inverse(_ a: Tensor) throws -> Tensor {
    _ = try LinAlg.requireSquareBatch(a, op: "inverse")
    switch try LinAlg.computeDType(a, op: "inverse") {
    case .f64: return try inverseTyped(a, LinAlg.F64.self)
    default: return try inverseTyped(a, LinAlg.F32.self)
    }
}

// MARK: - Typed implementations

private func svdTyped<R: LinAlg.Routines>(_ a: Tensor, _: R.Type, fullMatrices: Bool) throws
    -> (u: Tensor, s: Tensor, vt: Tensor)
{
    let m = a.shape[0], n = a.shape[1], k = min(m, n)
    let uCols = fullMatrices ? m : k, vtRows = fullMatrices ? n : k
    if k == 0 {
        // LAPACKE rejects leading dimensions of 0; the decomposition of an empty matrix is
        // trivial: no singular values, and identity bases when full matrices are asked for.
        return (LinAlg.identityMatrix(m, R.self, columns: uCols), Tensor(zeros: [0], dtype: R.dtype),
                LinAlg.identityMatrix(vtRows, R.self, columns: n))
    }
    let work = LinAlg.ownedCopy(a, R.self) // ?gesdd destroys its input
    let u = Tensor(uninitialized: [m, uCols], dtype: R.dtype)
    let s = Tensor(uninitialized: [k], dtype: R.dtype)
    let vt = Tensor(uninitialized: [vtRows, n], dtype: R.dtype)
    let info = R.gesdd(jobz: fullMatrices ? "A" : "S", m, n, LinAlg.pointer(work, R.self), lda: n,
                       s: LinAlg.pointer(s, R.self), u: LinAlg.pointer(u, R.self), ldu: uCols,
                       vt: LinAlg.pointer(vt, R.self), ldvt: n)
    withExtendedLifetime(work) {} // `work` must outlive the LAPACK call that wrote through it
    try LinAlg.check(info, routine: R.prefix + "gesdd")
    return (u, s, vt)
}

private func qrTyped<R: LinAlg.Routines>(_ a: Tensor, _: R.Type) throws -> (q: Tensor, r: Tensor) {
    let m = a.shape[0], n = a.shape[1], k = min(m, n)
    if k == 0 {
        return (Tensor(zeros: [m, 0], dtype: R.dtype), Tensor(zeros: [0, n], dtype: R.dtype))
    }
    let work = LinAlg.ownedCopy(a, R.self)
    let w = LinAlg.pointer(work, R.self)
    var tau = [R.Scalar](repeating: 0, count: k)
    try LinAlg.check(R.geqrf(m, n, w, lda: n, tau: &tau), routine: R.prefix + "geqrf")
    // R: the upper triangle of the first k rows (geqrf leaves the Householder vectors below).
    let r = Tensor(zeros: [k, n], dtype: R.dtype)
    let rp = LinAlg.pointer(r, R.self)
    for i in 0..<k {
        (rp + i * n + i).update(from: w + i * n + i, count: n - i)
    }
    // Q: orgqr forms the first k columns of Q in place; with lda = n it works on the m × k
    // leading block of the row-major m × n buffer.
    try LinAlg.check(R.orgqr(m, k, k, w, lda: n, tau: tau), routine: R.prefix + "orgqr")
    if n == k { return (work, r) }
    let q = Tensor(uninitialized: [m, k], dtype: R.dtype)
    let qp = LinAlg.pointer(q, R.self)
    for i in 0..<m { (qp + i * k).update(from: w + i * n, count: k) }
    withExtendedLifetime(work) {}
    return (q, r)
}

private func solveTyped<R: LinAlg.Routines>(_ a: Tensor, _ b: Tensor, _: R.Type, vectorRHS: Bool) throws -> Tensor {
    let n = a.shape[a.rank - 1]
    let nrhs = vectorRHS ? 1 : b.shape[b.rank - 1]
    let batch = a.count / max(n * n, 1)
    let lu = LinAlg.ownedCopy(a, R.self)  // ?gesv overwrites A with its LU factors
    let x = LinAlg.ownedCopy(b, R.self)   // ... and B with the solution
    if n == 0 || nrhs == 0 || batch == 0 { return x }
    let ap = LinAlg.pointer(lu, R.self), xp = LinAlg.pointer(x, R.self)
    var pivots = [Int32](repeating: 0, count: n)
    for i in 0..<batch {
        let info = R.gesv(n, nrhs, ap + i * n * n, lda: n, ipiv: &pivots, b: xp + i * n * nrhs, ldb: nrhs)
        try LinAlg.check(info, routine: R.prefix + "gesv", batchIndex: a.rank > 2 ? i : nil, singularWhenPositive: true)
    }
    withExtendedLifetime(lu) {}
    return x
}

private func inverseTyped<R: LinAlg.Routines>(_ a: Tensor, _: R.Type) throws -> Tensor {
    let n = a.shape[a.rank - 1]
    let batch = a.count / max(n * n, 1)
    let inv = LinAlg.ownedCopy(a, R.self) // getrf/getri work in place
    if n == 0 || batch == 0 { return inv }
    let p = LinAlg.pointer(inv, R.self)
    var pivots = [Int32](repeating: 0, count: n)
    for i in 0..<batch {
        let index = a.rank > 2 ? i : nil
        let m = p + i * n * n
        try LinAlg.check(R.getrf(n, n, m, lda: n, ipiv: &pivots), routine: R.prefix + "getrf",
                  batchIndex: index, singularWhenPositive: true)
        try LinAlg.check(R.getri(n, m, lda: n, ipiv: pivots), routine: R.prefix + "getri",
                  batchIndex: index, singularWhenPositive: true)
    }
    return inv
}

// MARK: - Plumbing shared with LinearAlgebra+Randomized.swift

/// Internal namespace for the linear-algebra plumbing, so that its names cannot collide with
/// other tensor-core files.
enum LinAlg {
    /// The dtype an op computes in: F64 stays F64, other floats become F32.
    static func computeDType(_ t: Tensor, op: String) throws -> DType {
        guard t.dtype.isFloatingPoint else { throw LinearAlgebraError.unsupportedDType(op: op, dtype: t.dtype) }
        return t.dtype == .f64 ? .f64 : .f32
    }

    static func requireMatrix(_ t: Tensor, op: String) throws {
        guard t.rank == 2 else {
            throw LinearAlgebraError.invalidShape(op: op, shapes: [t.shape], rule: "expected a matrix (rank 2)")
        }
    }

    /// Checks `[..., n, n]` and returns the batch dimensions.
    static func requireSquareBatch(_ t: Tensor, op: String) throws -> [Int] {
        guard t.rank >= 2, t.shape[t.rank - 1] == t.shape[t.rank - 2] else {
            throw LinearAlgebraError.invalidShape(op: op, shapes: [t.shape],
                                                  rule: "expected square matrices [..., n, n]")
        }
        return Array(t.shape.dropLast(2))
    }

    /// A new contiguous, writable tensor with `t`'s values in `R`'s dtype. Never shares `t`'s
    /// storage, because LAPACK will overwrite it.
    static func ownedCopy<R: Routines>(_ t: Tensor, _: R.Type) -> Tensor {
        t.dtype == R.dtype ? t.contiguous() : t.to(R.dtype)
    }

    /// `t`'s values in `R`'s dtype, contiguous, possibly sharing `t`'s storage: read-only use.
    static func readable<R: Routines>(_ t: Tensor, _: R.Type) -> Tensor { t.to(R.dtype) }

    /// The first element of a contiguous tensor of `R`'s dtype.
    /// Unsafe assumption: the caller keeps `t` (hence its storage) alive while it uses the
    /// pointer, by using `t` afterwards (e.g. returning it) or with `withExtendedLifetime`.
    /// Writing through it is only allowed for tensors the caller created.
    static func pointer<R: Routines>(_ t: Tensor, _: R.Type) -> UnsafeMutablePointer<R.Scalar> {
        precondition(t.dtype == R.dtype && t.isContiguous, "LinearAlgebra: expected contiguous \(R.dtype.rawValue), got \(t)")
        return t.baseAddress.assumingMemoryBound(to: R.Scalar.self)
    }

    static func identityMatrix<R: Routines>(_ rows: Int, _: R.Type, columns: Int) -> Tensor {
        let t = Tensor(zeros: [rows, columns], dtype: R.dtype)
        let p = pointer(t, R.self)
        for i in 0..<min(rows, columns) { p[i * columns + i] = 1 }
        return t
    }

    /// Turns LAPACK's `info` into an error. `singularWhenPositive`: for the LU routines a
    /// positive `info` means an exactly zero pivot, i.e. a singular matrix.
    static func check(_ info: Int32, routine: String, batchIndex: Int? = nil, singularWhenPositive: Bool = false) throws {
        if info == 0 { return }
        if info > 0 && singularWhenPositive {
            throw LinearAlgebraError.singularMatrix(routine: routine, info: Int(info), batchIndex: batchIndex)
        }
        throw LinearAlgebraError.lapackFailure(routine: routine, info: Int(info), batchIndex: batchIndex)
    }

    /// LAPACK takes 32-bit dimensions (Debian's LAPACKE is LP64); a dimension that does not
    /// fit would be silently truncated, so it stops the program instead.
    @inline(__always) static func int32(_ x: Int) -> Int32 {
        guard let v = Int32(exactly: x) else { fatalError("LinearAlgebra: dimension \(x) exceeds LAPACK's 32-bit range") }
        return v
    }

    /// LAPACK's job letters are ASCII.
    static func jobLetter(_ c: Character) -> CChar { CChar(bitPattern: c.asciiValue!) }

    // MARK: Element types and their routines

    /// One element type with its BLAS/LAPACK routines (CKernels' row-major wrappers).
    /// Every routine first makes sure the libraries are loaded (`BLAS.require()`).
    protocol Routines {
        associatedtype Scalar: BinaryFloatingPoint
        static var dtype: DType { get }
        /// LAPACK's type letter, "s" or "d", for error messages.
        static var prefix: String { get }
        /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major.
        static func gemm(transA: Bool, transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Scalar,
                         _ a: UnsafePointer<Scalar>, lda: Int, _ b: UnsafePointer<Scalar>, ldb: Int,
                         beta: Scalar, _ c: UnsafeMutablePointer<Scalar>, ldc: Int)
        static func gesdd(jobz: Character, _ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int,
                          s: UnsafeMutablePointer<Scalar>, u: UnsafeMutablePointer<Scalar>, ldu: Int,
                          vt: UnsafeMutablePointer<Scalar>, ldvt: Int) -> Int32
        static func geqrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int,
                          tau: UnsafeMutablePointer<Scalar>) -> Int32
        static func orgqr(_ m: Int, _ n: Int, _ k: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int,
                          tau: UnsafePointer<Scalar>) -> Int32
        static func gesv(_ n: Int, _ nrhs: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int,
                         ipiv: UnsafeMutablePointer<Int32>, b: UnsafeMutablePointer<Scalar>, ldb: Int) -> Int32
        static func getrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int,
                          ipiv: UnsafeMutablePointer<Int32>) -> Int32
        static func getri(_ n: Int, _ a: UnsafeMutablePointer<Scalar>, lda: Int, ipiv: UnsafePointer<Int32>) -> Int32
    }

    /// Single precision (`s` routines).
    enum F32: Routines {
        typealias Scalar = Float
        static var dtype: DType { .f32 }
        static var prefix: String { "s" }
        static func gemm(transA: Bool, transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Float,
                         _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                         beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
            BLAS.require()
            ah_sgemm(transA ? 1 : 0, transB ? 1 : 0, int32(m), int32(n), int32(k), alpha,
                     a, int32(lda), b, int32(ldb), beta, c, int32(ldc))
        }
        static func gesdd(jobz: Character, _ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Float>, lda: Int,
                          s: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>, ldu: Int,
                          vt: UnsafeMutablePointer<Float>, ldvt: Int) -> Int32 {
            BLAS.require()
            return ah_sgesdd(jobLetter(jobz), int32(m), int32(n), a, int32(lda), s, u, int32(ldu), vt, int32(ldvt))
        }
        static func geqrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Float>, lda: Int,
                          tau: UnsafeMutablePointer<Float>) -> Int32 {
            BLAS.require()
            return ah_sgeqrf(int32(m), int32(n), a, int32(lda), tau)
        }
        static func orgqr(_ m: Int, _ n: Int, _ k: Int, _ a: UnsafeMutablePointer<Float>, lda: Int,
                          tau: UnsafePointer<Float>) -> Int32 {
            BLAS.require()
            return ah_sorgqr(int32(m), int32(n), int32(k), a, int32(lda), tau)
        }
        static func gesv(_ n: Int, _ nrhs: Int, _ a: UnsafeMutablePointer<Float>, lda: Int,
                         ipiv: UnsafeMutablePointer<Int32>, b: UnsafeMutablePointer<Float>, ldb: Int) -> Int32 {
            BLAS.require()
            return ah_sgesv(int32(n), int32(nrhs), a, int32(lda), ipiv, b, int32(ldb))
        }
        static func getrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Float>, lda: Int,
                          ipiv: UnsafeMutablePointer<Int32>) -> Int32 {
            BLAS.require()
            return ah_sgetrf(int32(m), int32(n), a, int32(lda), ipiv)
        }
        static func getri(_ n: Int, _ a: UnsafeMutablePointer<Float>, lda: Int, ipiv: UnsafePointer<Int32>) -> Int32 {
            BLAS.require()
            return ah_sgetri(int32(n), a, int32(lda), ipiv)
        }
    }

    /// Double precision (`d` routines).
    enum F64: Routines {
        typealias Scalar = Double
        static var dtype: DType { .f64 }
        static var prefix: String { "d" }
        static func gemm(transA: Bool, transB: Bool, _ m: Int, _ n: Int, _ k: Int, alpha: Double,
                         _ a: UnsafePointer<Double>, lda: Int, _ b: UnsafePointer<Double>, ldb: Int,
                         beta: Double, _ c: UnsafeMutablePointer<Double>, ldc: Int) {
            BLAS.require()
            ah_dgemm(transA ? 1 : 0, transB ? 1 : 0, int32(m), int32(n), int32(k), alpha,
                     a, int32(lda), b, int32(ldb), beta, c, int32(ldc))
        }
        static func gesdd(jobz: Character, _ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int,
                          s: UnsafeMutablePointer<Double>, u: UnsafeMutablePointer<Double>, ldu: Int,
                          vt: UnsafeMutablePointer<Double>, ldvt: Int) -> Int32 {
            BLAS.require()
            return ah_dgesdd(jobLetter(jobz), int32(m), int32(n), a, int32(lda), s, u, int32(ldu), vt, int32(ldvt))
        }
        static func geqrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int,
                          tau: UnsafeMutablePointer<Double>) -> Int32 {
            BLAS.require()
            return ah_dgeqrf(int32(m), int32(n), a, int32(lda), tau)
        }
        static func orgqr(_ m: Int, _ n: Int, _ k: Int, _ a: UnsafeMutablePointer<Double>, lda: Int,
                          tau: UnsafePointer<Double>) -> Int32 {
            BLAS.require()
            return ah_dorgqr(int32(m), int32(n), int32(k), a, int32(lda), tau)
        }
        static func gesv(_ n: Int, _ nrhs: Int, _ a: UnsafeMutablePointer<Double>, lda: Int,
                         ipiv: UnsafeMutablePointer<Int32>, b: UnsafeMutablePointer<Double>, ldb: Int) -> Int32 {
            BLAS.require()
            return ah_dgesv(int32(n), int32(nrhs), a, int32(lda), ipiv, b, int32(ldb))
        }
        static func getrf(_ m: Int, _ n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int,
                          ipiv: UnsafeMutablePointer<Int32>) -> Int32 {
            BLAS.require()
            return ah_dgetrf(int32(m), int32(n), a, int32(lda), ipiv)
        }
        static func getri(_ n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int, ipiv: UnsafePointer<Int32>) -> Int32 {
            BLAS.require()
            return ah_dgetri(int32(n), a, int32(lda), ipiv)
        }
    }
}
