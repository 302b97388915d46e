import Tensor

/// Truncated SVDs and factor splitting shared by combine (svd), extract and resize.
enum LowRank {
    /// Below this many elements, or when the rank is a large part of the smaller side, the
    /// exact LAPACK SVD is used: it is cheap there and the randomized sketch would be nearly
    /// as large as the matrix.
    static let exactElementLimit = 256 * 256

    /// The leading `rank` singular triplets of the matrix `a [m, n]`: `u [m, k]`, `s [k]`,
    /// `vt [k, n]` with `k = min(rank, m, n)`, F32. Small matrices (or a rank near the smaller
    /// side) get the exact SVD; larger ones the randomized SVD with the tensor core's defaults
    /// (10 oversampling columns, 2 power iterations), whose Frobenius error stays within 1.05×
    /// the optimal rank-k error (see `randomizedSVD`). `seed` makes the sketch reproducible.
    static func truncatedSVD(_ a: Tensor, rank: Int, seed: UInt64) throws -> (u: Tensor, s: Tensor, vt: Tensor) {
        let m = a.shape[0], n = a.shape[1], smaller = min(m, n)
        let k = max(1, min(rank, smaller))
        if m * n <= exactElementLimit || 2 * (k + 10) >= smaller {
            let full = try svd(a)
            if k == smaller { return (full.u, full.s, full.vt) }
            return (full.u.sliced(axis: 1, 0..<k).contiguous(), full.s.sliced(axis: 0, 0..<k).contiguous(),
                    full.vt.sliced(axis: 0, 0..<k).contiguous())
        }
        return try randomizedSVD(a, rank: k, seed: seed)
    }

    /// The exact SVD of a product `up [m, r] · down [r, n]` without forming it: with
    /// `up = Qu·Ru` and `downᵀ = Qd·Rd`, `up·down = Qu·(Ru·Rdᵀ)·Qdᵀ`, so the SVD of the small
    /// `Ru·Rdᵀ` gives the product's. Returns `u [m, k]`, `s [k]`, `vt [k, n]`,
    /// `k = min(m, n, r)`, singular values descending.
    static func svdOfProduct(up: Tensor, down: Tensor) throws -> (u: Tensor, s: Tensor, vt: Tensor) {
        let (qu, ru) = try qr(up.to(.f32))
        let (qd, rd) = try qr(down.to(.f32).transposed().contiguous())
        let core = ru.matmul(rd.transposed())
        let (cu, s, cvt) = try svd(core)
        return (qu.matmul(cu), s, cvt.matmul(qd.transposed()))
    }

    /// Splits `u·diag(s)·vt` into LoRA factors with `√s` on each side (`up = u·√s`,
    /// `down = √s·vt`): the product is the same as kohya's `up = u·s`, `down = vt`, and both
    /// factors stay of similar magnitude, which keeps F16/BF16 storage accurate.
    static func balancedFactors(u: Tensor, s: Tensor, vt: Tensor) -> (up: Tensor, down: Tensor) {
        let root = s.to(.f32).squareRoot()
        let k = root.count
        return (u * root.reshaped([1, k]), vt * root.reshaped([k, 1]))
    }

    /// kohya's split: `up = u·diag(s)`, `down = vt` (what its clamp-quantile rule expects).
    static func kohyaFactors(u: Tensor, s: Tensor, vt: Tensor) -> (up: Tensor, down: Tensor) {
        let k = s.count
        return (u * s.to(.f32).reshaped([1, k]), vt.to(.f32))
    }

    /// ‖a − b‖_F (F32 inputs, accumulated in F64).
    static func frobeniusDistance(_ a: Tensor, _ b: Tensor) -> Double {
        (a.to(.f32) - b.to(.f32)).frobeniusNorm()
    }

    /// Factors `up [out, r]`, `down [r, in·kh·kw]` in the file shapes of a layer whose natural
    /// delta shape is `shape` (`[out, in]` or `[out, in, kh, kw]`): LoCon keeps the kernel on
    /// `down` and a 1×1 `up`.
    static func fileShaped(up: Tensor, down: Tensor, layerShape shape: [Int]) -> (up: Tensor, down: Tensor) {
        let r = down.shape[0]
        if shape.count == 4 {
            return (up.contiguous().reshaped([shape[0], r, 1, 1]), down.contiguous().reshaped([r, shape[1], shape[2], shape[3]]))
        }
        return (up.contiguous(), down.contiguous())
    }
}
