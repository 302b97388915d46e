import Tensor

/// A1111's DDIM (`modules/sd_samplers_timesteps_impl.py`, `ddim`, since webui 1.6), which works
/// on integer timesteps and ε predictions rather than on σ.
///
/// Timesteps: `range(0, 1000, 1000 // steps) + 1`, clipped to [0, 999] (for 20 steps: 1, 51, …,
/// 951). The loop runs from the last timestep down to the second: `timesteps.count − 1` model
/// calls (19 for 20 steps), and the result is the estimate at the first timestep (t = 1), whose
/// ᾱ is the last step's "previous" one; this is A1111's behaviour, unlike diffusers' DDIM, which
/// also steps from t = 1 to ᾱ₀.
///
/// Per step, with a = ᾱₜ, a' = ᾱ of the previous timestep (ᾱ₀ for the first one):
/// x₀ = (x − √(1−a)·ε)/√a, x ← √a'·x₀ + √(1 − a' − σ²)·ε + σ·noise, where
/// σ = η·√((1−a')/(1−a)·(1 − a/a')) (0 for A1111's default η = 0). F32 except a' (F64 in
/// A1111, rounded to F32 per step) and σ (F64). Matches A1111's loop to ~1e-6 of the latent's
/// scale (torch's CPU √ is MKL's, not correctly rounded).
public enum A1111DDIM {
    /// A UNet's ε at integer timestep t (after classifier-free guidance; for v models convert
    /// with `DiscreteSchedule.epsilon(fromV:x:timestep:)`).
    public typealias EpsilonModel = (_ x: Tensor, _ timestep: Int) throws -> Tensor

    /// The default noise source: none (calling it is a programming error: η ≠ 0 needs noise).
    public static func noNoise() -> Tensor {
        preconditionFailure("A1111DDIM.sample: eta is not 0, so pass a noise source")
    }

    /// A1111's timestep list for `steps`.
    public static func timesteps(steps: Int, trainingSteps: Int = 1000) -> [Int] {
        precondition(steps >= 1, "DDIM: steps must be at least 1, got \(steps)")
        let stride = max(trainingSteps / steps, 1)
        return Swift.stride(from: 0, to: trainingSteps, by: stride).map { min(max($0 + 1, 0), trainingSteps - 1) }
    }

    /// Samples from `x` (the start noise, not scaled) over `timesteps`. `noise()` is called once
    /// per step only when `eta` is not 0.
    public static func sample(_ model: EpsilonModel, x start: Tensor, timesteps: [Int],
                              schedule: DiscreteSchedule = .stableDiffusion, eta: Double = 0,
                              noise: () throws -> Tensor = A1111DDIM.noNoise,
                              callback: SamplerCallback? = nil) rethrows -> Tensor {
        let ac = schedule.alphasCumprod
        let alphas = timesteps.map { ac[$0] }
        // alphas_prev: ᾱ at the previous timestep, ᾱ[0] before the first; F64 in A1111.
        let alphasPrev = timesteps.indices.map { Double($0 == 0 ? ac[0] : ac[timesteps[$0 - 1]]) }
        let sigmas: [Double] = timesteps.indices.map { index in
            let a = Double(alphas[index]), prev = alphasPrev[index]
            return eta * ((1 - prev) / (1 - a) * (1 - a / prev)).squareRoot()
        }
        var x = start
        for i in 0..<(timesteps.count - 1) {
            let index = timesteps.count - 1 - i
            let epsilon = try model(x, timesteps[index])
            let a = alphas[index]
            let aPrev = Float(alphasPrev[index])
            let sigma = Float(sigmas[index])
            let sqrtOneMinusA = (1 - a).squareRoot()
            let predicted = (x - epsilon.scaled(by: Double(sqrtOneMinusA))) / Double(a.squareRoot())
            let direction = epsilon.scaled(by: Double((1 - aPrev - sigma * sigma).squareRoot()))
            x = predicted.scaled(by: Double(aPrev.squareRoot())) + direction
            if eta != 0 {
                let fresh = try noise()
                x = x + fresh.scaled(by: Double(sigma))
            }
            callback?(i, x, predicted)
        }
        return x
    }
}
