import Foundation
import Host
import Hypernetwork
import SafeTensors
import Tensor
import Testing
import TextualInversion
@testable import Runtime

/// Embeddings and hypernetworks in a generation: what the prompt names is found in the models
/// folders, loaded through the registry and handed to the networks as hooks — the same latents
/// as handing those hooks over directly.
@Suite("Extra networks in generation")
struct ExtraNetworkGenerationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// The default model's A1111 hypernetwork (context width 32, like the tiny sd1 fixture's).
    static let hypernetworks = repository.appendingPathComponent("models/default/hypernetworks").path

    static func registry() throws -> AdapterRegistry {
        let registry = AdapterRegistry()
        try registerTextualInversion(into: registry)
        try registerHypernetwork(into: registry)
        return registry
    }

    static let parameters = GenerationParameters(prompt: "", negativePrompt: "blurry", seed: 7, steps: 3, cfgScale: 7,
                                                 sampler: .euler, width: 64, height: 64)

    /// A folder holding `name.safetensors`, a kohya-style embedding {"emb_params": [n, width]}.
    static func embeddingFolder(name: String, vectors: Tensor) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("emb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(["emb_params": vectors], metadata: [:], to: dir.appendingPathComponent("\(name).safetensors").path)
        return dir
    }

    @Test("An embedding named in the prompt changes the latents exactly as its vectors given as hooks; TI hashes are A1111's")
    func embedding() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1.safetensors")
        let width = pipeline.textEncoders[0].configuration.width
        let values = (0..<(3 * width)).map { Float(sin(Double($0) * 0.7)) * 2 }
        let vectors = Tensor(shape: [3, width], values: values)
        let dir = try Self.embeddingFolder(name: "shinytoken", vectors: vectors)
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = try ModelsDirectory(root: nil, embeddingsDirectory: dir.path)
        let (loaded, warnings) = loadEmbeddings(folder.embeddings(), registry: try Self.registry())
        #expect(warnings.isEmpty && loaded.map(\.embedding.name) == ["shinytoken"])
        let context = AdapterContext(registry: try Self.registry(), models: folder, embeddings: loaded)

        var parameters = Self.parameters
        parameters.prompt = "a red cat, shinytoken"
        let withEmbedding = try pipeline.generate(parameters, adapters: context)
        let plain = try pipeline.generate(parameters)
        let hooks = GenerationHooks(embeddings: [TokenEmbedding(name: "shinytoken", vectorsByWidth: [width: vectors])])
        let viaHooks = try pipeline.sampleLatents(prompt: parameters.prompt, negativePrompt: parameters.negativePrompt,
                                                  parameters: parameters, hooks: hooks)
        #expect(withEmbedding.latents.floats == viaHooks.floats)
        #expect(NetworkFixtures.relativeError(withEmbedding.latents, plain.latents) > 1e-3)
        #expect(withEmbedding.embeddingsUsed == ["shinytoken"] && plain.embeddingsUsed.isEmpty)
        let file = dir.appendingPathComponent("shinytoken.safetensors").path
        let hash = String(try SHA256.hash(fileAt: file).hex.prefix(12))
        #expect(withEmbedding.infotext.text.contains("RNG: CPU, TI hashes: \"shinytoken: \(hash)\""))
        #expect(!plain.infotext.text.contains("TI hashes"))

        // Available but not named: nothing is injected, nothing recorded.
        parameters.prompt = "a red cat"
        let unnamed = try pipeline.generate(parameters, adapters: context)
        #expect(unnamed.latents.floats == (try pipeline.generate(parameters)).latents.floats)
        #expect(unnamed.embeddingsUsed.isEmpty && !unnamed.infotext.text.contains("TI hashes"))

        // Named in both prompts: listed for each, the prompt's first (A1111 appends the
        // negative prompt's hashes, computed first, after the prompt's).
        parameters.prompt = "a red cat, shinytoken"
        parameters.negativePrompt = "shinytoken, blurry"
        let both = try pipeline.generate(parameters, adapters: context)
        #expect(both.embeddingsUsed == ["shinytoken", "shinytoken"])
        #expect(both.infotext.text.contains("TI hashes: \"shinytoken: \(hash), shinytoken: \(hash)\""))
    }

    @Test("<hypernet:NAME:S> tags, chained in prompt order, equal their transforms given as hooks; the tags stay in the infotext")
    func hypernetworks() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1.safetensors")
        let registry = try Self.registry()
        let context = AdapterContext(registry: registry, models: try ModelsDirectory(root: nil, hypernetworkDirectory: Self.hypernetworks))
        let file = try #require(context.models.files(.hypernetwork).first)
        let adapter = try registry.load(openAdapterSource(file.path))
        #expect(adapter.contextTransforms.count == 1)

        var parameters = Self.parameters
        parameters.prompt = "a red cat <hypernet:tiny-sd1-hypernetwork:0.6> <hypernet:tiny-sd1-hypernetwork:0.3>"
        let tagged = try pipeline.generate(parameters, adapters: context)
        #expect(tagged.hypernetworks.map(\.strength) == [0.6, 0.3])
        let transform = try #require(adapter.contextTransforms.first)
        let hooks = GenerationHooks(contextTransforms: [(transform, 0.6), (transform, 0.3)])
        let viaHooks = try pipeline.sampleLatents(prompt: "a red cat  ", negativePrompt: parameters.negativePrompt,
                                                  parameters: parameters, hooks: hooks)
        #expect(tagged.latents.floats == viaHooks.floats)
        // Chaining is not one transform at the summed strength, and the strength matters.
        let summed = try pipeline.sampleLatents(prompt: "a red cat  ", negativePrompt: parameters.negativePrompt,
                                                parameters: parameters, hooks: GenerationHooks(contextTransforms: [(transform, 0.9)]))
        #expect(NetworkFixtures.relativeError(tagged.latents, summed) > 1e-5)
        let plain = try pipeline.sampleLatents(prompt: "a red cat  ", negativePrompt: parameters.negativePrompt, parameters: parameters)
        #expect(NetworkFixtures.relativeError(tagged.latents, plain) > 1e-3)
        #expect(tagged.infotext.prompt == parameters.prompt)
        #expect(!tagged.infotext.text.contains("Hypernet"))
    }

    @Test("Tags in the negative prompt activate nothing and are encoded as words (A1111)")
    func negativePromptTags() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1.safetensors")
        var parameters = Self.parameters
        parameters.prompt = "a red cat"
        parameters.negativePrompt = "blurry <lora:not-anywhere:1> <hypernet:nor-here:1>"
        // No models folder is needed: the negative prompt's networks are never looked up.
        let result = try pipeline.generate(parameters)
        let expected = try pipeline.sampleLatents(prompt: "a red cat", negativePrompt: parameters.negativePrompt, parameters: parameters)
        #expect(result.latents.floats == expected.floats)
        let stripped = try pipeline.sampleLatents(prompt: "a red cat", negativePrompt: "blurry  ", parameters: parameters)
        #expect(result.latents.floats != stripped.floats)
        #expect(result.loras.isEmpty && result.hypernetworks.isEmpty)
        #expect(result.infotext.negativePrompt == parameters.negativePrompt)
    }

    @Test("The parser's warnings reach the result (an unknown tag type; LoRA weights: GenerateAdaptersTests)")
    func parserWarnings() throws {
        let pipeline = try GenerateConformanceTests.pipeline("sd1.safetensors")
        var parameters = Self.parameters
        parameters.prompt = "a red cat <foo:bar>"
        let result = try pipeline.generate(parameters)
        #expect(result.warnings.contains("<foo:bar>: unknown extra network type 'foo'; A1111 skips it"))
    }
}
