import Foundation
import Host
import LoRA
import SafeTensors
import Testing
import Tensor
@testable import Runtime

/// The pipeline's pieces: infotext, LoRA tags and files, configuration, toy vocabularies,
/// image conversion and labels, parameter checks, CFG batching.
@Suite("Pipeline")
struct PipelineTests {
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    // MARK: Infotext

    @Test("Infotext in A1111's order and format (webui 1.10 create_infotext)")
    func infotext() {
        let settings = InfotextSettings(
            prompt: "a cat, (sitting:1.2) <lora:style:0.8>", negativePrompt: "blurry", steps: 20, sampler: .eulerAncestral,
            cfgScale: 7, seed: 1234, width: 512, height: 768, modelHash: "6ce0161689", modelName: "v1-5-pruned-emaonly",
            clipSkip: 2, etaNoiseSeedDelta: 31337, loraHashes: [(name: "style", hash: "a1b2c3d4e5f6")], version: "v1.10.1")
        #expect(settings.infotext.text == """
            a cat, (sitting:1.2) <lora:style:0.8>
            Negative prompt: blurry
            Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x768, \
            Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, ENSD: 31337, RNG: CPU, \
            Lora hashes: "style: a1b2c3d4e5f6", Version: v1.10.1
            """)
        // No negative prompt: no line; DPM++ 2M Karras splits into sampler and schedule; ENSD only
        // for ancestral samplers; clip skip 1 omitted; names lose ':' and ','.
        let plain = InfotextSettings(prompt: "x", negativePrompt: "", steps: 4, sampler: .dpmpp2MKarras, cfgScale: 7.5,
                                     seed: 1, width: 64, height: 64, modelHash: nil, modelName: "m", etaNoiseSeedDelta: 5,
                                     loraHashes: [(name: "a:b,c", hash: "0123"), (name: "d", hash: "4567")])
        #expect(plain.infotext.text == """
            x
            Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: m, \
            RNG: CPU, Lora hashes: "abc: 0123, d: 4567"
            """)
    }

    @Test("infotext_utils.quote and the numbers the UI hands over")
    func quoting() {
        #expect(Infotext.quote("plain text") == "plain text")
        #expect(Infotext.quote("a, b") == "\"a, b\"")
        #expect(Infotext.quote("k: v") == "\"k: v\"")
        #expect(Infotext.quote("say \"hi\", \\ ok\nnext\tx") == "\"say \\\"hi\\\", \\\\ ok\\nnext\\tx\"")
        #expect(Infotext.quote("名前: 猫") == "\"名前: 猫\"")        // ensure_ascii=False
        #expect(Infotext.quote("a,\u{01}") == "\"a,\\u0001\"")
        #expect(Infotext.number(7) == "7" && Infotext.number(7.5) == "7.5" && Infotext.number(0.1) == "0.1")
        #expect(Infotext(prompt: " p ", negativePrompt: "", fields: [("Tiling", "Tiling")]).text == "p \nTiling")
    }

    // MARK: LoRA tags and files

    @Test("<lora:…>/<lyco:…> tags load at their weights in A1111's order, through the models folders")
    func loraTags() throws {
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        let context = AdapterContext(registry: registry,
                                     models: try ModelsDirectory(root: nil, loraDirectory: GenerateConformanceTests.loraFixtures.path))
        // A1111 groups by tag type in order of each type's first appearance: lora a, lora c, then lyco b.
        let parsed = try A1111Prompt.parse("x <lora:kohya_sd1_noalpha:0.5:0.25> <lyco:kohya_sd1_noalpha:te=0.2:unet=0.9:dyn=4> <lora:kohya_sd1_noalpha>")
        let loras = try context.loadLoras(parsed.lorasInA1111Order)
        #expect(loras.map(\.textEncoderWeight) == [0.5, 1, 0.2])
        #expect(loras.map(\.unetWeight) == [0.25, 1, 0.9])
        #expect(loras.map(\.dynRank) == [nil, nil, 4])
        #expect(loras.allSatisfy { $0.path.hasSuffix("/kohya_sd1_noalpha.safetensors") })
        let application = loras[2].application
        #expect(application.textEncoderWeight == 0.2 && application.unetWeight == 0.9 && application.dynRank == 4)
    }

    @Test("LoRA hashes: sshs_model_hash, kohya's addnet hash (bytes after the header), whole-file SHA-256")
    func loraHashes() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("l.safetensors").path
        try SafeTensorsWriter.write(["w": Tensor(shape: [2], values: [1, 2])], metadata: ["ss_network_dim": "4"], to: path)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        let expected = SHA256.hash(bytes[(8 + headerLength)...]).hex
        #expect(try LoraHash.fullHash(path: path, metadata: [:]) == expected)
        #expect(try LoraHash.shortHash(path: path, metadata: [:]) == String(expected.prefix(12)))
        #expect(try LoraHash.shortHash(path: path, metadata: ["sshs_model_hash": "abcdef0123456789"]) == "abcdef012345")
        let pt = dir.appendingPathComponent("l.pt").path
        FileManager.default.createFile(atPath: pt, contents: Data(bytes))
        #expect(try LoraHash.fullHash(path: pt, metadata: [:]) == SHA256.hash(bytes).hex)
    }

    @Test("A network in the prompt needs a models folder; an unknown name names the close ones")
    func unknownLoRA() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1")
        let parameters = GenerationParameters(prompt: "cat <lora:missing:1>", seed: 1, steps: 1, width: 64, height: 64)
        #expect(throws: PipelineError.noNetworkFolder(kind: "LoRA", name: "missing")) {
            try pipeline.generate(parameters)
        }
        var hypernet = parameters
        hypernet.prompt = "cat <hypernet:missing:1>"
        #expect(throws: PipelineError.noNetworkFolder(kind: "hypernetwork", name: "missing")) {
            try pipeline.generate(hypernet)
        }
        let adapters = AdapterContext(registry: AdapterRegistry(),
                                      models: try ModelsDirectory(root: nil, loraDirectory: GenerateConformanceTests.loraFixtures.path))
        var near = parameters
        near.prompt = "cat <lora:kohya_sd1_noalfa:1>"
        do {
            _ = try pipeline.generate(near, adapters: adapters)
            Issue.record("an unknown LoRA generated")
        } catch let ModelsDirectoryError.notFound(kind, name, _, suggestions) {
            #expect(kind == .lora && name == "kohya_sd1_noalfa")
            #expect(suggestions.first == "kohya_sd1_noalpha")
        }
        // No hypernetworks folder at all: said so, with the folders looked for.
        near.prompt = "cat <hypernet:h:1>"
        #expect(throws: ModelsDirectoryError.self) { try pipeline.generate(near, adapters: adapters) }
    }

    // MARK: Configuration

    @Test("Diffusers configs: UNet heads and groups, VAE, text encoders, scheduler prediction type")
    func diffusersConfiguration() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let files: [String: String] = [
            "unet/config.json": #"{"attention_head_dim": [5, 10, 20, 20], "num_attention_heads": null, "norm_num_groups": 16}"#,
            "vae/config.json": #"{"scaling_factor": 0.13025, "norm_num_groups": 8}"#,
            "text_encoder/config.json": #"{"num_attention_heads": 12, "hidden_act": "quick_gelu"}"#,
            "scheduler/scheduler_config.json": #"{"prediction_type": "v_prediction"}"#,
        ]
        for (path, text) in files {
            let url = dir.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        var c = ModelConfiguration.standard(for: .sd1)
        try c.read(diffusersFolder: dir.path, family: .sd1)
        #expect(c.unet.attentionHeads == .count([5, 10, 20, 20]) && c.unet.normGroups == 16)
        #expect(c.vae.scalingFactor == 0.13025 && c.vae.normGroups == 8)
        #expect(c.textEncoderHeads == [12] && c.textEncoderActivations == [.quickGELU])
        #expect(c.prediction == .v && c.predictionSource?.hasSuffix("scheduler_config.json") == true)
        try #"{"prediction_type": "sample"}"#.write(to: dir.appendingPathComponent("scheduler/scheduler_config.json"),
                                                     atomically: true, encoding: .utf8)
        var other = ModelConfiguration.standard(for: .sd1)
        #expect(throws: PipelineError.self) { try other.read(diffusersFolder: dir.path, family: .sd1) }
    }

    @Test("A1111's sidecar <checkpoint>.yaml: parameterization and head layout")
    func sidecarYAML() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let yaml = """
            model:
              target: ldm.models.diffusion.ddpm.LatentDiffusion
              params:
                parameterization: "v"   # 768-v
                unet_config:
                  params:
                    num_head_channels: 64 # need to fix for flash-attn
                    num_heads: -1
            """
        try yaml.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        var c = ModelConfiguration.standard(for: .sd2)
        try c.read(sidecarOf: dir.appendingPathComponent("m.safetensors").path)
        #expect(c.prediction == .v && c.unet.attentionHeads == .width(64))
        try "num_heads: 8\nparameterization: eps\n".write(to: dir.appendingPathComponent("n.yaml"), atomically: true, encoding: .utf8)
        var d = ModelConfiguration.standard(for: .sd1)
        try d.read(sidecarOf: dir.appendingPathComponent("n.safetensors").path)
        #expect(d.prediction == .epsilon && d.predictionSource != nil && d.unet.attentionHeads == .count([8]))
        var none = ModelConfiguration.standard(for: .sd1)
        try none.read(sidecarOf: dir.appendingPathComponent("absent.safetensors").path)
        #expect(none.predictionSource == nil && none.sources.isEmpty)
    }

    @Test("The SD2 probe runs for single files without a config and decides ε or v")
    func sd2Probe() throws {
        let path = NetworkFixtures.models.appendingPathComponent("sd2.safetensors").path
        let pipeline = try StableDiffusionPipeline.load(path: path, configDirectory: NetworkFixtures.models.appendingPathComponent("sd2").path)
        #expect(pipeline.configuration.predictionSource == "A1111's SD2 probe (one UNet call)")
        #expect(pipeline.prediction == (try pipeline.probeMean() < -1 ? .v : .epsilon))
        let forced = try StableDiffusionPipeline.load(path: path, configDirectory: NetworkFixtures.models.appendingPathComponent("sd2").path,
                                                      prediction: .v)
        #expect(forced.prediction == .v && forced.configuration.predictionSource == "--prediction")
    }

    // MARK: Models

    @Test("Toy vocabularies are read modulo their size; full tables and other tensors are untouched")
    func tokenFolding() throws {
        let model = try NetworkFixtures.model("sd1.safetensors")
        let (folded, warnings) = try TokenTableFolding.foldedIfNeeded(model)
        #expect(warnings.count == 1)
        let key = try #require(model.keys.first { $0.hasSuffix("token_embedding.weight") })
        let original = try #require(model.tensor(key)), table = try #require(folded.tensor(key))
        #expect(original.shape == [64, 32] && table.shape == [49408, 32] && table.dtype == original.dtype)
        let rows = original.to(.f32).floats, big = table.to(.f32).floats
        for id in [0, 63, 64, 320, 49406, 49407] {
            #expect(Array(big[(id * 32)..<(id * 32 + 32)]) == Array(rows[((id % 64) * 32)..<((id % 64) * 32 + 32)]))
        }
        let other = try #require(model.keys.first { $0.contains("diffusion_model") })
        #expect(folded.tensor(other)!.baseAddress == model.tensor(other)!.baseAddress)   // same view, no copy
        let full = ModelWeights(path: "<full>", keys: [key], tensors: [key: Tensor(zeros: [49408, 4])], naming: .singleFile, family: .sd1)
        #expect(try TokenTableFolding.foldedIfNeeded(full).model === full)
    }

    @Test("Inpainting UNets are refused by txt2img; sizes and steps are checked")
    func parameterChecks() throws {
        let inpaint = NetworkFixtures.models.appendingPathComponent("sd1_inpaint.safetensors").path
        #expect(throws: PipelineError.self) { try StableDiffusionPipeline.load(path: inpaint) }
        let pipeline = try GenerateConformanceTests.pipeline("sd1")
        #expect(pipeline.sizeMultiple == 64)
        #expect(pipeline.modelName == "sd1")
        #expect(try pipeline.modelHash() == nil)
        for (width, height, steps, clipSkip) in [(72, 64, 4, 1), (64, 0, 4, 1), (64, 64, 0, 1), (64, 64, 4, 3)] {
            let p = GenerationParameters(prompt: "x", seed: 1, steps: steps, width: width, height: height, clipSkip: clipSkip)
            #expect(throws: PipelineError.self) { try pipeline.generate(p) }
        }
        let single = try GenerateConformanceTests.pipeline("sd1.safetensors")
        #expect(single.modelName == "sd1")
        let hash = try #require(try single.modelHash())
        #expect(hash == String(try SHA256.hash(fileAt: single.model.path).hex.prefix(10)))
    }

    @Test("Same seed, same image; another seed, another; a --noise tensor replaces only the start noise")
    func determinism() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1")
        var p = GenerationParameters(prompt: "a cat", seed: 7, steps: 2, sampler: .eulerAncestral, width: 64, height: 64)
        let a = try pipeline.sampleLatents(prompt: p.prompt, negativePrompt: "", parameters: p)
        let b = try pipeline.sampleLatents(prompt: p.prompt, negativePrompt: "", parameters: p)
        #expect(a.floats == b.floats)
        // The seed's own start noise given as a tensor: the same image (Euler a's later noise
        // still comes from the seed's generator).
        var noise = A1111ImageNoise(seeds: [7], shape: [4, 8, 8])
        let c = try pipeline.sampleLatents(prompt: p.prompt, negativePrompt: "", parameters: p, startNoise: noise.next())
        #expect(c.floats == a.floats)
        p.seed = 8
        let d = try pipeline.sampleLatents(prompt: p.prompt, negativePrompt: "", parameters: p)
        #expect(d.floats != a.floats)
        #expect(throws: PipelineError.self) {
            try pipeline.sampleLatents(prompt: "x", negativePrompt: "", parameters: p, startNoise: Tensor(zeros: [1, 4, 8, 7]))
        }
    }

    @Test("CFG batch: [cond; uncond] in one UNet call equals separate calls; unequal lengths run separately")
    func guidedBatch() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1")
        let conditioner = try PromptConditioner(family: .sd1, encoders: pipeline.textEncoders,
                                                options: ConditioningOptions(padsToEqualLength: false))
        let long = Array(repeating: "cat", count: 80).joined(separator: " ")
        let x = NetworkFixtures.random([2, 4, 8, 8], seed: 3)
        for prompt in ["a cat", long] {
            let (cond, uncond) = try conditioner.condition(prompt: prompt, negative: "dog")
            let guided = GuidedUNet(unet: pipeline.unet, cond: cond, uncond: uncond, hooks: .none, timeIDs: nil)
            #expect((guided.stackedContext != nil) == (prompt == "a cat"))
            let both = try guided.outputs(x, timestep: 500.5)
            let one = try pipeline.unet(x.row(0), timestep: 500.5, context: cond.context.unsqueezed(0))
            let other = try pipeline.unet(x.row(1), timestep: 500.5, context: uncond.context.unsqueezed(0))
            #expect(NetworkFixtures.relativeError(both.row(0), one) < 1e-5)
            #expect(NetworkFixtures.relativeError(both.row(1), other) < 1e-5)
        }
    }

    /// A context transform that scales the keys' input and counts its calls.
    final class RecordingTransform: ContextTransform {
        var calls = 0
        func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
            calls += 1
            return (x.scaled(by: Double(1 + strength)), x)
        }
    }

    @Test("Extra hooks reach the conditioner (embeddings) and the UNet (context transforms)")
    func hooksPlumbing() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1")
        let p = GenerationParameters(prompt: "a zzemb cat", seed: 3, steps: 2, sampler: .euler, width: 64, height: 64)
        let plain = try pipeline.generate(p).latents
        let embedding = TokenEmbedding(name: "zzemb", vectorsByWidth: [32: NetworkFixtures.random([2, 32], seed: 9)])
        let withEmbedding = try pipeline.generate(p, hooks: GenerationHooks(embeddings: [embedding])).latents
        #expect(withEmbedding.floats != plain.floats)
        var other = p
        other.prompt = "a cat"
        #expect(try pipeline.generate(other, hooks: GenerationHooks(embeddings: [embedding])).latents.floats
                == (try pipeline.generate(other).latents.floats))
        let transform = RecordingTransform()
        let transformed = try pipeline.generate(p, hooks: GenerationHooks(contextTransforms: [(transform, 0.5)])).latents
        #expect(transform.calls > 0)
        #expect(transformed.floats != plain.floats)
    }

    // MARK: Images

    @Test("A1111's 8-bit conversion: clamp((x+1)/2), ×255 in F32, truncate")
    func a1111Bytes() {
        #expect(RGBImage.a1111Byte(-1) == 0 && RGBImage.a1111Byte(1) == 255)
        #expect(RGBImage.a1111Byte(0) == 127)                 // 127.5 truncated
        #expect(RGBImage.a1111Byte(-3) == 0 && RGBImage.a1111Byte(7) == 255)
        #expect(RGBImage.a1111Byte(.nan) == 0)
        #expect(RGBImage.a1111Byte(0.9999) == 254)            // 254.98725 truncated, not rounded
        // A [1, 3, 1, 2] output: channel planes become interleaved RGB.
        let decoded = Tensor(shape: [1, 3, 1, 2], values: [-1, 1, 0, 0.5, 1, -1])
        #expect(RGBImage(decoded: decoded).pixels == [0, 127, 255, 255, 191, 0])
    }

    @Test("5×7 label font: every printable ASCII glyph, shapes, width, wrapping")
    func labelFont() {
        #expect(LabelFont.glyphs.count == 95)
        #expect((32...126).allSatisfy { LabelFont.glyphs[Character(Unicode.Scalar($0)!)] != nil })
        #expect(LabelFont.rows("A") == [0b01110, 0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001])
        #expect(LabelFont.rows("é") == LabelFont.rows("?"))
        #expect(LabelFont.rows(" ").allSatisfy { $0 == 0 } && LabelFont.rows("|").allSatisfy { $0 == 0b00100 })
        #expect(LabelFont.width(of: "abc") == 17 && LabelFont.width(of: "abc", scale: 2) == 34 && LabelFont.width(of: "") == 0)
        #expect(LabelFont.wrap("with <lora:tiny:0.8> adapters", maxWidth: 71) == ["with", "<lora:tiny:0", ".8> adapters"])
        #expect(LabelFont.wrap("a b c", maxWidth: 1000) == ["a b c"])
        var image = RGBImage(width: 12, height: 9)
        LabelFont.draw("T", into: &image, x: 1, y: 1, color: (255, 0, 0))
        #expect(image[1, 1] == (255, 0, 0) && image[5, 1] == (255, 0, 0) && image[3, 7] == (255, 0, 0))
        #expect(image[1, 2] == (255, 255, 255) && image[0, 0] == (255, 255, 255))
    }

    @Test("Side by side: panels left to right with a gap, labels above each")
    func sideBySide() {
        let left = RGBImage(width: 4, height: 3, fill: (10, 10, 10)), right = RGBImage(width: 5, height: 6, fill: (20, 20, 20))
        let joined = RGBImage.horizontalConcat([left, right], gap: 2)
        #expect(joined.width == 11 && joined.height == 6)
        #expect(joined[0, 0] == (10, 10, 10) && joined[3, 2] == (10, 10, 10) && joined[0, 3] == (255, 255, 255))
        #expect(joined[4, 0] == (255, 255, 255) && joined[6, 0] == (20, 20, 20) && joined[10, 5] == (20, 20, 20))
        let labelled = RGBImage(width: 64, height: 64, fill: (0, 0, 255)).labelled("base")
        #expect(labelled.height == 64 + 11 && labelled[0, 11] == (0, 0, 255) && labelled[63, 74] == (0, 0, 255))
        // "b" is drawn in black somewhere in the strip; the strip is otherwise white.
        let strip = (0..<11).flatMap { y in (0..<64).map { labelled[$0, y] } }
        #expect(strip.contains { $0 == (0, 0, 0) } && strip.allSatisfy { $0 == (0, 0, 0) || $0 == (255, 255, 255) })
    }
}
