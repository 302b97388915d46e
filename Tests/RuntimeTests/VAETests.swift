import Foundation
import Host
import Testing
import Tensor
@testable import Runtime

@Suite("VAE")
struct VAETests {
    @Test("Decoder and encoder match diffusers' AutoencoderKL (diffusers folder and single file)",
          arguments: ["sd1", "sd1.safetensors"])
    func conformance(model name: String) throws {
        let vae = try AutoencoderKL(weights: NetworkFixtures.model(name), config: NetworkFixtures.tinyVAE)
        let f = try NetworkFixtures.tensors("vae/sd1.safetensors")
        let z = try #require(f["z"])
        let decoded = try vae.decodeUnscaled(z)
        let reference = try #require(f["decoded"])
        #expect(decoded.shape == [1, 3, 32, 32])
        #expect(NetworkFixtures.relativeError(decoded, reference) < 1e-4)
        // decode() takes diffusion-space latents: z · scaling factor.
        let viaScaled = try vae.decode(z.scaled(by: 0.18215))
        #expect(NetworkFixtures.relativeError(viaScaled, reference) < 1e-4)

        let distribution = try vae.encode(try #require(f["image"]))
        #expect(NetworkFixtures.relativeError(distribution.mean, try #require(f["mean"])) < 1e-4)
        #expect(NetworkFixtures.relativeError(distribution.logVariance, try #require(f["logvar"])) < 1e-4)
        let latents = distribution.latents(scalingFactor: 0.18215)
        #expect(NetworkFixtures.relativeError(latents, try #require(f["mean"]).scaled(by: 0.18215)) < 1e-4)
    }

    @Test("Scaling factors per family")
    func scalingFactors() {
        #expect(VAEConfig.standard(for: .sd1).scalingFactor == 0.18215)
        #expect(VAEConfig.standard(for: .sd2).scalingFactor == 0.18215)
        #expect(VAEConfig.standard(for: .sdxl).scalingFactor == 0.13025)
    }

    @Test("Bypass on the VAE (single file: attention q/k/v/out stored as 1×1 convs) equals merged")
    func bypass() throws {
        let model = NetworkFixtures.widened(try NetworkFixtures.model("sd1.safetensors"))
        let vae = try AutoencoderKL(weights: model, config: NetworkFixtures.tinyVAE)
        let f = try NetworkFixtures.tensors("vae/sd1.safetensors")
        let z = try #require(f["z"]), image = try #require(f["image"])
        let base = try vae.decodeUnscaled(z)
        let adapter = UNetTests.everyLayerAdapter(model, part: .vae)
        #expect(adapter.modules.contains { $0.name.hasSuffix("mid.attn_1.q") })
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 1.3)])
        #expect(plan.report.applied == adapter.modules.count)
        let hooks = GenerationHooks(bypass: BypassPatch(plan: plan))
        let bypassed = try vae.decodeUnscaled(z, hooks: hooks)
        let bypassedMean = try vae.encode(image, hooks: hooks).mean
        let engine = PatchEngine(model: model)
        try engine.apply(plan)
        let merged = try vae.decodeUnscaled(z)
        let mergedMean = try vae.encode(image).mean
        engine.restore()
        #expect(NetworkFixtures.relativeError(merged, base) > 1e-2)
        #expect(NetworkFixtures.relativeError(bypassed, merged) < 1e-5)
        // The encoder's downsamplers pad right/bottom before a stride-2 conv: bypass sees that input.
        #expect(NetworkFixtures.relativeError(bypassedMean, mergedMean) < 1e-5)
    }
}
