import ArgumentParser
import Foundation
import Host
import Runtime
import SafeTensors
import Tensor

/// `adapterhost generate --model CKPT --prompt TEXT … --out IMG.png`: one txt2img image as
/// A1111 makes it (CPU RNG), with `<lora:…>`, `<lyco:…>` and `<hypernet:…>` tags and
/// textual-inversion embeddings found in A1111's models folders.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate an image (txt2img) as AUTOMATIC1111 does, with LoRAs, embeddings, hypernetworks and DreamBooth differences.",
        discussion: """
        The model is a single-file checkpoint (.safetensors), a diffusers folder, or with \
        --models-dir a checkpoint name in MODELS_DIR/Stable-diffusion. Prompt tags as A1111 reads \
        them: <lora:NAME:TE[:UNET[:DYN]]> and <lyco:…> load NAME from the LoRA folders (file stem, \
        searched recursively; .safetensors, .pt, .ckpt) and apply it merged (patched, then \
        restored) or bypass (added at run time); <hypernet:NAME:STRENGTH> loads NAME.pt from the \
        hypernetworks folder and transforms the UNet's cross-attention keys and values. Every \
        embedding of the embeddings folder is available by its file name anywhere in both \
        prompts. The negative prompt is encoded as written: tags there activate nothing (A1111 \
        reads networks from the prompt only). --adapter applies a file by path (a DreamBooth \
        difference from `adapterhost diff`, a LoRA) in the same stack. Files load through the \
        adapter registry (built-in methods and --plugin-dir plugins). An unknown name is an error \
        listing the closest names; unusual LoRA weights are warnings. The start noise is A1111's \
        with "Random number generator source: CPU" for --seed (or a tensor from --noise). The PNG \
        holds A1111's infotext in its "parameters" chunk (with "Lora hashes" and "TI hashes").
        """
    )

    @Option(help: "Checkpoint: .safetensors single file, diffusers folder, or a name in MODELS_DIR/Stable-diffusion.")
    var model: String
    @Option(help: "Prompt (may hold <lora:…>, <lyco:…>, <hypernet:…> tags and embedding names).") var prompt: String
    @Option(help: "Negative prompt.") var negative: String = ""
    @OptionGroup var folders: ModelFolderOptions
    @Option(name: .customLong("adapter"), help: "Also apply FILE[:TE_WEIGHT[:UNET_WEIGHT]] (a DreamBooth difference, a LoRA; repeatable).")
    var adapterSpecs: [String] = []
    @Flag(help: "Apply a DreamBooth difference to a checkpoint other than its recorded base.") var force = false
    @Option(help: "Folder of adapter plugins (default: ./plugins, if present).") var pluginDir: String?
    @Option(help: "Seed (-1: random, as A1111).") var seed: Int64 = -1
    @Option(help: "Sampling steps.") var steps: Int = 20
    @Option(help: "Classifier-free guidance scale.") var cfg: Double = 7
    @Option(help: "Sampler: Euler, Euler a, DDIM, DPM++ 2M, DPM++ 2M Karras (or k_euler, k_euler_a, ddim, …).")
    var sampler: String = "Euler a"
    @Option(help: "Image width in pixels.") var width: Int = 512
    @Option(help: "Image height in pixels.") var height: Int = 512
    @Option(help: "Start from this noise (a .safetensors holding one tensor of 4·(H/8)·(W/8) values) instead of the seed's.")
    var noise: String?
    @Option(help: "How LoRAs are applied: merged or bypass.") var mode: String = "merged"
    @Option(help: "A1111's Clip skip (SD1).") var clipSkip: Int = 1
    @Option(help: "Prediction type: eps or v (default: from the model's config, A1111's sidecar .yaml, or ε).")
    var prediction: String?
    @Option(help: "Diffusers config folder for a single-file checkpoint (unet/, vae/, text_encoder/ config.json).")
    var config: String?
    @Option(help: "A1111's Eta noise seed delta.") var ensd: UInt64 = 0
    @Option(help: "Output PNG.") var out: String?
    @Option(help: "Also write the final latents (safetensors, tensor \"latents\").") var latentsOut: String?
    @Option(help: "Also generate without adapters (tags removed, no embeddings, no --adapter) and write both images side by side, labelled, to this PNG.")
    var sideBySide: String?
    @Flag(help: "No progress bar.") var quiet = false

    /// The infotext's "Version".
    static let infotextVersion = "adapterhost"

    func validate() throws {
        guard out != nil || latentsOut != nil else { throw ValidationError("give --out IMG.png (or --latents-out)") }
        guard A1111Sampler(a1111Name: sampler) != nil else {
            throw ValidationError("unknown sampler '\(sampler)'; known: \(A1111Sampler.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard AdapterMode(rawValue: mode) != nil else { throw ValidationError("--mode must be merged or bypass, not '\(mode)'") }
        if let prediction, !["eps", "epsilon", "v"].contains(prediction) {
            throw ValidationError("--prediction must be eps or v, not '\(prediction)'")
        }
        if sideBySide != nil && out == nil { throw ValidationError("--side-by-side needs --out") }
    }

    func run() throws {
        let started = Date()
        let models = try folders.directory()
        let modelPath = try folders.resolveModel(model, in: models)
        let pipeline = try StableDiffusionPipeline.load(
            path: modelPath, configDirectory: config,
            prediction: prediction.map { $0 == "v" ? ModelPrediction.v : .epsilon })
        let loadTime = Date().timeIntervalSince(started)

        let (registry, failures) = makeRegistry(pluginDir: pluginDir ?? defaultPluginDirInWorkingDirectory())
        reportPluginFailures(failures)
        var additional: [AdapterApplication] = []
        for spec in adapterSpecs {
            let parsed = try AdapterSpec(parsing: spec)
            additional.append(AdapterApplication(adapter: try registry.load(openAdapterSource(parsed.path)),
                                                 weight: parsed.weight, unetWeight: parsed.unetWeight, dynRank: parsed.dynRank))
        }
        let adapters = AdapterContext(registry: registry, models: models, mode: AdapterMode(rawValue: mode)!,
                                      embeddings: folders.embeddings(in: models, registry: registry),
                                      additional: additional, forceBaseMismatch: force)
        let parameters = GenerationParameters(
            prompt: prompt, negativePrompt: negative, seed: Self.fixedSeed(seed), steps: steps, cfgScale: cfg,
            sampler: A1111Sampler(a1111Name: sampler)!, width: width, height: height, clipSkip: clipSkip,
            etaNoiseSeedDelta: ensd)
        let startNoise = try noise.map(Self.readNoise)

        let result = try run(pipeline, parameters, adapters: adapters, startNoise: startNoise, label: "sampling")
        try write(result, to: out, latents: latentsOut)

        if let sideBySide, let adapted = result.image {
            let parsed = try A1111Prompt.parse(prompt)
            var plain = parameters
            plain.prompt = parsed.text
            let baseline = try run(pipeline, plain, adapters: nil, startNoise: startNoise, label: "sampling (no adapters)")
            guard let base = baseline.image else { return }
            var used = parsed.tags.map(\.description) + result.embeddingsUsed
            used += additional.map { ($0.adapter.path as NSString).lastPathComponent }
            let scale = max(1, adapted.width / 256)
            let panels = [base.labelled("without adapters", scale: scale),
                          adapted.labelled(used.isEmpty ? "with adapters" : "with \(used.joined(separator: " "))", scale: scale)]
            let composite = RGBImage.horizontalConcat(panels, gap: 4 * scale)
            try PNGWriter.write(composite, to: sideBySide)
            let difference = zip(base.pixels, adapted.pixels).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }
            print("wrote \(sideBySide) (\(composite.width)x\(composite.height): without | with adapters; "
                  + String(format: "mean |difference| %.2f of 255 per channel)", Double(difference) / Double(max(base.pixels.count, 1))))
        }
        print(String(format: "model load %.2fs, total %.2fs", loadTime, Date().timeIntervalSince(started)))
    }

    /// One generation with a progress bar and its report.
    private func run(_ pipeline: StableDiffusionPipeline, _ parameters: GenerationParameters, adapters: AdapterContext?,
                     startNoise: Tensor?, label: String) throws -> GenerationResult {
        var bar: ProgressBar?
        let result = try pipeline.generate(parameters, adapters: adapters, startNoise: startNoise,
                                           version: Self.infotextVersion) { done, total in
            if bar == nil { bar = ProgressBar(label: label, total: total, enabled: !quiet) }
            bar?.advance()
        }
        bar?.finish()
        for warning in result.warnings { printWarning(warning) }
        if let report = result.patchReport {
            var names = result.loras.map { "\($0.name) (\($0.adapter.format), te \($0.textEncoderWeight), unet \($0.unetWeight))" }
            names += (adapters?.additional ?? []).map { "\(($0.adapter.path as NSString).lastPathComponent) (\($0.adapter.format), te \($0.textEncoderWeight), unet \($0.unetWeight))" }
            print("adapters \(names.joined(separator: ", ")): \(report.summary), \(mode)")
        }
        for hypernetwork in result.hypernetworks {
            print("hypernetwork \(hypernetwork.name) at \(hypernetwork.strength): \(hypernetwork.adapter.contextTransforms.count) context transform(s) on the UNet's cross-attention")
        }
        if !result.embeddingsUsed.isEmpty { print("embeddings used: \(result.embeddingsUsed.joined(separator: ", "))") }
        let t = result.timings
        print(String(format: "seed %llu: conditioning %.2fs, sampling %.2fs, decoding %.2fs", parameters.seed,
                     t.conditioning, t.sampling, t.decoding))
        if !quiet { print("parameters:\n" + result.infotext.text.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")) }
        return result
    }

    private func write(_ result: GenerationResult, to out: String?, latents: String?) throws {
        if let latents {
            try SafeTensorsWriter.write(["latents": result.latents], metadata: ["parameters": result.infotext.text],
                                        to: latents)
            print("wrote \(latents) (latents \(result.latents.shape))")
        }
        guard let out else { return }
        guard let image = result.image else {
            throw ValidationError("\(model) has no VAE, so no image can be made; use --latents-out for the latents")
        }
        try PNGWriter.write(image, text: [("parameters", result.infotext.text)], to: out)
        print("wrote \(out) (\(image.width)x\(image.height))")
    }

    /// A1111's `get_fixed_seed`: -1 becomes a random seed below 4294967294.
    static func fixedSeed(_ seed: Int64) -> UInt64 {
        seed == -1 ? UInt64.random(in: 0..<4_294_967_294) : UInt64(bitPattern: seed)
    }

    /// The one tensor of a `--noise` file.
    static func readNoise(_ path: String) throws -> Tensor {
        let file = try SafeTensorsFile(path: path)
        guard file.tensorInfos.count == 1, let name = file.names.first else {
            throw PipelineError.badNoise(path: path, reason: "holds \(file.tensorInfos.count) tensors; --noise needs exactly one")
        }
        return try file.tensor(named: name)
    }
}
