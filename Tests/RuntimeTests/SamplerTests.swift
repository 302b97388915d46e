import Foundation
import Testing
import Tensor
@testable import Runtime

/// `Fixtures/sampling/schedules_and_samplers.json`: F32 values as bit patterns.
private struct SamplingFixture: Decodable {
    struct Summary: Decodable { let count: Int; let fnv1a64: String }
    struct Probe: Decodable { let sigmas: [UInt32]; let t: [UInt32] }
    struct Diffusers: Decodable {
        let euler_linspace_20: [Double]
        let dpmpp_karras_20: [Double]
        let ddim_leading_20: [Int]
    }
    struct Loop: Decodable {
        let schedule: String
        let steps: Int
        let model: String
        let sampler: String
        let sigmas: [UInt32]
        let result: [UInt32]
    }
    struct DDIMLoop: Decodable { let steps: Int; let eta: Double; let result: [UInt32] }
    struct CFG: Decodable { let seed: UInt64; let weights: [Double]; let scale: Double; let result: [UInt32] }

    let latent_shape: [Int]
    let alphas_cumprod: [UInt32]
    let sqrt_alphas_cumprod: Summary
    let sqrt_one_minus_alphas_cumprod: Summary
    let sigmas: [UInt32]
    let log_sigmas: [UInt32]
    let uniform_sigmas: [String: [UInt32]]
    let karras_sigmas: [String: [UInt32]]
    let sigma_to_t: Probe
    let t_to_sigma: Probe
    let linspace: [String: [UInt32]]
    let ddim_timesteps: [String: [Int]]
    let diffusers: Diffusers
    let loops: [Loop]
    let ddim_loops: [DDIMLoop]
    let cfg: CFG

    static let shared: SamplingFixture = {
        let base = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
        let data = try! Data(contentsOf: base.appendingPathComponent("sampling/schedules_and_samplers.json"))
        return try! JSONDecoder().decode(SamplingFixture.self, from: data)
    }()
}

private func floats(_ bits: [UInt32]) -> [Float] { bits.map(Float.init(bitPattern:)) }

/// Distance in units in the last place between two finite floats of the same sign.
private func ulps(_ a: Float, _ b: Float) -> Int {
    if a == b { return 0 }
    guard a.sign == b.sign else { return Int.max }
    return abs(Int(a.bitPattern) - Int(b.bitPattern))
}

private func maxUlps(_ a: [Float], _ b: [Float]) -> Int {
    precondition(a.count == b.count, "maxUlps: \(a.count) vs \(b.count) values")
    return zip(a, b).map { ulps($0, $1) }.max() ?? 0
}

/// max |a − b| / max |b|: the error relative to the tensor's scale.
private func maxRelativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "maxRelativeError: \(a.count) vs \(b.count) values")
    let scale = b.map { abs(Double($0)) }.max() ?? 0
    return (zip(a, b).map { abs(Double($0) - Double($1)) }.max() ?? 0) / max(scale, .leastNormalMagnitude)
}

@Suite("Sampling schedules")
struct SamplerScheduleTests {
    fileprivate let fixture = SamplingFixture.shared
    let schedule = DiscreteSchedule.stableDiffusion

    @Test("ᾱ and LDM's square roots bit-exact; σ within 1 ulp and ln σ within 1e-6 of torch (MKL)")
    func discreteSchedule() {
        #expect(schedule.alphasCumprod.map(\.bitPattern) == fixture.alphas_cumprod)
        #expect(fnv1a64(schedule.sqrtAlphasCumprod) == fixture.sqrt_alphas_cumprod.fnv1a64)
        #expect(fnv1a64(schedule.sqrtOneMinusAlphasCumprod) == fixture.sqrt_one_minus_alphas_cumprod.fnv1a64)
        // Torch's CPU sqrt/log of F32 tensors go through MKL's vector math, which is not
        // correctly rounded; ours are (libm), as CUDA's sqrt is.
        let sigmaUlps = maxUlps(schedule.sigmas, floats(fixture.sigmas))
        #expect(sigmaUlps <= 1)
        #expect(schedule.sigmas.map(\.bitPattern) != fixture.sigmas)         // MKL's rounding really differs here
        let logError = zip(schedule.logSigmas, floats(fixture.log_sigmas)).map { abs($0 - $1) }.max() ?? 1
        #expect(logError <= 1e-6)
        #expect(abs(schedule.sigmaMin - 0.029167) < 1e-5 && abs(schedule.sigmaMax - 14.614642) < 1e-5)
    }

