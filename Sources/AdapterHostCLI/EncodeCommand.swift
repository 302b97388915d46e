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
        <lora:NAME:TE[:UNET][:dyn=N]> and <lyco:…> tags are taken out of both prompts; NAME is \
        looked up in --lora-dir (NAME.safetensors, .pt, .ckpt, searched recursively) and applied to \
        the text encoders at weight TE, in bypass mode (the checkpoint is only read). Embeddings: \
        every file of --embeddings-dir, used by file name. Clip skip applies to SD1 only (A1111 \
        ignores it for SD2 and SDXL). By default the shorter of cond/uncond is padded with the \
        empty prompt's conditioning (A1111's "pad prompt/negative prompt to be same length"); on \
        SDXL an empty negative prompt gives zeros.
        """
    )

    @Option(help: "The checkpoint (.safetensors single file or diffusers folder).") var model: String
    @Option(help: "The prompt.") var prompt: String
    @Option(help: "The negative prompt.") var negative: String = ""
    @Option(help: "Where <lora:NAME:…> tags find NAME.") var loraDir: String?
    @Option(help: "Textual-inversion embeddings to load (every file; prompt name = file name).") var embeddingsDir: String?
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
        let (registry, failures) = makeRegistry(pluginDir: pluginDir ?? defaultPluginDir(besideFile: model))
        reportPluginFailures(failures)
        let weights = try ModelWeights.load(path: model)

        let (positiveText, positiveTags) = stripExtraNetworkTags(prompt)
        let (negativeText, negativeTags) = stripExtraNetworkTags(negative)
        var stack: [AdapterApplication] = []
        for tag in positiveTags + negativeTags {
            switch tag.name {
            case "lora", "lyco":
                stack.append(try loraApplication(tag, registry: registry))
            default:
                printWarning("<\(tag.name):\(tag.arguments.joined(separator: ":"))> does not change the text encoders; ignored")
            }
        }
        for spec in adapters {
            let parsed = try AdapterSpec(parsing: spec)
            stack.append(AdapterApplication(adapter: try registry.load(openTensorSource(parsed.path)),
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
        if let embeddingsDir { hooks.embeddings += try loadEmbeddings(directory: embeddingsDir, registry: registry) }

        let conditioner = try PromptConditioner(
            weights: weights, hooks: hooks,
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
        writer.inputPaths = [model]
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

    /// `<lora:NAME:TE[:UNET[:DYN]]>` with A1111's named forms `te=`, `unet=`, `dyn=`.
    private func loraApplication(_ tag: ExtraNetworkTag, registry: AdapterRegistry) throws -> AdapterApplication {
        let positional = tag.positional, named = tag.named
        guard let name = positional.first, !name.isEmpty else {
            throw ValidationError("<\(tag.name):…> without a network name")
        }
        guard let loraDir else { throw ValidationError("<\(tag.name):\(name)…> needs --lora-dir") }
        func number(_ text: String?) throws -> Float? {
            guard let text else { return nil }
            guard let value = Float(text) else { throw ValidationError("<\(tag.name):\(name)…>: '\(text)' is not a number") }
            return value
        }
        var te = try number(positional.count > 1 ? positional[1] : nil) ?? 1
        te = try number(named["te"]) ?? te
        var unet = try number(positional.count > 2 ? positional[2] : nil) ?? te
        unet = try number(named["unet"]) ?? unet
        let dyn = try number(named["dyn"] ?? (positional.count > 3 ? positional[3] : nil)).map { Int($0) }
        guard let path = findNetwork(named: name, in: loraDir) else {
            throw ValidationError("<\(tag.name):\(name)…>: no \(name).safetensors/.pt/.ckpt in \(loraDir)")
        }
        return AdapterApplication(adapter: try registry.load(openTensorSource(path)), weight: te, unetWeight: unet,
                                  dynRank: dyn)
    }
}

/// The first file under `directory` (recursively, in sorted order) whose name without its
/// extension is `name`, with an adapter extension.
func findNetwork(named name: String, in directory: String) -> String? {
    let extensions = ["safetensors", "pt", "ckpt"]
    guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return nil }
    let files = (enumerator.allObjects as? [String] ?? []).sorted()
    for ext in extensions {
        if let match = files.first(where: {
            let url = URL(fileURLWithPath: $0)
            return url.pathExtension.lowercased() == ext && url.deletingPathExtension().lastPathComponent == name
        }) {
            return (directory as NSString).appendingPathComponent(match)
        }
    }
    return nil
}

/// A tensor file by its extension: safetensors, or a PyTorch pickle (`.pt`, `.ckpt`, `.bin`, `.pth`).
func openTensorSource(_ path: String) throws -> TensorSource {
    path.lowercased().hasSuffix(".safetensors") ? try SafeTensorsFile(path: path) : try TorchFile(path: path)
}

/// Every textual-inversion embedding in `directory` (recursively; files that are no embedding
/// are reported on stderr and skipped, as A1111 skips them).
func loadEmbeddings(directory: String, registry: AdapterRegistry) throws -> [TokenEmbedding] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw ValidationError("--embeddings-dir \(directory) is not a directory")
    }
    let enumerator = FileManager.default.enumerator(atPath: directory)
    let files = (enumerator?.allObjects as? [String] ?? []).filter {
        ["safetensors", "pt", "bin"].contains(URL(fileURLWithPath: $0).pathExtension.lowercased())
    }.sorted()
    var embeddings: [TokenEmbedding] = []
    for file in files {
        let path = (directory as NSString).appendingPathComponent(file)
        do {
            let adapter = try registry.load(openTensorSource(path))
            if adapter.embeddings.isEmpty { printWarning("\(path): no embedding in it; skipped") }
            embeddings += adapter.embeddings
        } catch {
            printWarning("\(path): \(error); skipped")
        }
    }
    return embeddings
}

/// One line on stderr.
func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
}
