import Foundation

/// Which of PyTorch's two CPU Box-Muller kernels `torch.randn` uses for contiguous F32 tensors
/// of 16 or more elements. Torch chooses by the CPU capability it dispatches to at run time, so
/// the same seed gives different last bits on different CPUs; pick the one of the machine whose
/// results you want to reproduce.
public enum TorchNormalKernel: String, Sendable, CaseIterable {
    /// `normal_fill_16_AVX2`: Cephes polynomial `log256_ps` / `sincos256_ps` from
    /// `avx_mathfun.h`, compiled by GCC with FMA contraction. Torch uses it when its CPU
    /// capability is AVX2 (x86-64 CPUs without AVX-512, e.g. most AMD Zen 1-3 and consumer Intel).
    case avx2
    /// `normal_fill_16`: libm `logf`/`cosf`/`sinf`. Torch uses it at every other capability
    /// (AVX-512 CPUs, `ATEN_CPU_CAPABILITY=default`, ARM). Exact only where this process's libm
    /// equals the one torch called (glibc on Linux).
    case scalar
}

/// Lane-by-lane emulation of the 8-wide kernels torch runs for Box-Muller.
///
/// Every step is the same IEEE F32 operation in the same order as the AVX2 source, and every
/// `a * b + c` that GCC contracts into one fused multiply-add (it does, with `-mfma` and its
/// default `-ffp-contract=fast`, because `_mm256_mul_ps`/`_mm256_add_ps` are plain vector
/// arithmetic in GCC's headers) is written as `addingProduct`, which rounds once. GCC's
/// contraction pass walks statements in order, so where two products feed one sum, the earlier
/// product is the fused one. Verified bit for bit against torch in the RuntimeTests fixtures.
enum CephesAVX2 {
    private static let sqrtHalf = Float(0.707106781186547524)
    private static let logP: [Float] = [
        7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
    ]
    private static let logQ1 = Float(-2.12194440e-4)
    private static let logQ2 = Float(0.693359375)

    /// `log256_ps` for one lane. Inputs here are in [2⁻²⁴, 1]; `x <= 0` gives NaN as in the source.
    static func log(_ input: Float) -> Float {
        let invalid = input <= 0
        // Cut off denormals (max with the smallest normal).
        var x = Swift.max(input, Float(bitPattern: 0x0080_0000))
        let exponentBits = Int32(bitPattern: x.bitPattern >> 23)
        // Keep the mantissa, force the exponent of 0.5: x in [0.5, 1).
        x = Float(bitPattern: (x.bitPattern & ~UInt32(0x7f80_0000)) | Float(0.5).bitPattern)
        var e = Float(exponentBits - 0x7f)
        e = e + 1
        let below = x < sqrtHalf
        let tmp: Float = below ? x : 0
        x = x - 1
        e = e - (below ? 1 : 0)
        x = x + tmp
        let z = x * x
        var y = logP[0]
        for k in 1..<logP.count { y = logP[k].addingProduct(y, x) }   // fused: y * x + p_k
        y = y * x
        // y * z + e * q1: the product y * z comes first in the source, so it is the fused one.
        y = (e * logQ1).addingProduct(y, z)
        // y - z * 0.5, fused (z is used elsewhere, so it stays a separate rounding).
        y = y.addingProduct(-z, 0.5)
        // (x + y) + e * q2, fused.
        x = (x + y).addingProduct(e, logQ2)
        return invalid ? .nan : x
    }

    private static let fourOverPi = Float(1.27323954473516)
    private static let minusDP1 = Float(-0.78515625)
    private static let minusDP2 = Float(-2.4187564849853515625e-4)
    private static let minusDP3 = Float(-3.77489497744594108e-8)
    private static let sinP: [Float] = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1]
    private static let cosP: [Float] = [2.443315711809948E-005, -1.388731625493765E-003, 4.166664568298827E-002]

    /// `sincos256_ps` for one lane: (sin, cos).
    static func sinCos(_ input: Float) -> (sin: Float, cos: Float) {
        var x = Float(bitPattern: input.bitPattern & 0x7fff_ffff)
        var signSin = input.bitPattern & 0x8000_0000
        // Scale by 4/π, truncate, round up to even: j = (j + 1) & ~1.
        var y = x * fourOverPi
        // _mm256_cvttps_epi32: truncation; out-of-range gives INT_MIN (0x80000000).
        var j: Int32 = (y.isFinite && y < 2_147_483_648) ? Int32(y) : Int32.min
        j = (j &+ 1) & ~1
        y = Float(j)
        let swapSignSin = UInt32(bitPattern: j & 4) << 29
        let usePolyForSin = (j & 2) == 0
        let signCos = UInt32(bitPattern: ~(j &- 2) & 4) << 29
        signSin ^= swapSignSin
        // Extended precision modular arithmetic, each step fused: x += y * (-DPk).
        x = x.addingProduct(y, minusDP1)
        x = x.addingProduct(y, minusDP2)
        x = x.addingProduct(y, minusDP3)

        let z = x * x
        var c = cosP[0]
        c = cosP[1].addingProduct(c, z)
        c = cosP[2].addingProduct(c, z)
        c = c * z
        c = (-(z * 0.5)).addingProduct(c, z)          // c * z - z * 0.5, the product c * z fused
        c = c + 1

        var s = sinP[0]
        s = sinP[1].addingProduct(s, z)
        s = sinP[2].addingProduct(s, z)
        s = s * z
        s = x.addingProduct(s, x)                     // s * x + x, fused

        // Select as the source does, with its adds of +0 (which turn -0 into +0).
        let sinPart2: Float = usePolyForSin ? s : 0
        let sinPart1: Float = usePolyForSin ? 0 : c
        let cosPart2 = s - sinPart2
        let cosPart1 = c - sinPart1
        let sine = sinPart1 + sinPart2
        let cosine = cosPart1 + cosPart2
        return (Float(bitPattern: sine.bitPattern ^ signSin), Float(bitPattern: cosine.bitPattern ^ signCos))
    }
}

extension TorchNormalKernel {
    /// Box-Muller over 16 uniforms in place, pairing element j with j + 8 (normal_fill_16).
    func fill16(_ data: UnsafeMutablePointer<Float>, mean: Float, std: Float) {
        switch self {
        case .avx2:
            // _mm256_set1_ps(2.0f * c10::pi<double>): the product is a double, then narrowed.
            let twoPi = Float(2.0 * Double.pi)
            for j in 0..<8 {
                let u1 = 1 - data[j]                  // [0, 1) -> (0, 1] for log
                let u2 = data[j + 8]
                let radius = (-2 * CephesAVX2.log(u1)).squareRoot()
                let (sine, cosine) = CephesAVX2.sinCos(twoPi * u2)
                let n1 = radius * cosine, n2 = radius * sine
                data[j] = mean.addingProduct(n1, std)         // _mm256_fmadd_ps
                data[j + 8] = mean.addingProduct(n2, std)
            }
        case .scalar:
            for j in 0..<8 {
                let u1 = 1 - data[j]
                let u2 = data[j + 8]
                let radius = (-2 * Foundation.log(u1)).squareRoot()
                // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
                let theta = Float(2.0 * Double.pi * Double(u2))
                // `radius * cos(theta) * std + mean`; GCC contracts the last multiply-add.
                data[j] = mean.addingProduct(radius * Foundation.cos(theta), std)
                data[j + 8] = mean.addingProduct(radius * Foundation.sin(theta), std)
            }
        }
    }
}