    @Test("torch.linspace is reproduced bit for bit")
    func linspace() throws {
        #expect(fixture.linspace.count == 5)
        for (key, bits) in fixture.linspace {
            let parts = key.split(separator: ",")
            let start = try #require(Float(String(parts[0]))), end = try #require(Float(String(parts[1])))
            let count = try #require(Int(String(parts[2])))
            #expect(TorchLinspace.floats(from: start, to: end, count: count).map(\.bitPattern) == bits, "\(key)")
        }
    }

    @Test("k-diffusion get_sigmas (A1111 Automatic) and Karras schedules within 4 ulp of torch")
    func sigmaSchedules() throws {
        #expect(fixture.uniform_sigmas.count == 6 && fixture.karras_sigmas.count == 4)
        for (key, bits) in fixture.uniform_sigmas {
            let steps = try #require(Int(key))
            let ours = schedule.uniformSigmas(steps: steps)
            #expect(ours.count == steps + 1 && ours.last == 0)
            #expect(maxUlps(ours, floats(bits)) <= 4, "uniform \(steps): \(maxUlps(ours, floats(bits))) ulp")
        }
        for (key, bits) in fixture.karras_sigmas {
            let steps = try #require(Int(key))
            let ours = schedule.karrasSigmas(steps: steps)
            #expect(maxUlps(ours, floats(bits)) <= 4, "karras \(steps): \(maxUlps(ours, floats(bits))) ulp")
        }
    }

    @Test("σ → t and t → σ agree with k-diffusion's DiscreteSchedule")
    func conversions() {
        let sigmas = floats(fixture.sigma_to_t.sigmas), expectedT = floats(fixture.sigma_to_t.t)
        let t = sigmas.map(schedule.timestep(forSigma:))
        #expect(zip(t, expectedT).allSatisfy { abs($0 - $1) <= 2e-4 }, "\(t) vs \(expectedT)")
        #expect(expectedT.first == 0 && expectedT.last == 999)       // clamped outside the range
        let times = floats(fixture.t_to_sigma.t), expectedSigma = floats(fixture.t_to_sigma.sigmas)
        #expect(maxUlps(times.map(schedule.sigma(forTimestep:)), expectedSigma) <= 2)
    }

    @Test("A1111 DDIM timesteps; diffusers' leading+1 spacing is the same list reversed")
    func ddimTimesteps() throws {
        #expect(fixture.ddim_timesteps.count == 7)
        for (key, expected) in fixture.ddim_timesteps {
            #expect(A1111DDIM.timesteps(steps: try #require(Int(key))) == expected, "\(key) steps")
        }
        #expect(A1111DDIM.timesteps(steps: 20).reversed() == fixture.diffusers.ddim_leading_20)
    }

    @Test("A1111 sampler names pick the schedule of 'Automatic'")
    func samplerNames() throws {
        #expect(A1111Sampler(a1111Name: "Euler a") == .eulerAncestral)
        #expect(A1111Sampler(a1111Name: "k_dpmpp_2m_ka") == .dpmpp2MKarras)
        #expect(A1111Sampler(a1111Name: "PLMS") == nil)
        let karras = try #require(A1111Sampler.dpmpp2MKarras.sigmas(steps: 20))
        #expect(maxUlps(karras, floats(try #require(fixture.karras_sigmas["20"]))) <= 4)
        let uniform = try #require(A1111Sampler.euler.sigmas(steps: 20))
        #expect(maxUlps(uniform, floats(try #require(fixture.uniform_sigmas["20"]))) <= 4)
        #expect(A1111Sampler.ddim.sigmas(steps: 20) == nil && !A1111Sampler.ddim.usesSigmas)
    }

    @Test("diffusers' Euler (linspace) and DPM++ Karras sigmas agree to 2e-5 (F32 betas there)")
    func diffusersCrossCheck() {
        let euler = schedule.uniformSigmas(steps: 20)
        #expect(maxRelativeError(euler, fixture.diffusers.euler_linspace_20.map(Float.init)) < 2e-5)
        let karras = schedule.karrasSigmas(steps: 20)
        #expect(maxRelativeError(karras, fixture.diffusers.dpmpp_karras_20.map(Float.init)) < 2e-5)
    }
}

@Suite("Samplers")
struct SamplerLoopTests {
    fileprivate let fixture = SamplingFixture.shared

    private var shape: [Int] { fixture.latent_shape }

    /// The generator script's mean image: randn(seed 7) · 0.5.
    private func meanImage() -> Tensor {
        var generator = TorchCPUGenerator(seed: 7)
        return generator.randn(shape).scaled(by: 0.5)
    }

    /// Denoiser used directly: x / (1 + σ²) + m.
    private func toyDenoiser(_ mean: Tensor) -> Denoiser {
        { x, sigma in x.scaled(by: Double(1 / (1 + sigma * sigma))) + mean }
    }

