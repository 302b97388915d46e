import Foundation
import Host
import LoRA
import SafeTensors
import Testing
import Tensor
@testable import Runtime

/// `Fixtures/generation/manifest.json` (tools/gen_generation_fixtures.py).
struct GenerationManifest: Decodable {
    struct Case: Decodable {
        let model: String
        let prompt: String
        let negative: String
        let sampler: String
        let steps: Int
        let cfg: Double
        let seed: UInt64
        /// "file": start from the fixture's noise; "seed": from the seed's A1111 noise.
        let noise: String
        let prediction: String?
        let tokens: [String: [Int32]]
        let strength: Double?
        let a1111_v_probe_mean: Double?
        let sigmas: [Double]?
        let timesteps: [Int]?
    }
    let cases: [String: Case]

    static func load() throws -> GenerationManifest {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let data = try Data(contentsOf: base.appendingPathComponent("generation/manifest.json"))
        return try JSONDecoder().decode(GenerationManifest.self, from: data)
    }
}

/// Full generations on the tiny models against the peers: diffusers pipelines (Euler with
/// A1111's σ, DDIM truncated as A1111 stops, SD2 v, SDXL, a kohya LoRA) and k-diffusion driven
/// the way A1111 drives it (Euler a and DPM++ 2M Karras from the seed's CPU noise).
@Suite("Generate conformance")
struct GenerateConformanceTests {
    static let models = NetworkFixtures.models
    static let loraFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("LoRATests/Fixtures")

    /// The pipeline of a tiny model: a diffusers folder ("sd1"), or a single file with the
    /// folder as its config ("sd1.safetensors").
    static func pipeline(_ name: String, prediction: ModelPrediction? = nil) throws -> StableDiffusionPipeline {
        let folder = name.replacingOccurrences(of: ".safetensors", with: "")
        let config = name.hasSuffix(".safetensors") ? models.appendingPathComponent(folder).path : nil
        return try StableDiffusionPipeline.load(path: models.appendingPathComponent(name).path,
                                                configDirectory: config, prediction: prediction)
    }

