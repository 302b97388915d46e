import Tensor

/// The difference of one tensor pair, chosen so that the host's merge at weight 1 gives the
/// tuned tensor back bit for bit wherever F32 arithmetic allows.
///
/// The host merges as `PatchPlan` does: W' = round_dtype(W₃₂ + w·Δ₃₂) (F32 sum, one rounding
/// to the checkpoint dtype). With Δ = B₃₂ − A₃₂ in F32:
///
/// - F16: A and B are multiples of 2⁻²⁴ below 2¹⁶, so B − A is exact in F32 (and A + Δ = B)
///   unless the difference is ≥ 0.5 and B is thousands of times smaller than A (a weight of
///   ~2 shrinking to ~1e-4). B = −0 needs a neighbouring Δ (A + Δ is +0): the search below
///   tries F32 neighbours ±1…8 ulps and keeps the first that rounds back to B.
/// - BF16: the same, unless a value shrinks by more than ~2¹⁶ (B's bits then lie below the
///   F32 grid of A + Δ).
/// - F32: exact whenever B is within a factor 2 of A (Sterbenz), which is most of a fine-tune;
///   elements that cross zero or shrink a lot may have bits below the grid of A + Δ, and no F32
///   Δ reproduces them. They come back within one ulp of Δ; they are counted, never hidden.
///
/// Δ is stored in the checkpoint's dtype when that dtype is narrower than F32 and holds every
/// element of Δ exactly (small fine-tune steps usually are), else in F32.
struct TensorDifference {
    /// How the stored dtype is chosen.
    enum Storage: Sendable {
        /// The checkpoint's dtype when exact there (F16/BF16/F8), else F32.
        case auto
        /// Always F32.
        case f32
    }

    /// Δ in F32 (F64 when only F64 reproduces B), contiguous, the tensors' shape.
    let delta: Tensor
    /// The dtype Δ is written in (converting `delta` to it is exact).
    let storageDType: DType
    /// Elements whose plain difference was replaced by a neighbour that reproduces B.
    let corrected: Int
    /// Elements no candidate reproduces.
    let unreproducible: Int
    /// max |merge at weight 1 − B| over those elements (0 when there are none).
    let maxError: Double

    /// How far (in F32 ulps, each way) the search for a reproducing Δ goes.
    static let searchSteps = 8

    /// Δ for `base` → `tuned` (same dtype and shape, floating point).
    init(base a: Tensor, tuned b: Tensor, storage: Storage) {
        precondition(a.dtype == b.dtype && a.shape == b.shape, "difference of mismatched tensors")
        let dtype = a.dtype
        let a32 = a.to(.f32).contiguous(), b32 = b.to(.f32).contiguous()
        // A new tensor (the subtraction allocates it): safe to correct in place below.
        let d = (b32 - a32).contiguous()
        let merged = (a32 + d).to(dtype).contiguous()
        let tunedBytes = b.contiguous()
        let mismatches = Self.mismatchedElements(merged, tunedBytes)

        var corrected = 0, unreproducible = 0
        var maxError = 0.0
        if !mismatches.isEmpty {
            let aValues = a32.floats, bValues = b32.floats
            d.withMutableFloats { dp in
                for i in mismatches {
                    if let fixed = Self.search(a: aValues[i], delta: dp[i], target: tunedBytes, index: i, dtype: dtype) {
                        dp[i] = fixed
                        corrected += 1
                    } else {
                        unreproducible += 1
                        let got = Double(Self.roundTrip(aValues[i] + dp[i], dtype))
                        maxError = max(maxError, abs(got - Double(bValues[i])))
                    }
                }
            }
        }
        var storageDType = DType.f32
        var delta = d
        if unreproducible > 0 {
            // No F32 Δ reproduces some elements: store B − A in F64, where it is exact (two F32
            // values differ by at most 2^(e_max−e_min) units, well inside 53 bits for weights),
            // and the host adds F64 deltas in F64, rounding once: A + Δ = B exactly.
            let d64 = (b.to(.f64) - a.to(.f64)).contiguous()
            let merged64 = Self.mergeInF64(a32, d64).to(dtype).contiguous()
            let still = Self.mismatchedElements(merged64, tunedBytes).count
            corrected += unreproducible - still
            unreproducible = still
            if still == 0 { maxError = 0 }
            delta = d64
            storageDType = .f64
        } else if storage == .auto, dtype.byteSize < DType.f32.byteSize, Self.isExact(d, in: dtype) {
            storageDType = dtype
        }
        self.delta = delta
        self.storageDType = storageDType
        self.corrected = corrected
        self.unreproducible = unreproducible
        self.maxError = maxError
    }

    /// Indices where `x` and `y` (same dtype, contiguous) differ bit for bit.
    static func mismatchedElements(_ x: Tensor, _ y: Tensor) -> [Int] {
        let size = x.dtype.byteSize
        var out: [Int] = []
        x.withUnsafeBytes { xp in
            y.withUnsafeBytes { yp in
                // Compare whole tensors first: equal is the common case.
                if memcmp(xp.baseAddress!, yp.baseAddress!, xp.count) == 0 { return }
                for i in 0..<(xp.count / size) where memcmp(xp.baseAddress! + i * size, yp.baseAddress! + i * size, size) != 0 {
                    out.append(i)
                }
            }
        }
        return out
    }

    /// The first Δ' among Δ ± 1…`searchSteps` ulps (+k before −k) with round(a + Δ') == target[index].
    static func search(a: Float, delta: Float, target: Tensor, index: Int, dtype: DType) -> Float? {
        let size = dtype.byteSize
        return target.withUnsafeBytes { tp -> Float? in
            let want = UnsafeRawBufferPointer(rebasing: tp[(index * size)..<((index + 1) * size)])
            var up = delta, down = delta
            for _ in 0..<searchSteps {
                up = up.nextUp
                down = down.nextDown
                for candidate in [up, down] where candidate.isFinite {
                    let got = roundTripBytes(a + candidate, dtype)
                    if got.elementsEqual(want) { return candidate }
                }
            }
            return nil
        }
    }

    /// `value` rounded to `dtype` by the tensor core's conversion (the host's), as raw bytes.
    static func roundTripBytes(_ value: Float, _ dtype: DType) -> [UInt8] {
        Tensor(shape: [1], values: [value]).to(dtype).withUnsafeBytes { Array($0) }
    }

    /// `value` rounded to `dtype` and widened back to F32.
    static func roundTrip(_ value: Float, _ dtype: DType) -> Float {
        Tensor(shape: [1], values: [value]).to(dtype).to(.f32).floats[0]
    }

    /// A (F32) + Δ (F64) summed in F64 and rounded once to F32, as the host's merge does.
    static func mergeInF64(_ a: Tensor, _ d: Tensor) -> Tensor {
        let out = Tensor(uninitialized: a.shape, dtype: .f32)
        a.withFloats { ap in
            d.withDoubles { dp in
                out.withMutableFloats { op in
                    for i in 0..<ap.count { op[i] = Float(Double(ap[i]) + dp[i]) }
                }
            }
        }
        return out
    }

    /// True when every element of `d` (F32) survives the trip to `dtype` and back bit for bit.
    static func isExact(_ d: Tensor, in dtype: DType) -> Bool {
        let back = d.to(dtype).to(.f32).contiguous()
        return back.withUnsafeBytes { bp in d.withUnsafeBytes { dp in memcmp(bp.baseAddress!, dp.baseAddress!, dp.count) == 0 } }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