    /// UNet stand-in behind CompVisDenoiser: x_in · (t/1000) + m/4.
    private func toyUNet(_ mean: Tensor) -> CompVisDenoiser.Model {
        { x, t in x.scaled(by: Double(t / 1000)) + mean.scaled(by: 0.25) }
    }

    @Test("Euler, Euler a and DPM++ 2M against k-diffusion: direct toy denoiser, ε and v CompVis wrappers")
    func kDiffusionLoops() throws {
        let mean = meanImage()
        #expect(fixture.loops.count == 21)
        var exact = 0
        for loop in fixture.loops {
            let sigmas = floats(loop.sigmas)
            var generator = TorchCPUGenerator(seed: 1000)
            let start = generator.randn(shape).scaled(by: Double(sigmas[0]))
            let denoiser: Denoiser
            switch loop.model {
            case "toy": denoiser = toyDenoiser(mean)
            case "eps": denoiser = CompVisDenoiser(prediction: .epsilon).denoiser(toyUNet(mean))
            default: denoiser = CompVisDenoiser(prediction: .v).denoiser(toyUNet(mean))
            }
            let result: Tensor
            switch loop.sampler {
            case "euler":
                result = try KDiffusionSampler.euler(denoiser, x: start, sigmas: sigmas)
            case "euler_ancestral":
                result = try KDiffusionSampler.eulerAncestral(denoiser, x: start, sigmas: sigmas,
                                                              noise: { generator.randn(shape) })
            default:
                result = try KDiffusionSampler.dpmpp2M(denoiser, x: start, sigmas: sigmas)
            }
            let ours = result.floats, expected = floats(loop.result)
            let label = "\(loop.sampler) \(loop.model) \(loop.schedule) \(loop.steps)"
            if loop.model == "toy" && loop.sampler == "euler" {
                // + − × ÷ only: bit for bit.
                #expect(ours.map(\.bitPattern) == loop.result, "\(label)")
            } else {
                // √ (ancestral step, c_in), log/exp (DPM++, σ → t) are MKL's in torch: last bits differ.
                #expect(maxRelativeError(ours, expected) < 1e-5, "\(label): \(maxRelativeError(ours, expected))")
            }
            if ours.map(\.bitPattern) == loop.result { exact += 1 }
            #expect(ours.contains { abs($0) > 0.05 }, "\(label): degenerate result")
        }
        #expect(exact >= 3)
    }

    @Test("A1111 DDIM loop (η = 0 and η = 1 with generator noise) within 1e-5 of the peer")
    func ddimLoops() throws {
        let mean = meanImage()
        let unet = toyUNet(mean)
        #expect(fixture.ddim_loops.count == 3)
        for loop in fixture.ddim_loops {
            var generator = TorchCPUGenerator(seed: 1000)
            let start = generator.randn(shape)
            let result = try A1111DDIM.sample({ x, t in try unet(x, Float(t)) }, x: start,
                                              timesteps: A1111DDIM.timesteps(steps: loop.steps),
                                              eta: loop.eta, noise: { generator.randn(shape) })
            // √ goes through MKL in torch (1 ulp off correctly rounded), so not bit for bit.
            let error = maxRelativeError(result.floats, floats(loop.result))
            #expect(error < 1e-5, "DDIM \(loop.steps) steps, eta \(loop.eta): \(error)")
            #expect(result.floats.contains { abs($0) > 0.05 })
        }
    }

    @Test("classifier-free guidance with AND weights in A1111's order, bit for bit")
    func guidance() {
        var generator = TorchCPUGenerator(seed: fixture.cfg.seed)
        let uncond = generator.randn(shape), c1 = generator.randn(shape), c2 = generator.randn(shape)
        let result = classifierFreeGuidance(uncond: uncond, conds: [(c1, weight: fixture.cfg.weights[0]), (c2, weight: fixture.cfg.weights[1])],
                                            scale: fixture.cfg.scale)
        #expect(result.floats.map(\.bitPattern) == fixture.cfg.result)
        let single = classifierFreeGuidance(cond: c1, uncond: uncond, scale: 1)
        #expect(single.floats == c1.floats.enumerated().map { i, c in uncond.floats[i] + (c - uncond.floats[i]) })
    }

    @Test("ancestral step: σ_up² + σ_down² = σ_next², η = 0 gives a deterministic step")
    func ancestralStep() {
        let (down, up) = KDiffusionSampler.ancestralStep(from: 14.6, to: 7.3, eta: 1)
        #expect(abs(down * down + up * up - 7.3 * 7.3) < 1e-4)
        #expect(up > 0 && down < 7.3)
        #expect(KDiffusionSampler.ancestralStep(from: 14.6, to: 7.3, eta: 0) == (7.3, 0))
    }
}