    static func parameters(_ c: GenerationManifest.Case) throws -> GenerationParameters {
        GenerationParameters(prompt: c.prompt, negativePrompt: c.negative, seed: c.seed, steps: c.steps, cfgScale: c.cfg,
                             sampler: try #require(A1111Sampler(a1111Name: c.sampler)), width: 64, height: 64)
    }

    /// Generates `name` on `model` and compares with the fixture.
    func check(_ name: String, model: String, prediction: ModelPrediction? = nil, adapters: AdapterContext? = nil,
               latentsKey: String = "latents", tolerance: Double = 1e-4) throws -> GenerationResult {
        let manifest = try GenerationManifest.load()
        let c = try #require(manifest.cases[name])
        let f = try NetworkFixtures.tensors("generation/\(name).safetensors")
        let pipeline = try Self.pipeline(model, prediction: prediction)
        let result = try pipeline.generate(try Self.parameters(c), adapters: adapters,
                                           startNoise: c.noise == "file" ? try #require(f["noise"]) : nil)
        let reference = try #require(f[latentsKey])
        #expect(result.latents.shape == reference.shape)
        let error = NetworkFixtures.relativeError(result.latents, reference)
        #expect(error < tolerance, "\(name) on \(model): latents differ by \(error) (relative)")
        if let decoded = f["decoded"] {
            let ours = try #require(result.decoded)
            #expect(NetworkFixtures.relativeError(ours, decoded) < tolerance)
            try checkImage(ours: try #require(result.image), peerDecoded: decoded, peerBytes: try #require(f["image_u8"]))
        }
        return result
    }

    /// A1111's uint8 conversion: exact on the peer's floats; ours differs only where float
    /// noise moves a value across an integer (by 1).
    func checkImage(ours: RGBImage, peerDecoded: Tensor, peerBytes: Tensor) throws {
        let expected = peerBytes.to(.f32).floats.map { UInt8($0) }
        #expect(RGBImage(decoded: peerDecoded).pixels == expected)
        let differing = zip(ours.pixels, expected).filter { $0 != $1 }
        #expect(differing.allSatisfy { abs(Int($0) - Int($1)) <= 1 })
        #expect(differing.count <= expected.count / 100, "\(differing.count) of \(expected.count) bytes differ")
    }

    @Test("The prompts tokenize to the ids the peers were fed (A1111 chunks, SD2/bigG zero padding)")
    func tokens() throws {
        let manifest = try GenerationManifest.load()
        let chunker = PromptChunker(tokenizer: try CLIPTokenizer.bundled())
        for (name, c) in manifest.cases {
            let prompt = A1111Prompt.removeTags(from: c.prompt).text
            let zeroPadded = c.model == "sd2"
            if let ids = c.tokens["prompt"] {
                let chunk = try chunker.chunks(for: prompt).chunks[0]
                #expect(chunk.encoderTokens(padding: zeroPadded ? .zero : .endOfText) == ids, "\(name) prompt")
            }
            if let ids = c.tokens["negative"] {
                let chunk = try chunker.chunks(for: c.negative).chunks[0]
                #expect(chunk.encoderTokens(padding: zeroPadded ? .zero : .endOfText) == ids, "\(name) negative")
            }
            if let te1 = c.tokens["prompt_te1"], let te2 = c.tokens["prompt_te2"] {
                let chunk = try chunker.chunks(for: prompt).chunks[0]
                #expect(chunk.encoderTokens(padding: .endOfText) == te1)
                #expect(chunk.encoderTokens(padding: .zero) == te2)
            }
        }
    }

    @Test("SD1 Euler (A1111 σ) matches diffusers' StableDiffusionPipeline: folder and single file",
          arguments: ["sd1", "sd1.safetensors"])
    func sd1Euler(model: String) throws {
        let result = try check("sd1_euler", model: model)
        #expect(result.warnings.contains { $0.contains("toy vocabulary of 64") })
    }

    @Test("SD1 DDIM matches diffusers' DDIM stopped at t = 1 as A1111 does (steps − 1 UNet calls)")
    func sd1DDIM() throws {
        let manifest = try GenerationManifest.load()
        let c = try #require(manifest.cases["sd1_ddim"])
        #expect(A1111DDIM.timesteps(steps: c.steps) == c.timesteps)
        var calls = 0
        let pipeline = try Self.pipeline("sd1")
        let f = try NetworkFixtures.tensors("generation/sd1_ddim.safetensors")
        let latents = try pipeline.sampleLatents(prompt: c.prompt, negativePrompt: c.negative,
                                                 parameters: try Self.parameters(c),
                                                 startNoise: try #require(f["noise"])) { done, total in
            calls += 1
            #expect(done == calls && total == c.steps - 1)
        }
        #expect(calls == c.steps - 1)
        #expect(NetworkFixtures.relativeError(latents, try #require(f["latents"])) < 1e-4)
        _ = try check("sd1_ddim", model: "sd1")
    }

    @Test("Euler a from the seed (A1111 CPU RNG: start and ancestral noise) matches k-diffusion as A1111 runs it")
    func sd1EulerAncestralSeeded() throws {
        let result = try check("sd1_euler_a_seed", model: "sd1.safetensors")
        #expect(result.infotext.text.contains("Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 31337"))
    }

    @Test("DPM++ 2M Karras from the seed matches k-diffusion (webui 1.9+: DPM++ 2M + Karras)")
    func sd1DPMPP2MKarras() throws {
        let result = try check("sd1_dpmpp_2m_karras", model: "sd1")
        #expect(result.infotext.text.contains("Sampler: DPM++ 2M, Schedule type: Karras"))
    }

    @Test("A kohya LoRA at 0.8 from the prompt: bypass matches the exact merge, merged mode the F16-stored merge",
          arguments: AdapterMode.allCases)
    func lora(mode: AdapterMode) throws {
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        let adapters = AdapterContext(registry: registry, models: try ModelsDirectory(root: nil, loraDirectory: Self.loraFixtures.path),
                                      mode: mode)
        // Merged mode stores each patched weight in the file's F16, as A1111 does.
        let key = mode == .merged ? "latents_merged_f16" : "latents"
        let result = try check("sd1_lora_euler", model: "sd1.safetensors", adapters: adapters, latentsKey: key)
        #expect(result.loras.map(\.name) == ["kohya_sd1_noalpha"])
        #expect(result.loras.first?.textEncoderWeight == 0.8 && result.loras.first?.unetWeight == 0.8)
        let report = try #require(result.patchReport)
        #expect(report.applied == 19 && report.skipped.isEmpty)
        #expect(result.infotext.text.contains("Lora hashes: \"kohya_sd1_noalpha: \(result.loras[0].shortHash)\""))
        #expect(result.infotext.prompt.hasSuffix("<lora:kohya_sd1_noalpha:0.8>"))
    }

    @Test("Several LoRAs at once, one of them a pickled .pt: two halves of the fixture's LoRA give its image")
    func severalLoRAs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("loras-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("pickles"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("kohya_sd1_noalpha.safetensors"),
                                                   withDestinationURL: Self.loraFixtures.appendingPathComponent("kohya_sd1_noalpha.safetensors"))
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("pickles/kohya_sd1_noalpha_pt.pt"),
                                                   withDestinationURL: base.appendingPathComponent("generation/lora/kohya_sd1_noalpha_pt.pt"))
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        let adapters = AdapterContext(registry: registry, models: try ModelsDirectory(root: nil, loraDirectory: dir.path), mode: .bypass)
        let manifest = try GenerationManifest.load()
        let c = try #require(manifest.cases["sd1_lora_euler"])
        var parameters = try Self.parameters(c)
        parameters.prompt = "a red cat, sitting on a mat <lora:kohya_sd1_noalpha:0.4> <lora:kohya_sd1_noalpha_pt:0.4>"
        let f = try NetworkFixtures.tensors("generation/sd1_lora_euler.safetensors")
        let result = try Self.pipeline("sd1.safetensors").generate(parameters, adapters: adapters,
                                                                   startNoise: try #require(f["noise"]))
        #expect(NetworkFixtures.relativeError(result.latents, try #require(f["latents"])) < 1e-4)
        #expect(result.loras.map(\.adapter.format) == result.loras.map { _ in "kohya" })
        let pickled = try #require(result.loras.last)
        #expect(pickled.path.hasSuffix(".pt"))
        #expect(pickled.shortHash == String(try SHA256.hash(fileAt: pickled.path).hex.prefix(12)))
        #expect(result.infotext.text.contains("Lora hashes: \"kohya_sd1_noalpha: \(result.loras[0].shortHash), kohya_sd1_noalpha_pt: \(pickled.shortHash)\""))
        // A LoRA named twice is listed once (A1111 keys the hashes by name).
        #expect(StableDiffusionPipeline.infotextLoraHashes(result.loras + result.loras).count == 2)
    }

    @Test("After a merged-mode generation every weight is the original again")
    func mergedRestores() throws {
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        let adapters = AdapterContext(registry: registry, models: try ModelsDirectory(root: nil, loraDirectory: Self.loraFixtures.path))
        let pipeline = try Self.pipeline("sd1.safetensors")
        let before = Dictionary(uniqueKeysWithValues: pipeline.model.keys.map { ($0, pipeline.model.tensor($0)!.floats) })
        var parameters = GenerationParameters(prompt: "cat <lora:kohya_sd1_noalpha:1>", seed: 1, steps: 1, sampler: .euler,
                                              width: 64, height: 64)
        _ = try pipeline.generate(parameters, adapters: adapters)
        for key in pipeline.model.keys { #expect(pipeline.model.tensor(key)!.floats == before[key], "\(key) not restored") }
        // Also when the generation fails after patching (an invalid size is found while sampling).
        parameters.width = 65
        #expect(throws: PipelineError.self) { try pipeline.generate(parameters, adapters: adapters) }
        for key in pipeline.model.keys { #expect(pipeline.model.tensor(key)!.floats == before[key], "\(key) not restored") }
    }

    @Test("SD2 v-prediction (Euler) matches diffusers; A1111's SD2 v-probe value matches")
    func sd2V() throws {
        _ = try check("sd2_v_euler", model: "sd2", prediction: .v)
        let manifest = try GenerationManifest.load()
        let expected = try #require(manifest.cases["sd2_v_euler"]?.a1111_v_probe_mean)
        let pipeline = try Self.pipeline("sd2", prediction: .v)
        let mean = try pipeline.probeMean()
        #expect(abs(mean - expected) <= 1e-4 * max(1, abs(expected)))
    }

    @Test("SDXL (two encoders, pooled text, time ids, zeroed empty negative) matches diffusers' SDXL pipeline")
    func sdxl() throws {
        _ = try check("sdxl_euler", model: "sdxl")
    }
}
