import Foundation
import Host
import Runtime
import SafeTensors
import Tensor
import Testing
import TorchPickle

/// A1111's hypernetwork module written out by hand from a file's weights, for one context
/// width: k (or v) = x + (W₂·relu(W₁·x + b₁) + b₂)·strength, row by row in Double — the
/// reference the binary's hypernetwork must match (layer structure [1, 2, 1], relu, no layer
/// norm, no output activation: the default model's hypernetwork).
final class NaiveHypernetwork: ContextTransform {
    struct MLP {
        let w1: [Float], b1: [Float], w2: [Float], b2: [Float]
        let width: Int, hidden: Int

        func callAsFunction(_ x: Tensor, strength: Float) -> Tensor {
            let input = x.contiguous().floats
            var out = input
            for row in 0..<(input.count / width) {
                let v = input[(row * width)..<((row + 1) * width)].map(Double.init)
                var h = [Double](repeating: 0, count: hidden)
                for i in 0..<hidden {
                    var sum = Double(b1[i])
                    for j in 0..<width { sum += Double(w1[i * width + j]) * v[j] }
                    h[i] = max(0, sum)
                }
                for i in 0..<width {
                    var sum = Double(b2[i])
                    for j in 0..<hidden { sum += Double(w2[i * hidden + j]) * h[j] }
                    out[row * width + i] = Float(v[i] + sum * Double(strength))
                }
            }
            return Tensor(shape: x.shape, values: out)
        }
    }

    let width: Int
    let key: MLP, value: MLP

    /// The `<width>.0` (keys) and `<width>.1` (values) modules of an A1111 `.pt`.
    init(path: String, width: Int) throws {
        let file = try TorchFile(path: path)
        func floats(_ name: String) throws -> [Float] { try file.tensor(name).to(.f32).contiguous().floats }
        func mlp(_ half: Int) throws -> MLP {
            let prefix = "\(width).\(half).linear."
            let w1 = try floats(prefix + "0.weight")
            return MLP(w1: w1, b1: try floats(prefix + "0.bias"), w2: try floats(prefix + "2.weight"),
                       b2: try floats(prefix + "2.bias"), width: width, hidden: w1.count / width)
        }
        self.width = width
        key = try mlp(0)
        value = try mlp(1)
    }

    func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        guard width == self.width else { return nil }
        return (key(x, strength: strength), value(x, strength: strength))
    }

    func transform(key k: Tensor, value v: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        guard width == self.width else { return nil }
        return (key(k, strength: strength), value(v, strength: strength))
    }
}

