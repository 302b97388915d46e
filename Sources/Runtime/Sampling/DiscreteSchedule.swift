import Foundation
import Tensor

/// The discrete DDPM noise schedule of a Stable Diffusion checkpoint, and the conversions
/// k-diffusion's `DiscreteSchedule` makes between timesteps and noise levels σ.
///
/// σₜ = √((1 − ᾱₜ) / ᾱₜ), ascending with t. All arithmetic is F32 like the torch buffers, except
/// the construction of ᾱ, which LDM does in F64 (`make_beta_schedule`, `np.cumprod`) before
/// storing F32.
///
/// Exactness against torch on the CPU: ᾱ (and LDM's √ᾱ, √(1−ᾱ)) are bit-exact. `sqrt`, `log`
/// and `exp` are libm's here (`sqrt` correctly rounded), while torch's CPU build sends F32
/// tensors through MKL's vector math, which is not: σ differs by at most 1 ulp, ln σ by 1e-6,
/// and the schedules built from them by a few ulp (measured ≤ 4). A1111 computes all of these
/// on the GPU, whose results are not torch-CPU's either.
public struct DiscreteSchedule: Sendable {
    /// ᾱₜ for t = 0 ..< count, F32.
    public let alphasCumprod: [Float]
    /// √ᾱₜ and √(1 − ᾱₜ) as LDM stores them (computed in F64, stored F32); used for v → ε.
    public let sqrtAlphasCumprod: [Float]
    public let sqrtOneMinusAlphasCumprod: [Float]
    /// σₜ, ascending.
    public let sigmas: [Float]
    /// ln σₜ.
    public let logSigmas: [Float]

    /// A schedule from ᾱ in F64 (LDM's `register_schedule`).
    public init(alphasCumprod64: [Double]) {
        self.init(alphasCumprod: alphasCumprod64.map { Float($0) },
                  sqrtAlphasCumprod: alphasCumprod64.map { Float($0.squareRoot()) },
                  sqrtOneMinusAlphasCumprod: alphasCumprod64.map { Float((1 - $0).squareRoot()) })
    }

    /// A schedule from F32 ᾱ (e.g. A1111's "Downcast alphas_cumprod to fp16" values); the
    /// square roots are taken in F64 of the given values.
    public init(alphasCumprod: [Float]) {
        self.init(alphasCumprod: alphasCumprod,
                  sqrtAlphasCumprod: alphasCumprod.map { Float(Double($0).squareRoot()) },
                  sqrtOneMinusAlphasCumprod: alphasCumprod.map { Float((1 - Double($0)).squareRoot()) })
    }

    private init(alphasCumprod: [Float], sqrtAlphasCumprod: [Float], sqrtOneMinusAlphasCumprod: [Float]) {
        precondition(alphasCumprod.count >= 2, "DiscreteSchedule needs at least 2 timesteps")
        self.alphasCumprod = alphasCumprod
        self.sqrtAlphasCumprod = sqrtAlphasCumprod
        self.sqrtOneMinusAlphasCumprod = sqrtOneMinusAlphasCumprod
        // ((1 - ᾱ) / ᾱ) ** 0.5: torch's pow(x, 0.5) is a correctly rounded square root.
        self.sigmas = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        self.logSigmas = sigmas.map { Foundation.log($0) }
    }

    /// SD1/SD2's schedule: "scaled linear" betas, √β evenly spaced from √`linearStart` to
    /// √`linearEnd` over `timesteps` steps, computed as LDM does in F64.
    public static func scaledLinear(linearStart: Double = 0.00085, linearEnd: Double = 0.012,
                                    timesteps: Int = 1000) -> DiscreteSchedule {
        let roots = TorchLinspace.doubles(from: linearStart.squareRoot(), to: linearEnd.squareRoot(), count: timesteps)
        var product = 1.0
        let cumulative = roots.map { root -> Double in
            product *= 1 - root * root
            return product
        }
        return DiscreteSchedule(alphasCumprod64: cumulative)
    }

