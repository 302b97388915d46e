/// A branch-free F32 `exp` that the compiler can vectorize (libm's `expf` is a call per
/// element, which keeps loops scalar). Cephes' `expf` scheme: `n = round(x·log2 e)` by the
/// 1.5·2²³ magic-constant trick (SSE2 has no vector round), `r = x − n·ln 2` in two
/// Cody–Waite parts, a degree-7 polynomial for `e^r` on |r| ≤ ln2/2, and the scale 2ⁿ applied
/// as two power-of-two factors so results down to the subnormal range stay accurate.
/// Error: < 1 ulp of the exact value over the whole range (OpsTests sweeps it: worst 0.92 ulp,
/// like torch's Sleef `expf` u10); it is not always the correctly rounded result. Overflow
/// gives +inf (x > 88.7228...), underflow 0 (x < −103.97...), NaN stays NaN.
@inline(__always)
func vectorizableExp(_ x: Float) -> Float {
    let upper: Float = 88.72283935546875     // first float above ln(FLT_MAX): e^x overflows
    let lower: Float = -103.97207641601562   // ≈ -150·ln 2: below, e^x rounds to 0
    let magic: Float = 12582912              // 1.5 · 2^23: adding it rounds to an integer
    // Clamp (comparisons are false for NaN, which passes through and is restored at the end).
    let xc = x > upper ? upper : (x < lower ? lower : x)
    let t = xc * 1.44269504088896341 + magic
    let n = t - magic
    // r = x - n·ln2: ln2 split so n·ln2Hi is exact for |n| < 2^9.
    var r = xc - n * 0.693359375
    r = r - n * -2.12194440e-4
    // e^r ≈ 1 + r + r²·P(r), Cephes coefficients (relative error ~1e-7 on |r| ≤ 0.35).
    var p: Float = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let er = p * (r * r) + r + 1
    // n as an integer from t's bits (t = magic + n exactly), then 2^n = 2^n1 · 2^n2 with both
    // halves in the normal range (n ∈ [-150, 128]); wrapping ops keep the loop trap-free.
    let ni = Int32(bitPattern: t.bitPattern) &- Int32(bitPattern: magic.bitPattern)
    let n1 = ni >> 1, n2 = ni &- n1
    let s1 = Float(bitPattern: UInt32(bitPattern: (n1 &+ 127) &<< 23))
    let s2 = Float(bitPattern: UInt32(bitPattern: (n2 &+ 127) &<< 23))
    var result = er * s1 * s2
    result = x > upper ? .infinity : result
    result = x < lower ? 0 : result
    return x != x ? x : result
}
