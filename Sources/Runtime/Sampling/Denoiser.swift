import Tensor

/// A model that maps a noisy latent `x` at noise level `sigma` (x = x₀ + σ·ε) to its estimate
/// of the clean latent x₀. k-diffusion samplers call it once per step (more for higher-order
/// ones); classifier-free guidance and conditioning live inside it.
public typealias Denoiser = (_ x: Tensor, _ sigma: Float) throws -> Tensor

/// What a Stable Diffusion UNet predicts.
public enum ModelPrediction: String, Sendable {
    /// The noise ε (SD1, SD2-base, SDXL).
    case epsilon
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x₀ (SD2 768-v models).
    case v
}

/// k-diffusion's `CompVisDenoiser` / `CompVisVDenoiser`: wraps a UNet that takes a scaled input
/// and a continuous timestep into a `Denoiser` over σ.
///
/// With σ_data = 1: c_in = 1/√(σ²+1) scales the input, t = `timestep(forSigma: σ)` is passed as
/// the timestep, and the output o gives x₀ = x + c_out·o with c_out = −σ (ε), or
/// x₀ = c_skip·x + c_out·o with c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1) (v).
public struct CompVisDenoiser: Sendable {
    /// A UNet evaluation: (input already multiplied by c_in, continuous timestep) → ε or v.
    public typealias Model = (_ scaledInput: Tensor, _ timestep: Float) throws -> Tensor

    public let schedule: DiscreteSchedule
    public let prediction: ModelPrediction

    public init(schedule: DiscreteSchedule = .stableDiffusion, prediction: ModelPrediction = .epsilon) {
        self.schedule = schedule
        self.prediction = prediction
    }

    /// (c_skip, c_out, c_in) at σ, F32 as torch computes them (c_skip is 1 for ε models).
    public func scalings(sigma: Float) -> (skip: Float, out: Float, input: Float) {
        let denominator = sigma * sigma + 1
        let root = denominator.squareRoot()
        let cIn = 1 / root
        switch prediction {
        case .epsilon:
            return (1, -sigma, cIn)
        case .v:
            return (1 / denominator, -sigma / root, cIn)
        }
    }

    /// The denoiser over σ for `model`.
    public func denoiser(_ model: @escaping Model) -> Denoiser {
        let schedule = self.schedule, prediction = self.prediction
        return { x, sigma in
            let (skip, out, input) = self.scalings(sigma: sigma)
            let output = try model(x.scaled(by: Double(input)), schedule.timestep(forSigma: sigma))
            switch prediction {
            case .epsilon:
                return x + output.scaled(by: Double(out))                       // input + eps * c_out
            case .v:
                return output.scaled(by: Double(out)) + x.scaled(by: Double(skip))  // v * c_out + input * c_skip
            }
        }
    }
}

/// Classifier-free guidance as A1111 combines it (`combine_denoised`):
/// `uncond + Σ (condᵢ − uncond)·(weightᵢ·scale)`, terms added in order (several conditions are
/// prompts joined with AND). The products weight·scale are F64, then rounded to F32 as torch does.
public func classifierFreeGuidance(uncond: Tensor, conds: [(Tensor, weight: Double)], scale: Double) -> Tensor {
    var result = uncond
    for (cond, weight) in conds {
        result = result + (cond - uncond).scaled(by: weight * scale)
    }
    return result
}

/// Classifier-free guidance with one condition: `uncond + (cond − uncond)·scale`.
public func classifierFreeGuidance(cond: Tensor, uncond: Tensor, scale: Double) -> Tensor {
    classifierFreeGuidance(uncond: uncond, conds: [(cond, weight: 1)], scale: scale)
}