    /// The schedule of Stable Diffusion 1.x and 2.x.
    public static let stableDiffusion = DiscreteSchedule.scaledLinear()

    /// Number of training timesteps.
    public var count: Int { sigmas.count }
    /// σ at t = 0.
    public var sigmaMin: Float { sigmas[0] }
    /// σ at the last timestep.
    public var sigmaMax: Float { sigmas[count - 1] }

    /// The continuous timestep of a noise level (k-diffusion `sigma_to_t`, not quantized):
    /// linear interpolation in ln σ between the two timesteps around it, clamped to [0, count − 1].
    public func timestep(forSigma sigma: Float) -> Float {
        let logSigma = Foundation.log(sigma)
        // `dists.ge(0).cumsum(0).argmax(0)`: the last index with ln σᵢ <= ln σ (0 when none).
        var low = 0
        for i in 0..<count where logSigma - logSigmas[i] >= 0 { low = i }
        low = min(low, count - 2)
        let high = low + 1
        let lowLog = logSigmas[low], highLog = logSigmas[high]
        var w = (lowLog - logSigma) / (lowLog - highLog)
        w = min(max(w, 0), 1)
        return (1 - w) * Float(low) + w * Float(high)
    }

    /// The noise level of a continuous timestep (k-diffusion `t_to_sigma`).
    public func sigma(forTimestep t: Float) -> Float {
        let low = Int(t.rounded(.down)), high = Int(t.rounded(.up))
        let w = t - t.rounded(.towardZero)
        let logSigma = (1 - w) * logSigmas[low] + w * logSigmas[high]
        return Foundation.exp(logSigma)
    }

    /// k-diffusion's `get_sigmas(n)`: n noise levels at timesteps evenly spaced from the last to
    /// 0, then 0. A1111's schedule "Automatic" for Euler, Euler a, DPM++ 2M (non-Karras).
    public func uniformSigmas(steps: Int) -> [Float] {
        precondition(steps >= 1, "uniformSigmas: steps must be at least 1, got \(steps)")
        return TorchLinspace.floats(from: Float(count - 1), to: 0, count: steps).map(sigma(forTimestep:)) + [0]
    }

    /// Karras et al.'s schedule between this model's σ range (A1111's "Karras" schedule type and
    /// the "… Karras" samplers).
    public func karrasSigmas(steps: Int, rho: Double = 7) -> [Float] {
        KarrasSchedule.sigmas(steps: steps, sigmaMin: Double(sigmaMin), sigmaMax: Double(sigmaMax), rho: rho)
    }

    /// ε from a v-prediction at timestep t (LDM `predict_eps_from_z_and_v`, used by A1111's
    /// DDIM for v models): √ᾱₜ·v + √(1−ᾱₜ)·xₜ.
    public func epsilon(fromV v: Tensor, x: Tensor, timestep: Int) -> Tensor {
        v.scaled(by: Double(sqrtAlphasCumprod[timestep])) + x.scaled(by: Double(sqrtOneMinusAlphasCumprod[timestep]))
    }
}

/// Karras et al. (2022) noise levels (k-diffusion `get_sigmas_karras`): σ^(1/ρ) evenly spaced
/// from σ_max to σ_min, raised to ρ, then 0. The ends' roots are F64 (Python floats); the ramp
/// and the power are F32 as in torch.
public enum KarrasSchedule {
    public static func sigmas(steps: Int, sigmaMin: Double, sigmaMax: Double, rho: Double = 7) -> [Float] {
        precondition(steps >= 1, "karras sigmas: steps must be at least 1, got \(steps)")
        let minInvRho = Foundation.pow(sigmaMin, 1 / rho)
        let maxInvRho = Foundation.pow(sigmaMax, 1 / rho)
        let span = Float(minInvRho - maxInvRho), start = Float(maxInvRho), exponent = Float(rho)
        return TorchLinspace.floats(from: 0, to: 1, count: steps).map { ramp in
            Foundation.pow(start + ramp * span, exponent)
        } + [0]
    }
}
