import ArgumentParser
import Foundation
import Host
import Runtime
import SafeTensors
import Tensor
import TorchPickle

/// `adapterhost encode --model CKPT --prompt TEXT [--negative TEXT] … --out C.safetensors`
struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode a prompt and negative prompt into the UNet's conditioning, as A1111 does.",
        discussion: """
        Writes F32 tensors: cond and uncond [chunks·77, width] (SD1 768, SD2 1024, SDXL 2048 = \
        CLIP-L then bigG), and for SDXL pooled and uncond_pooled [1280]. Emphasis ((word:1.2), \
        [word]), BREAK, 75-token chunks and textual-inversion names work as in A1111. \
        Extra-network tags are read from the prompt by A1111's rules and taken out of it (the \
        negative prompt is encoded as written: A1111 activates networks from the prompt only): <lora:NAME:TE[:UNET][:dyn=N]> and \
        <lyco:…> find NAME in the LoRA folders (--lora-dir or MODELS_DIR/Lora and LyCORIS; \
        .safetensors, .pt, .ckpt, searched recursively) and apply it to the text encoders at weight \
        TE, in bypass mode (the checkpoint is only read); <hypernet:NAME:W> is checked to exist but \
        changes only the UNet. An unknown name is an error listing the closest names. Embeddings: \
        every file of the embeddings folder, used by file name. Clip skip applies to SD1 only (A1111 \
        ignores it for SD2 and SDXL). By default the shorter of cond/uncond is padded with the \
        empty prompt's conditioning (A1111's "pad prompt/negative prompt to be same length"); on \
        SDXL an empty negative prompt gives zeros.
        """
    )

    @Option(help: "The checkpoint (.safetensors single file, diffusers folder, or a name in MODELS_DIR/Stable-diffusion).")
    var model: String
    @Option(help: "Diffusers config folder for a single-file checkpoint (text_encoder/ config.json), as for generate.")
    var config: String?
    @Option(help: "The prompt.") var prompt: String
    @Option(help: "The negative prompt.") var negative: String = ""
    @OptionGroup var folders: ModelFolderOptions
    @Option(name: .customLong("adapter"), help: "Also apply FILE[:TE_WEIGHT] to the text encoders (repeatable).")
    var adapters: [String] = []
    @Option(help: "Clip skip (A1111's CLIP_stop_at_last_layers; SD1 only).") var clipSkip: Int = 1
    @Option(help: "Emphasis mode: Original, \"No norm\", Ignore, None.") var emphasis: String = "Original"
    @Option(help: "Words after a comma move to the next chunk when within this many tokens of its end (0: off).")
    var commaBacktrack: Int = 20
    @Flag(help: "Do not pad cond and uncond to the same length.") var noPad = false
    @Option(help: "Directory of plugin libraries (default: plugins/ beside the model, if present).")
    var pluginDir: String?
    @Option(help: "Output file (.safetensors).") var out: String
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() throws {
        guard let mode = EmphasisMode(rawValue: emphasis) else {
            throw ValidationError("--emphasis must be one of \(EmphasisMode.allCases.map(\.rawValue))")
        }
        guard clipSkip >= 1 else { throw ValidationError("--clip-skip must be ≥ 1") }
        let models = try folders.directory()
        let modelPath = try folders.resolveModel(model, in: models)
        let (registry, failures) = makeRegistry(pluginDir: pluginDir ?? defaultPluginDir(besideFile: modelPath))
        reportPluginFailures(failures)
        let weights = try ModelWeights.load(path: modelPath)

        // Networks come from the prompt only; the negative prompt is encoded as written (A1111).
        let parsed = try A1111Prompt.parse(prompt)
        for warning in parsed.warnings { printWarning(warning.description) }
        let positiveText = parsed.text
        let negativeText = negative
        let context = AdapterContext(registry: registry, models: models)
        var stack = try context.loadLoras(parsed.lorasInA1111Order).map(\.application)
        for hypernetwork in try context.loadHypernetworks(parsed.hypernetworks) {
            printWarning("<hypernet:\(hypernetwork.name):\(hypernetwork.strength)> changes the UNet's cross-attention, not the text encoders; not part of this output")
        }
        for spec in adapters {
            let parsed = try AdapterSpec(parsing: spec)
            stack.append(AdapterApplication(adapter: try registry.load(openAdapterSource(parsed.path)),
                                            weight: parsed.weight, unetWeight: parsed.unetWeight, dynRank: parsed.dynRank))
        }
        var hooks = GenerationHooks(stack: stack)
        var planSummary: String?
        if stack.contains(where: { !$0.adapter.modules.isEmpty }) {
            // Bypass: only the text encoders' layers ask for their terms; nothing is merged.
            let plan = try PatchPlan(model: weights, stack: stack)
            planSummary = plan.report.summary
            hooks.bypass = BypassPatch(plan: plan)
        }
        hooks.embeddings += folders.embeddings(in: models, registry: registry).map(\.embedding)

        let conditioner = try PromptConditioner(
            weights: weights, configDirectory: config, hooks: hooks,
            options: ConditioningOptions(clipSkip: clipSkip, emphasis: mode, commaPaddingBacktrack: commaBacktrack,
                                         padsToEqualLength: !noPad))
        for warning in conditioner.warnings { printWarning(warning) }
        let (cond, uncond) = try conditioner.condition(prompt: positiveText, negative: negativeText)

        var writer = SafeTensorsWriter(metadata: [
            "adapterhost.family": weights.family.rawValue, "adapterhost.prompt": positiveText,
            "adapterhost.negative_prompt": negativeText, "adapterhost.clip_skip": String(clipSkip),
            "adapterhost.emphasis": mode.rawValue, "adapterhost.prompt_tokens": String(cond.tokenCount),
            "adapterhost.negative_prompt_tokens": String(uncond.tokenCount),
        ])
        writer.inputPaths = [modelPath]
        writer.add("cond", tensor: cond.context)
        writer.add("uncond", tensor: uncond.context)
        if let pooled = cond.pooled, let uncondPooled = uncond.pooled {
            writer.add("pooled", tensor: pooled)
            writer.add("uncond_pooled", tensor: uncondPooled)
        }
        try writer.write(to: out)

        let used = Set((cond.chunks + uncond.chunks).flatMap { $0.fixes.map(\.embedding) }).sorted()
        if json {
            var object: [String: Any] = [
                "out": out, "family": weights.family.rawValue, "cond": cond.context.shape, "uncond": uncond.context.shape,
                "prompt_tokens": cond.tokenCount, "negative_prompt_tokens": uncond.tokenCount,
                "prompt_chunks": cond.chunks.count, "negative_prompt_chunks": uncond.chunks.count,
                "embeddings_used": used, "adapters": stack.map(\.adapter.path), "warnings": conditioner.warnings,
            ]
            if let planSummary { object["adapter_modules"] = planSummary }
            if let pooled = cond.pooled { object["pooled"] = pooled.shape }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("\(weights.family.rawValue): prompt \(cond.tokenCount) tokens in \(cond.chunks.count) chunk(s), negative \(uncond.tokenCount) in \(uncond.chunks.count)")
        print("cond \(cond.context.shape), uncond \(uncond.context.shape)" + (cond.pooled.map { ", pooled \($0.shape)" } ?? "") + " → \(out)")
        if !used.isEmpty { print("embeddings used: \(used.joined(separator: ", "))") }
        if !stack.isEmpty {
            let names = stack.map { "\(($0.adapter.path as NSString).lastPathComponent):\($0.textEncoderWeight)" }
            print("adapters: \(names.joined(separator: ", "))" + (planSummary.map { " (\($0); text-encoder layers run in bypass)" } ?? ""))
        }
    }
}

/// One line on stderr.
func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
}