/// `adapterhost generate` / `encode` / `merge` with embeddings, hypernetworks, models folders
/// and DreamBooth differences, on the embedded default model (models/default), checked against
/// the same generation run in process with hand-made hooks.
@Suite struct GenerateAdaptersTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let defaultModels = repository.appendingPathComponent("models/default").path
    static let model = defaultModels + "/tiny-sd1.safetensors"
    static let config = defaultModels + "/tiny-sd1-config"
    static let hypernetwork = defaultModels + "/hypernetworks/tiny-sd1-hypernetwork.pt"

    /// Small and quick: 64×64, 3 Euler steps.
    static let common = ["--model", model, "--config", config, "--negative", "blurry", "--seed", "11", "--steps", "3",
                         "--sampler", "Euler", "--width", "64", "--height", "64", "--quiet"]
    static let parameters = GenerationParameters(prompt: "", negativePrompt: "blurry", seed: 11, steps: 3, cfgScale: 7,
                                                 sampler: .euler, width: 64, height: 64)

    static func latents(_ path: String) throws -> (latents: Tensor, parameters: String) {
        let file = try SafeTensorsFile(path: path)
        return (try file.tensor(named: "latents"), file.metadata["parameters"] ?? "")
    }

    static func pipeline() throws -> StableDiffusionPipeline {
        try StableDiffusionPipeline.load(path: model, configDirectory: config)
    }

    static func relativeError(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.floats, y = b.floats
        var num = 0.0, den = 0.0
        for (p, q) in zip(x, y) { num += Double(p - q) * Double(p - q); den += Double(q) * Double(q) }
        return (num / max(den, 1e-30)).squareRoot()
    }

    @Test func embeddingByFileNameEqualsItsVectorsAsHooks() throws {
        let dir = try ScratchDirectory()
        let embeddings = dir.file("embeddings")
        try FileManager.default.createDirectory(atPath: embeddings, withIntermediateDirectories: true)
        let vectors = Tensor(shape: [3, 32], values: (0..<96).map { Float(cos(Double($0) * 1.3)) * 3 })
        let file = embeddings + "/shinytoken.safetensors"
        try SafeTensorsWriter.write(["emb_params": vectors], metadata: [:], to: file)

        let prompt = "a red cat, shinytoken"
        let with = try CLI.run(["generate"] + Self.common + ["--embeddings-dir", embeddings, "--prompt", prompt,
                                                             "--latents-out", dir.file("with.safetensors")])
        #expect(with.status == 0, "\(with.stderr)")
        #expect(with.stdout.contains("embeddings used: shinytoken"))
        let without = try CLI.run(["generate"] + Self.common + ["--prompt", prompt, "--latents-out", dir.file("without.safetensors")])
        #expect(without.status == 0, "\(without.stderr)")

        let (withLatents, infotext) = try Self.latents(dir.file("with.safetensors"))
        let withoutLatents = try Self.latents(dir.file("without.safetensors")).latents
        var parameters = Self.parameters
        parameters.prompt = prompt
        let hooks = GenerationHooks(embeddings: [TokenEmbedding(name: "shinytoken", vectorsByWidth: [32: vectors])])
        let reference = try Self.pipeline().sampleLatents(prompt: prompt, negativePrompt: "blurry", parameters: parameters, hooks: hooks)
        #expect(Self.relativeError(withLatents, reference) < 1e-6)
        #expect(Self.relativeError(withoutLatents, reference) > 1e-3)
        let hash = String(try SHA256.hash(fileAt: file).hex.prefix(12))
        #expect(infotext.contains("TI hashes: \"shinytoken: \(hash)\""), "\(infotext)")
    }

    @Test func encodeWithConfigEqualsTheConditionerWithTheEmbeddingAsHooks() throws {
        let dir = try ScratchDirectory()
        let embeddings = dir.file("embeddings")
        try FileManager.default.createDirectory(atPath: embeddings, withIntermediateDirectories: true)
        let vectors = Tensor(shape: [2, 32], values: (0..<64).map { Float(sin(Double($0) * 0.7)) * 2 })
        try SafeTensorsWriter.write(["emb_params": vectors], metadata: [:], to: embeddings + "/shinytoken.safetensors")
        let prompt = "a (red:1.2) cat, shinytoken", negative = "blurry <lora:x:1>"
        let out = dir.file("cond.safetensors")
        let run = try CLI.run(["encode", "--model", Self.model, "--config", Self.config, "--embeddings-dir", embeddings,
                               "--prompt", prompt, "--negative", negative, "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("embeddings used: shinytoken"))

        // The default model's text encoder has 4 heads: only --config says so (the standard SD1
        // configuration's 12 do not divide its width of 32).
        let weights = try ModelWeights.load(path: Self.model)
        let hooks = GenerationHooks(embeddings: [TokenEmbedding(name: "shinytoken", vectorsByWidth: [32: vectors])])
        let conditioner = try PromptConditioner(weights: weights, configDirectory: Self.config, hooks: hooks)
        // The negative prompt's tag is text there, as in A1111.
        let (cond, uncond) = try conditioner.condition(prompt: prompt, negative: negative)
        let file = try SafeTensorsFile(path: out)
        #expect(Self.relativeError(try file.f32Tensor(named: "cond"), cond.context) < 1e-6)
        #expect(Self.relativeError(try file.f32Tensor(named: "uncond"), uncond.context) < 1e-6)
        let plain = try PromptConditioner(weights: weights, configDirectory: Self.config).condition(prompt: prompt, negative: negative)
        #expect(Self.relativeError(plain.cond.context, cond.context) > 1e-3)
        let stripped = try conditioner.condition(prompt: prompt, negative: "blurry ")
        #expect(Self.relativeError(stripped.uncond.context, uncond.context) > 1e-4)
    }

    @Test func hypernetTagEqualsANaiveTransformAsHooks() throws {
        let dir = try ScratchDirectory()
        let prompt = "a red cat <hypernet:tiny-sd1-hypernetwork:0.7>"
        let result = try CLI.run(["generate"] + Self.common + [
            "--hypernetwork-dir", Self.defaultModels + "/hypernetworks", "--prompt", prompt,
            "--latents-out", dir.file("hn.safetensors")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("hypernetwork tiny-sd1-hypernetwork at 0.7"))
        let (latents, infotext) = try Self.latents(dir.file("hn.safetensors"))

        var parameters = Self.parameters
        parameters.prompt = prompt
        let naive = try NaiveHypernetwork(path: Self.hypernetwork, width: 32)
        let pipeline = try Self.pipeline()
        let reference = try pipeline.sampleLatents(prompt: "a red cat ", negativePrompt: "blurry", parameters: parameters,
                                                   hooks: GenerationHooks(contextTransforms: [(naive, 0.7)]))
        #expect(Self.relativeError(latents, reference) < 1e-4)
        let plain = try pipeline.sampleLatents(prompt: "a red cat ", negativePrompt: "blurry", parameters: parameters)
        #expect(Self.relativeError(latents, plain) > 1e-2)
        // The tag stays in the infotext's prompt; no hypernetwork field (webui 1.x).
        #expect(infotext.hasPrefix(prompt + "\nNegative prompt: blurry\n") && !infotext.contains("Hypernet"))
    }

    @Test func unknownNamesListTheClosest() throws {
        let lora = try CLI.run(["generate"] + Self.common + ["--lora-dir", Self.defaultModels, "--prompt", "cat <lora:tiny-sd1-lroa:1>",
                                                             "--out", "/dev/null"])
        #expect(lora.status != 0)
        #expect(lora.stderr.contains("no LoRA named \"tiny-sd1-lroa\"") && lora.stderr.contains("closest: \"tiny-sd1-lora\""),
                "\(lora.stderr)")
        let hypernet = try CLI.run(["generate"] + Self.common + ["--models-dir", Self.defaultModels,
                                                                 "--prompt", "cat <hypernet:tiny-hypernetwork:1>", "--out", "/dev/null"])
        #expect(hypernet.status != 0)
        #expect(hypernet.stderr.contains("no hypernetwork named \"tiny-hypernetwork\"")
                && hypernet.stderr.contains("closest: \"tiny-sd1-hypernetwork\""), "\(hypernet.stderr)")
        // A LoRA tag without any LoRA folder says where it looked.
        let noFolder = try CLI.run(["encode", "--model", Self.model, "--prompt", "cat <lora:x:1>", "--out", "/dev/null"])
        #expect(noFolder.status != 0 && noFolder.stderr.contains("no LoRA folder"), "\(noFolder.stderr)")
    }

    @Test func modelsDirLayoutAndWeightWarnings() throws {
        // A1111's layout: M/Stable-diffusion, M/Lora/<sub>, embeddings beside M.
        let dir = try ScratchDirectory()
        let m = dir.file("models")
        for sub in ["Stable-diffusion", "Lora/styles", "hypernetworks"] {
            try FileManager.default.createDirectory(atPath: m + "/" + sub, withIntermediateDirectories: true)
        }
        try FileManager.default.createSymbolicLink(atPath: m + "/Stable-diffusion/tiny.safetensors", withDestinationPath: Self.model)
        try FileManager.default.createSymbolicLink(atPath: m + "/Lora/styles/mystyle.safetensors",
                                                   withDestinationPath: Self.defaultModels + "/tiny-sd1-lora.safetensors")
        let common = Self.common.enumerated().filter { $0.offset > 1 }.map(\.element)   // without --model
        let result = try CLI.run(["generate", "--model", "tiny", "--models-dir", m] + common + [
            "--prompt", "cat <lora:mystyle:1.8> <lora:mystyle:0.3>", "--out", dir.file("x.png")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("adapters mystyle (kohya, te 1.8, unet 1.8), mystyle (kohya, te 0.3, unet 0.3)"), "\(result.stdout)")
        // One line each on stderr, as the parser words them.
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("<lora:") }
        #expect(warnings == [
            "warning: <lora:mystyle:1.8>: LoRA weight 1.8 is beyond ±1.5, which tends to distort the image",
            "warning: <lora:mystyle:0.3>: LoRA weight 0.3 is unusual; LoRA weights are usually 0.5–1.2",
        ], "\(result.stderr)")
        let missing = try CLI.run(["generate", "--model", "tinny", "--models-dir", m] + common + ["--prompt", "cat", "--out", "/dev/null"])
        #expect(missing.status != 0 && missing.stderr.contains("closest: \"tiny\""), "\(missing.stderr)")
    }

    @Test func tokenizeTakesTagsOutWithTheOneParser() throws {
        let result = try CLI.run(["tokenize", "--prompt", "a, <lora:x:te=1:unet=0.5>, b <hypernet:h:0.3>", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["prompt"] as? String == "a, , b ")
        let tags = try #require(object["extra_networks"] as? [[String: Any]])
        #expect(tags.map { $0["name"] as? String } == ["lora", "hypernet"])
        #expect(tags.map { $0["arguments"] as? [String] } == [["x", "te=1", "unet=0.5"], ["h", "0.3"]])
    }

    @Test func mergeRefusesEmbeddingsAndHypernetworksInOneLine() throws {
        let dir = try ScratchDirectory()
        for (file, phrase) in [(Self.hypernetwork, "a hypernetwork"),
                               (Self.defaultModels + "/embeddings/tiny-sd1-embedding.pt", "a textual-inversion embedding")] {
            let result = try CLI.run(["merge", Self.model, "--adapter", file, "--out", dir.file("m.safetensors"), "--quiet"])
            #expect(result.status != 0)
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains(phrase) && lines[0].contains(file), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("m.safetensors")))
        }
    }

    @Test func mergeForceAppliesADiffToAnotherBase() throws {
        let dir = try ScratchDirectory()
        let (base, tuned) = try DiffCommandTests().makeCheckpoints(dir)
        let diff = dir.file("diff.safetensors")
        #expect(try CLI.run(["diff", "--base", base, "--tuned", tuned, "--out", diff, "--quiet"]).status == 0)
        // Another base: the same model with one unrelated tensor changed.
        let other = dir.file("other.safetensors")
        let source = try SafeTensorsFile(path: base)
        var writer = SafeTensorsWriter(metadata: source.metadata)
        let moved = "model.diffusion_model.out.2.bias"
        for name in source.names {
            let t = try source.tensor(named: name)
            writer.add(name, tensor: name == moved ? t.to(.f32).scaled(by: 0.5).to(t.dtype) : t)
        }
        try writer.write(to: other)

        let refused = try CLI.run(["merge", other, "--adapter", diff, "--out", dir.file("m.safetensors"), "--quiet"])
        #expect(refused.status != 0 && refused.stderr.contains("refusing to apply it"), "\(refused.stderr)")
        let forced = try CLI.run(["merge", other, "--adapter", diff, "--force", "--out", dir.file("m.safetensors"), "--quiet"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("applied anyway (--force)"))
        // other + (tuned − base) at the changed keys; the moved tensor is other's.
        let merged = try SafeTensorsFile(path: dir.file("m.safetensors"))
        let otherFile = try SafeTensorsFile(path: other), tunedFile = try SafeTensorsFile(path: tuned)
        for key in DiffCommandTests.changedKeys {
            // other == base at these keys, so the merge gives the tuned values back bit-exactly.
            #expect(try merged.tensor(named: key).floats == (try tunedFile.tensor(named: key)).floats, "\(key)")
        }
        #expect(try merged.tensor(named: moved).floats == (try otherFile.tensor(named: moved)).floats)
    }

    @Test func generateAppliesADreamBoothDiffWithAdapterAndForce() throws {
        let dir = try ScratchDirectory()
        // A difference made against another file (the tests' tiny SD1 copy): refused on the
        // default model unless forced; forced, it changes the picture.
        let (base, tuned) = try DiffCommandTests().makeCheckpoints(dir)
        let diff = dir.file("diff.safetensors")
        #expect(try CLI.run(["diff", "--base", base, "--tuned", tuned, "--out", diff, "--quiet"]).status == 0)
        let refused = try CLI.run(["generate"] + Self.common + ["--prompt", "a red cat", "--adapter", diff + ":1",
                                                                "--latents-out", dir.file("r.safetensors")])
        #expect(refused.status != 0 && refused.stderr.contains("refusing to apply it"), "\(refused.stderr)")
        let forced = try CLI.run(["generate"] + Self.common + ["--prompt", "a red cat", "--adapter", diff + ":1", "--force",
                                                               "--latents-out", dir.file("f.safetensors")])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stdout.contains("adapters diff.safetensors (adapterhost-diff, te 1.0, unet 1.0): 3 of 3 modules applied, merged"),
                "\(forced.stdout)")
        let plain = try CLI.run(["generate"] + Self.common + ["--prompt", "a red cat", "--latents-out", dir.file("p.safetensors")])
        #expect(plain.status == 0)
        let a = try Self.latents(dir.file("f.safetensors")).latents, b = try Self.latents(dir.file("p.safetensors")).latents
        // Three small tensor changes (×1.25) move the latents a little, but clearly beyond rounding.
        #expect(Self.relativeError(a, b) > 1e-5)
    }

    @Test func montagePutsLabelledPanelsSideBySide() throws {
        let dir = try ScratchDirectory()
        var a = RGBImage(width: 40, height: 30, fill: (255, 0, 0)), b = RGBImage(width: 20, height: 30, fill: (0, 0, 255))
        a[0, 0] = (1, 2, 3)
        b[19, 29] = (4, 5, 6)
        try PNGWriter.write(a, to: dir.file("a.png"))
        try PNGWriter.write(b, to: dir.file("b.png"))
        let result = try CLI.run(["montage", dir.file("a.png"), dir.file("b.png"), "--label", "one", "--label", "two words wrap",
                                  "--out", dir.file("s.png")])
        #expect(result.status == 0, "\(result.stderr)")
        let out = try PNGReader.read(path: dir.file("s.png")).image
        // Both panels get the strip of the tallest label: b's wraps in 20 pixels, a's does not.
        let strip = b.labelled("two words wrap").height - 30
        #expect(strip > a.labelled("one").height - 30)
        #expect(out.width == 40 + 4 + 20 && out.height == 30 + strip)
        #expect(out[0, strip] == (1, 2, 3) && out[44 + 19, strip + 29] == (4, 5, 6))
        #expect(out[42, 25] == (255, 255, 255))   // the gap
        let mismatched = try CLI.run(["montage", dir.file("a.png"), "--label", "x", "--label", "y", "--out", dir.file("t.png")])
        #expect(mismatched.status != 0)
    }
}
