import Foundation
import Testing
@testable import Tensor

// Linear algebra checked against naive Double loops (products, Gram–Schmidt) and against
// matrices built with known factors. Helpers are fileprivate: the test target shares one module.

// MARK: - Naive references

/// Row-major m×k times k×n, in Double.
fileprivate func naiveMatmul(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m {
        for p in 0..<k {
            let x = a[i * k + p]
            if x == 0 { continue }
            for j in 0..<n { c[i * n + j] += x * b[p * n + j] }
        }
    }
    return c
}

fileprivate func naiveTranspose(_ a: [Double], rows: Int, columns: Int) -> [Double] {
    var t = [Double](repeating: 0, count: a.count)
    for i in 0..<rows { for j in 0..<columns { t[j * rows + i] = a[i * columns + j] } }
    return t
}

fileprivate func frobenius(_ a: [Double]) -> Double { a.reduce(0) { $0 + $1 * $1 }.squareRoot() }

fileprivate func maxAbsDifference(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

fileprivate func identity(_ n: Int) -> [Double] {
    var e = [Double](repeating: 0, count: n * n)
    for i in 0..<n { e[i * n + i] = 1 }
    return e
}

fileprivate func gaussianValues(_ count: Int, seed: UInt64) -> [Double] {
    var g = LinAlg.SeededGaussian(seed: seed)
    return (0..<count).map { _ in g.next() }
}

/// Modified Gram–Schmidt on the columns of a row-major rows×columns matrix: (Q, diag of R).
fileprivate func gramSchmidt(_ a: [Double], rows: Int, columns: Int) -> (q: [Double], rDiagonal: [Double]) {
    var q = a
    var diagonal = [Double]()
    for j in 0..<columns {
        for p in 0..<j {
            var dot = 0.0
            for i in 0..<rows { dot += q[i * columns + p] * q[i * columns + j] }
            for i in 0..<rows { q[i * columns + j] -= dot * q[i * columns + p] }
        }
        var norm = 0.0
        for i in 0..<rows { norm += q[i * columns + j] * q[i * columns + j] }
        norm = norm.squareRoot()
        diagonal.append(norm)
        for i in 0..<rows { q[i * columns + j] /= norm }
    }
    return (q, diagonal)
}

/// A rows×columns matrix with orthonormal columns (Gram–Schmidt of Gaussian values).
fileprivate func orthonormalColumns(rows: Int, columns: Int, seed: UInt64) -> [Double] {
    gramSchmidt(gaussianValues(rows * columns, seed: seed), rows: rows, columns: columns).q
}

/// U · diag(s) · Vᵀ with U m×k, V n×k (row-major).
fileprivate func compose(_ u: [Double], _ s: [Double], _ v: [Double], m: Int, n: Int) -> [Double] {
    let k = s.count
    var us = u
    for i in 0..<m { for j in 0..<k { us[i * k + j] *= s[j] } }
    return naiveMatmul(us, naiveTranspose(v, rows: n, columns: k), m: m, k: k, n: n)
}

/// Largest deviation of the columns of a rows×columns matrix from orthonormality.
fileprivate func orthonormalityError(_ q: [Double], rows: Int, columns: Int) -> Double {
    let gram = naiveMatmul(naiveTranspose(q, rows: rows, columns: columns), q, m: columns, k: rows, n: columns)
    return maxAbsDifference(gram, identity(columns))
}

/// U · diag(s) · Vᵀ like `compose`, with BLAS and LAPACK QR bases: builds the larger test inputs
/// quickly (the checks themselves use the naive loops). Bases: `qr` of Gaussian values.
fileprivate func composeQuickly(strengths s: [Double], m: Int, n: Int, seeds: (UInt64, UInt64)) throws -> [Double] {
    let k = s.count
    let u = try qr(tensor(gaussianValues(m * k, seed: seeds.0), [m, k], .f64)).q.doubles
    let v = try qr(tensor(gaussianValues(n * k, seed: seeds.1), [n, k], .f64)).q
    let us = u.enumerated().map { $0.element * s[$0.offset % k] }
    var out = [Double](repeating: 0, count: m * n)
    v.withDoubles { vp in
        LinAlg.F64.gemm(transA: false, transB: true, m, n, k, alpha: 1, us, lda: k, vp.baseAddress!, ldb: k,
                        beta: 0, &out, ldc: n)
    }
    return out
}

fileprivate func tensor(_ values: [Double], _ shape: [Int], _ dtype: DType) -> Tensor {
    let t = Tensor(shape: shape, doubles: values)
    return dtype == .f64 ? t : t.to(dtype)
}

/// svd, qr, solve, inverse and randomizedSVD (Sources/Tensor/LinearAlgebra*.swift).
struct LinearAlgebraTests {
    // MARK: - SVD

    @Test(arguments: [DType.f32, .f64], [(12, 7), (7, 12)])
    func svdRecoversKnownFactors(dtype: DType, size: (Int, Int)) throws {
        let (m, n) = size, k = min(m, n)
        let known: [Double] = [9, 5, 3.5, 2, 1, 0.5, 0.25]
        let u0 = orthonormalColumns(rows: m, columns: k, seed: 1)
        let v0 = orthonormalColumns(rows: n, columns: k, seed: 2)
        let a = compose(u0, known, v0, m: m, n: n)
        let (u, s, vt) = try svd(tensor(a, [m, n], dtype))
        #expect(u.shape == [m, k] && s.shape == [k] && vt.shape == [k, n])
        #expect(u.dtype == dtype && s.dtype == dtype && vt.dtype == dtype)
        let tolerance = dtype == .f32 ? 1e-5 : 1e-12
        for (got, want) in zip(s.doubles, known) {
            #expect(abs(got - want) / want < tolerance, "singular value \(got) vs \(want)")
        }
        let orthoTolerance = dtype == .f32 ? 1e-5 : 1e-12
        #expect(orthonormalityError(u.doubles, rows: m, columns: k) < orthoTolerance)
        #expect(orthonormalityError(naiveTranspose(vt.doubles, rows: k, columns: n), rows: n, columns: k) < orthoTolerance)
        let rebuilt = compose(u.doubles, s.doubles, naiveTranspose(vt.doubles, rows: k, columns: n), m: m, n: n)
        #expect(maxAbsDifference(rebuilt, a) < (dtype == .f32 ? 1e-5 : 1e-12) * 9)
    }

    @Test(arguments: [(5, 3), (3, 5)])
    func svdFullMatricesAreSquareOrthonormalBases(size: (Int, Int)) throws {
        let (m, n) = size
        let a = gaussianValues(m * n, seed: 3)
        let (u, s, vt) = try svd(tensor(a, [m, n], .f64), fullMatrices: true)
        #expect(u.shape == [m, m] && s.shape == [min(m, n)] && vt.shape == [n, n])
        #expect(orthonormalityError(u.doubles, rows: m, columns: m) < 1e-12)
        #expect(orthonormalityError(vt.doubles, rows: n, columns: n) < 1e-12)
        let sv = s.doubles
        #expect(zip(sv, sv.dropFirst()).allSatisfy { $0 >= $1 } && sv.last! > 0)
        // A = U[:, :k] · diag(s) · Vt[:k, :]
        let k = min(m, n)
        let uk = u.sliced(axis: 1, 0..<k).doubles, vk = vt.sliced(axis: 0, 0..<k).doubles
        let rebuilt = compose(uk, sv, naiveTranspose(vk, rows: k, columns: n), m: m, n: n)
        #expect(maxAbsDifference(rebuilt, a) < 1e-12)
    }

    @Test func svdWidensHalfPrecisionAndRejectsWhatItCannotDo() throws {
        // diag(3, 2) stored as F16 computes in F32.
        let (_, s, _) = try svd(tensor([3, 0, 0, 2], [2, 2], .f16))
        #expect(s.dtype == .f32 && s.floats == [3, 2])
        #expect(throws: LinearAlgebraError.unsupportedDType(op: "svd", dtype: .i32)) {
            try svd(Tensor(zeros: [2, 2], dtype: .i32))
        }
        #expect(throws: LinearAlgebraError.self) { try svd(Tensor(zeros: [2, 2, 2])) }
        // LAPACKE reports NaN in the input as an illegal argument 5 (the matrix).
        let nan = Tensor(shape: [2, 2], values: [1, .nan, 0, 1])
        #expect(throws: LinearAlgebraError.lapackFailure(routine: "sgesdd", info: -5, batchIndex: nil)) {
            try svd(nan)
        }
    }

    // MARK: - QR

    @Test(arguments: [DType.f32, .f64], [(9, 5), (4, 7), (6, 6)])
    func qrFactorsIntoOrthonormalAndUpperTriangular(dtype: DType, size: (Int, Int)) throws {
        let (m, n) = size, k = min(m, n)
        let a = gaussianValues(m * n, seed: 4)
        let (q, r) = try qr(tensor(a, [m, n], dtype))
        #expect(q.shape == [m, k] && r.shape == [k, n] && q.dtype == dtype && r.dtype == dtype)
        let tolerance = dtype == .f32 ? 1e-5 : 1e-12
        let qv = q.doubles, rv = r.doubles
        #expect(orthonormalityError(qv, rows: m, columns: k) < tolerance)
        for i in 0..<k { for j in 0..<min(i, n) { #expect(rv[i * n + j] == 0) } }
        #expect(maxAbsDifference(naiveMatmul(qv, rv, m: m, k: k, n: n), a) < tolerance * 10)
        // QR is unique up to column signs: |R_ii| equals Gram–Schmidt's norms on the first k columns.
        var leading = [Double]()
        for i in 0..<m { leading += a[(i * n)..<(i * n + k)] }
        let reference = gramSchmidt(leading, rows: m, columns: k).rDiagonal
        for i in 0..<k { #expect(abs(abs(rv[i * n + i]) - reference[i]) < tolerance * 10) }
    }

    // MARK: - Solve and inverse

    /// A well-conditioned n×n matrix: Gaussian plus n·I.
    private static func wellConditioned(_ n: Int, seed: UInt64) -> [Double] {
        var a = gaussianValues(n * n, seed: seed)
        for i in 0..<n { a[i * n + i] += Double(n) }
        return a
    }

    @Test(arguments: [DType.f32, .f64])
    func solveSatisfiesTheSystem(dtype: DType) throws {
        let n = 6, k = 3
        let a = Self.wellConditioned(n, seed: 5), b = gaussianValues(n * k, seed: 6)
        let x = try solve(tensor(a, [n, n], dtype), tensor(b, [n, k], dtype))
        #expect(x.shape == [n, k] && x.dtype == dtype)
        let tolerance = dtype == .f32 ? 1e-5 : 1e-12
        #expect(maxAbsDifference(naiveMatmul(a, x.doubles, m: n, k: n, n: k), b) < tolerance)
        // One vector right-hand side.
        let xv = try solve(tensor(a, [n, n], dtype), tensor(Array(b.prefix(n)), [n], dtype))
        #expect(xv.shape == [n])
        #expect(maxAbsDifference(naiveMatmul(a, xv.doubles, m: n, k: n, n: 1), Array(b.prefix(n))) < tolerance)
    }

    @Test func solveBatchesPromotesAndChecksShapes() throws {
        let batch = 3, n = 5, k = 2
        var a = [Double](), b = gaussianValues(batch * n * k, seed: 7)
        for i in 0..<batch { a += Self.wellConditioned(n, seed: 10 + UInt64(i)) }
        // F32 matrices with F64 right-hand sides compute in F64.
        let x = try solve(tensor(a, [batch, n, n], .f32), tensor(b, [batch, n, k], .f64))
        #expect(x.shape == [batch, n, k] && x.dtype == .f64)
        let af = tensor(a, [batch, n, n], .f32).doubles // the values actually solved
        let xv = x.doubles
        for i in 0..<batch {
            let ai = Array(af[(i * n * n)..<((i + 1) * n * n)]), xi = Array(xv[(i * n * k)..<((i + 1) * n * k)])
            #expect(maxAbsDifference(naiveMatmul(ai, xi, m: n, k: n, n: k), Array(b[(i * n * k)..<((i + 1) * n * k)])) < 1e-12)
        }
        b = [Double](repeating: 1, count: 4 * n * k)
        #expect(throws: LinearAlgebraError.self) { try solve(tensor(a, [batch, n, n], .f32), tensor(b, [4, n, k], .f32)) }
        #expect(throws: LinearAlgebraError.self) { try solve(Tensor(zeros: [2, 3]), Tensor(zeros: [2, 1])) }
    }

    @Test func inverseOfAKnownMatrix() throws {
        let inv = try inverse(Tensor(shape: [2, 2], values: [4, 7, 2, 6]))
        let expected: [Double] = [0.6, -0.7, -0.2, 0.4]
        #expect(maxAbsDifference(inv.doubles, expected) < 1e-6)
    }

    @Test(arguments: [DType.f32, .f64])
    func inverseTimesMatrixIsIdentity(dtype: DType) throws {
        let n = 7
        let a = Self.wellConditioned(n, seed: 8)
        let inv = try inverse(tensor(a, [n, n], dtype))
        #expect(inv.dtype == dtype)
        let tolerance = dtype == .f32 ? 1e-5 : 1e-12
        #expect(maxAbsDifference(naiveMatmul(a, inv.doubles, m: n, k: n, n: n), identity(n)) < tolerance)
        #expect(maxAbsDifference(naiveMatmul(inv.doubles, a, m: n, k: n, n: n), identity(n)) < tolerance)
    }

    @Test func inverseOfABatchInvertsEachBlock() throws {
        // OFT's shape: [blocks, b, b].
        let blocks = 4, n = 6
        var a = [Double]()
        for i in 0..<blocks { a += Self.wellConditioned(n, seed: 20 + UInt64(i)) }
        let inv = try inverse(tensor(a, [blocks, n, n], .f64))
        #expect(inv.shape == [blocks, n, n])
        let iv = inv.doubles
        for i in 0..<blocks {
            let range = (i * n * n)..<((i + 1) * n * n)
            #expect(maxAbsDifference(naiveMatmul(Array(a[range]), Array(iv[range]), m: n, k: n, n: n), identity(n)) < 1e-12)
        }
    }

    @Test func singularMatricesThrowInsteadOfCrashing() throws {
        let singular = Tensor(shape: [2, 2], values: [1, 2, 2, 4])
        #expect(throws: LinearAlgebraError.singularMatrix(routine: "sgetrf", info: 2, batchIndex: nil)) {
            try inverse(singular)
        }
        #expect(throws: LinearAlgebraError.singularMatrix(routine: "sgesv", info: 2, batchIndex: nil)) {
            try solve(singular, Tensor(shape: [2], values: [1, 1]))
        }
        // The third block of a batch is singular (a zero column): the error names it.
        var blocks = [Double]()
        for i in 0..<4 { blocks += i == 2 ? [1, 0, 0, 3, 0, 0, 5, 0, 0] : Self.wellConditioned(3, seed: 30 + UInt64(i)) }
        #expect(throws: LinearAlgebraError.singularMatrix(routine: "dgetrf", info: 2, batchIndex: 2)) {
            try inverse(tensor(blocks, [4, 3, 3], .f64))
        }
        #expect(throws: LinearAlgebraError.self) { try inverse(Tensor(zeros: [2, 3])) }
    }

    // MARK: - Randomized SVD

    /// Test matrices for the randomized SVD, m×n row-major.
    enum Spectrum: String, CaseIterable {
        /// Plain Gaussian entries: the flattest spectrum, the classic worst case for sketching.
        case gaussian
        /// A fine-tune delta W_tuned − W_base where the update is low rank (48, decaying) plus noise.
        case fineTuneDelta
        /// Singular values i^-0.5: slow power-law decay.
        case powerLaw

        func values(m: Int, n: Int) throws -> [Double] {
            switch self {
            case .gaussian:
                return gaussianValues(m * n, seed: 40)
            case .fineTuneDelta:
                let r = 48
                let strengths = (1...r).map { 1 / Double($0).squareRoot() }
                let update = try composeQuickly(strengths: strengths, m: m, n: n, seeds: (41, 42))
                var noise = gaussianValues(m * n, seed: 43)
                let scale = 0.5 * frobenius(update) / frobenius(noise) // noise at half the update's energy
                noise = noise.map { $0 * scale }
                let base = gaussianValues(m * n, seed: 44)
                let tuned = (0..<(m * n)).map { base[$0] + update[$0] + noise[$0] }
                return (0..<(m * n)).map { tuned[$0] - base[$0] }
            case .powerLaw:
                let k = min(m, n)
                let s = (1...k).map { 1 / Double($0).squareRoot() }
                return try composeQuickly(strengths: s, m: m, n: n, seeds: (45, 46))
            }
        }
    }

    /// ‖A − U·diag(S)·Vt‖_F and the optimal rank-R error √(Σ discarded σ²) from the full SVD.
    private static func errorRatio(_ a: [Double], m: Int, n: Int, rank: Int,
                                _ result: (u: Tensor, s: Tensor, vt: Tensor)) throws -> Double {
        let approx = compose(result.u.doubles, result.s.doubles,
                             naiveTranspose(result.vt.doubles, rows: rank, columns: n), m: m, n: n)
        let error = frobenius(zip(a, approx).map { $0 - $1 })
        let all = try svd(Tensor(shape: [m, n], doubles: a)).s.doubles
        let optimal = all[rank...].reduce(0) { $0 + $1 * $1 }.squareRoot()
        return error / optimal
    }

    @Test(arguments: Spectrum.allCases)
    func randomizedSVDIsNearOptimal(spectrum: Spectrum) throws {
        let m = 256, n = 320, rank = 16
        let a = try spectrum.values(m: m, n: n)
        let result = try randomizedSVD(tensor(a, [m, n], .f32), rank: rank, seed: 7)
        #expect(result.u.shape == [m, rank] && result.s.shape == [rank] && result.vt.shape == [rank, n])
        #expect(result.u.dtype == .f32)
        let ratio = try Self.errorRatio(a, m: m, n: n, rank: rank, result)
        #expect(ratio >= 1 - 1e-6 && ratio <= 1.05, "\(spectrum): error \(ratio)× optimal")
        #expect(orthonormalityError(result.u.doubles, rows: m, columns: rank) < 1e-5)
        #expect(orthonormalityError(naiveTranspose(result.vt.doubles, rows: rank, columns: n), rows: n, columns: rank) < 1e-5)
        let s = result.s.doubles
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test func randomizedSVDFindsAnExactLowRankMatrix() throws {
        // Rank 5 exactly, F64: the sketch captures the whole range, so the factors are exact.
        let m = 40, n = 30
        let known: [Double] = [10, 4, 2, 1, 0.5]
        let a = compose(orthonormalColumns(rows: m, columns: 5, seed: 50), known,
                        orthonormalColumns(rows: n, columns: 5, seed: 51), m: m, n: n)
        let result = try randomizedSVD(tensor(a, [m, n], .f64), rank: 5, oversampling: 3, powerIterations: 0, seed: 1)
        #expect(result.s.dtype == .f64)
        #expect(maxAbsDifference(result.s.doubles, known) < 1e-12)
        let rebuilt = compose(result.u.doubles, result.s.doubles, naiveTranspose(result.vt.doubles, rows: 5, columns: n), m: m, n: n)
        #expect(maxAbsDifference(rebuilt, a) < 1e-12)
    }

    @Test func randomizedSVDIsDeterministicForASeed() throws {
        let a = tensor(try Spectrum.fineTuneDelta.values(m: 64, n: 80), [64, 80], .f32)
        let first = try randomizedSVD(a, rank: 8, seed: 99)
        let again = try randomizedSVD(a, rank: 8, seed: 99)
        #expect(first.u.floats == again.u.floats && first.s.floats == again.s.floats && first.vt.floats == again.vt.floats)
        let other = try randomizedSVD(a, rank: 8, seed: 100)
        #expect(first.u.floats != other.u.floats)
    }

    @Test func randomizedSVDRejectsBadArguments() throws {
        let a = Tensor(zeros: [6, 4])
        #expect(throws: LinearAlgebraError.self) { try randomizedSVD(a, rank: 0, seed: 1) }
        #expect(throws: LinearAlgebraError.self) { try randomizedSVD(a, rank: 5, seed: 1) }
        #expect(throws: LinearAlgebraError.self) { try randomizedSVD(a, rank: 2, oversampling: -1, seed: 1) }
        #expect(throws: LinearAlgebraError.self) { try randomizedSVD(Tensor(zeros: [6]), rank: 1, seed: 1) }
        // The zero matrix is valid input: zero singular values, orthonormal factors.
        let zero = try randomizedSVD(a, rank: 2, seed: 1)
        #expect(zero.s.floats == [0, 0])
    }

    @Test func seededGaussianHasStandardNormalMoments() {
        let n = 200_000
        let x = gaussianValues(n, seed: 12345)
        let mean = x.reduce(0, +) / Double(n)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)
        let fourth = x.reduce(0) { $0 + pow($1 - mean, 4) } / Double(n)
        // Standard errors: mean 1/√n ≈ 0.0022, variance √(2/n) ≈ 0.0032, kurtosis √(96/n) ≈ 0.022.
        #expect(abs(mean) < 0.01)
        #expect(abs(variance - 1) < 0.015)
        #expect(abs(fourth / (variance * variance) - 3) < 0.1)
        #expect(gaussianValues(4, seed: 1) == gaussianValues(4, seed: 1))
        #expect(gaussianValues(4, seed: 1) != gaussianValues(4, seed: 2))
    }

    // MARK: - Speed against the full SVD (opt-in: AH_LA_BENCH=1; too slow for CI)

    /// Sizes `extract` meets, rank 32: the randomized SVD must stay within 1.05× of the optimal
    /// error everywhere, and be ≥ 5× faster than the full (reduced) SVD on the large matrices
    /// (1280×1280, 1280×5120). 320×2880 (a conv weight) is timed for information. Serialized:
    /// cases running side by side would share the cores and distort the times.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["AH_LA_BENCH"] != nil, "set AH_LA_BENCH=1 to run"),
          .serialized, arguments: [(1280, 1280), (1280, 5120), (320, 2880)])
    func randomizedSVDBenchmark(size: (Int, Int)) throws {
        let (m, n) = size, rank = 32
        // Fine-tune-like delta (rank-64 update with 1/√i strengths plus noise at 20% of its
        // energy: the hardest case of the sweep) and a plain Gaussian matrix, built with BLAS.
        let update = try composeQuickly(strengths: (1...64).map { 1 / Double($0).squareRoot() }, m: m, n: n, seeds: (60, 61))
        let noise = gaussianValues(m * n, seed: 62)
        let scale = 0.2 * frobenius(update) / frobenius(noise)
        let delta = (0..<(m * n)).map { update[$0] + scale * noise[$0] }
        for (name, values) in [("fine-tune delta", delta), ("gaussian", noise)] {
            let a = tensor(values, [m, n], .f32)
            let clock = ContinuousClock()
            var full: (u: Tensor, s: Tensor, vt: Tensor)? = nil
            let fullTime = try clock.measure { full = try svd(a) }
            var fast: (u: Tensor, s: Tensor, vt: Tensor)? = nil
            var fastTime = Duration.seconds(1_000)
            for _ in 0..<3 { fastTime = min(fastTime, try clock.measure { fast = try randomizedSVD(a, rank: rank, seed: 1) }) }
            // Error with BLAS: ‖A − U·diag(S)·Vt‖_F versus √(Σ discarded σ²).
            var us = fast!.u.floats
            let s = fast!.s.floats
            for i in 0..<(m * rank) { us[i] *= s[i % rank] }
            var residual = a.floats
            fast!.vt.withFloats { vt in
                LinAlg.F32.gemm(transA: false, transB: false, m, n, rank, alpha: -1, us, lda: rank,
                                vt.baseAddress!, ldb: n, beta: 1, &residual, ldc: n)
            }
            let error = residual.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let optimal = full!.s.doubles[rank...].reduce(0) { $0 + $1 * $1 }.squareRoot()
            let speedup = fullTime / fastTime
            print("randomizedSVD \(m)x\(n) rank \(rank) \(name): full \(fullTime), randomized \(fastTime), speedup \(String(format: "%.1f", speedup))x, error \(String(format: "%.4f", error / optimal))x optimal")
            #expect(error / optimal <= 1.05)
            if m >= 1280 { #expect(speedup >= 5) }
        }
    }
}
