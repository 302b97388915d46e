import Foundation
import Tensor

/// Called after each step with the step index, the latent before the step and the denoised
/// estimate at that step (k-diffusion's callback dictionary, reduced).
public typealias SamplerCallback = (_ step: Int, _ x: Tensor, _ denoised: Tensor) -> Void

/// k-diffusion's samplers (`k_diffusion/sampling.py`) as A1111 calls them for txt2img, over a
/// descending list of σ ending in 0. Start from `noise · sigmas[0]`.
///
/// Arithmetic is F32 in torch's order. Euler uses + − × ÷ only and matches k-diffusion bit for
/// bit given the same σ list, denoiser and noise. Euler a (√ in the ancestral step) and DPM++ 2M
/// (log, exp, expm1 of σ) use libm where torch's CPU build uses MKL, so their results differ in
/// the last bits (measured: ≤ 3e-6 of the latent's scale over 20 steps).
public enum KDiffusionSampler {
    /// `sample_euler` with A1111's defaults (no churn: s_churn = 0, so σ̂ = σ).
    public static func euler(_ denoiser: Denoiser, x start: Tensor, sigmas: [Float],
                             callback: SamplerCallback? = nil) rethrows -> Tensor {
        var x = start
        for i in 0..<(sigmas.count - 1) {
            let sigma = sigmas[i]
            let denoised = try denoiser(x, sigma)
            callback?(i, x, denoised)
            let d = (x - denoised) / Double(sigma)               // to_d
            let dt = sigmas[i + 1] - sigma
            x = x + d.scaled(by: Double(dt))
        }
        return x
    }

    /// σ_down and σ_up of an ancestral step (`get_ancestral_step`), F32.
    public static func ancestralStep(from sigmaFrom: Float, to sigmaTo: Float, eta: Float) -> (down: Float, up: Float) {
        if eta == 0 { return (sigmaTo, 0) }
        let fromSquared = sigmaFrom * sigmaFrom, toSquared = sigmaTo * sigmaTo
        let candidate = eta * ((toSquared * (fromSquared - toSquared)) / fromSquared).squareRoot()
        let up = candidate < sigmaTo ? candidate : sigmaTo            // Python's min(sigma_to, …)
        let down = (toSquared - up * up).squareRoot()
        return (down, up)
    }

    /// `sample_euler_ancestral`: an Euler step to σ_down, then fresh noise scaled by σ_up
    /// (skipped on the last step, where σ = 0). `noise()` is called once per such step; with
    /// A1111's CPU noise source it is the next `A1111ImageNoise.next()`.
    public static func eulerAncestral(_ denoiser: Denoiser, x start: Tensor, sigmas: [Float],
                                      eta: Float = 1, noiseScale: Float = 1,
                                      noise: () throws -> Tensor,
                                      callback: SamplerCallback? = nil) rethrows -> Tensor {
        var x = start
        for i in 0..<(sigmas.count - 1) {
            let sigma = sigmas[i]
            let denoised = try denoiser(x, sigma)
            let (down, up) = ancestralStep(from: sigma, to: sigmas[i + 1], eta: eta)
            callback?(i, x, denoised)
            let d = (x - denoised) / Double(sigma)
            x = x + d.scaled(by: Double(down - sigma))
            if sigmas[i + 1] > 0 {
                let fresh = try noise()
                x = x + fresh.scaled(by: Double(noiseScale)).scaled(by: Double(up))
            }
        }
        return x
    }

    /// `sample_dpmpp_2m` (DPM-Solver++(2M)): with t = −ln σ and h = t_next − t, each step is
    /// `(σ_next/σ)·x − expm1(−h)·D`, where D is the denoised estimate, corrected on every step
    /// but the first and the last by the previous one: `D = (1 + 1/(2r))·d − (1/(2r))·d_old`,
    /// r = h_last/h.
    public static func dpmpp2M(_ denoiser: Denoiser, x start: Tensor, sigmas: [Float],
                               callback: SamplerCallback? = nil) rethrows -> Tensor {
        func t(_ sigma: Float) -> Float { -Foundation.log(sigma) }
        func sigmaOf(_ t: Float) -> Float { Foundation.exp(-t) }
        var x = start
        var oldDenoised: Tensor?
        for i in 0..<(sigmas.count - 1) {
            let denoised = try denoiser(x, sigmas[i])
            callback?(i, x, denoised)
            let tNow = t(sigmas[i]), tNext = t(sigmas[i + 1])
            let h = tNext - tNow
            let ratio = sigmaOf(tNext) / sigmaOf(tNow)
            let decay = Foundation.expm1(-h)
            if let old = oldDenoised, sigmas[i + 1] != 0 {
                let hLast = tNow - t(sigmas[i - 1])
                let r = hLast / h
                let inverse = 1 / (2 * r)
                let corrected = denoised.scaled(by: Double(1 + inverse)) - old.scaled(by: Double(inverse))
                x = x.scaled(by: Double(ratio)) - corrected.scaled(by: Double(decay))
            } else {
                x = x.scaled(by: Double(ratio)) - denoised.scaled(by: Double(decay))
            }
            oldDenoised = denoised
        }
        return x
    }
}
