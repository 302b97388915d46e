import Foundation
import Host
import Tensor

extension StableDiffusionPipeline {
    /// Generates one image as A1111's txt2img does.
    ///
    /// 1. The prompt's extra-network tags are read by Host's A1111 parser (`A1111Prompt.parse`;
    ///    its warnings — unusual LoRA weights, unknown tag types — go to `warnings`) and taken
    ///    out of the text. The negative prompt is left as it is: A1111 reads networks from the
    ///    prompt only (`processing.py` parses `p.prompts`), so a tag there is encoded as words.
    /// 2. `<lora:…>`/`<lyco:…>` networks are resolved in `adapters.models`, loaded through
    ///    `adapters.registry` and applied at their weights in A1111's order: merged (patched into
    ///    the weights, restored before returning, also on errors) or bypass (added at run time).
    ///    `<hypernet:NAME:STRENGTH>` networks become context transforms of the UNet's attention,
    ///    chained in prompt order. `adapters.embeddings` are available to both prompts by name.
    /// 3. The prompt and negative prompt are encoded (`PromptConditioner`, clip skip, emphasis).
    /// 4. The start noise is the seed's `A1111ImageNoise` (CPU RNG), or `startNoise` (any tensor
    ///    of C·(H/8)·(W/8) elements); the seed's generator is advanced past the start noise either
    ///    way, so Euler a's later noise is A1111's.
    /// 5. The sampler runs with classifier-free guidance (`sampleLatents`).
    /// 6. The VAE decodes (when the model has one) and the 8-bit image is made as A1111 does.
    ///
    /// `hooks`: more run-time adapters from the caller (added to the prompt's). `version`: the
    /// infotext's "Version" field. `progress(done, total)` is called after each sampling step.
    public func generate(_ parameters: GenerationParameters, adapters: AdapterContext? = nil,
                         hooks extraHooks: GenerationHooks = .none, startNoise: Tensor? = nil,
                         version: String? = nil, progress: ((Int, Int) -> Void)? = nil) throws -> GenerationResult {
        var timings = GenerationTimings()
        var warnings = self.warnings
        var clock = Date()
        func lap() -> Double {
            let now = Date()
            defer { clock = now }
            return now.timeIntervalSince(clock)
        }

        let parsed = try A1111Prompt.parse(parameters.prompt)
        warnings += parsed.warnings.map(\.description)
        let negativeText = parameters.negativePrompt // tags there are words (A1111)
        let loraNetworks = parsed.lorasInA1111Order, hypernetNetworks = parsed.hypernetworks
        var loras: [LoadedLora] = []
        var hypernetworks: [LoadedHypernetwork] = []
        if let adapters {
            loras = try adapters.loadLoras(loraNetworks)
            hypernetworks = try adapters.loadHypernetworks(hypernetNetworks)
        } else if let first = (loraNetworks + hypernetNetworks).first, let name = first.name {
            throw PipelineError.noNetworkFolder(kind: loraNetworks.isEmpty ? "hypernetwork" : "LoRA", name: name)
        }

        // Apply the stack; merged patches are undone whatever happens next.
        var hooks = extraHooks
        hooks.contextTransforms += hypernetworks.flatMap(\.contextTransforms)
        hooks.embeddings += adapters?.embeddings.map(\.embedding) ?? []
        var report: PatchReport?
        var engine: PatchEngine?
        defer { engine?.restore() }
        if let adapters, !(loras.isEmpty && adapters.additional.isEmpty) {
            let stack = loras.map(\.application) + adapters.additional
            let plan = try PatchPlan(model: model, stack: stack, force: adapters.forceBaseMismatch)
            report = plan.report
            let stackHooks: GenerationHooks
            switch adapters.mode {
            case .merged:
                let patcher = PatchEngine(model: model)
                engine = patcher
                try patcher.apply(plan)
                stackHooks = GenerationHooks(stack: stack, bypass: nil)
            case .bypass:
                stackHooks = GenerationHooks(stack: stack, bypass: BypassPatch(plan: plan))
            }
            hooks = hooks.merged(with: stackHooks)
            for skipped in plan.report.skipped { warnings.append("skipped \(skipped)") }
            for (adapter, keys) in plan.report.unclaimedKeys {
                warnings.append("\(adapter): \(keys.count) keys no adapter method understood, e.g. \(keys.prefix(3).joined(separator: ", "))")
            }
        }
        timings.adapters = lap()

        var embeddingsUsed: [String] = []
        let latents = try sampleLatents(prompt: parsed.text, negativePrompt: negativeText,
                                        parameters: parameters, hooks: hooks, startNoise: startNoise,
                                        timings: &timings, warnings: &warnings, embeddingsUsed: &embeddingsUsed,
                                        progress: progress)
        _ = lap()

        var decoded: Tensor?
        var image: RGBImage?
        if let vae {
            let pixels = try vae.decode(latents, hooks: hooks)
            decoded = pixels
            image = RGBImage(decoded: pixels)
        }
        timings.decoding = lap()

        let settings = InfotextSettings(
            prompt: parameters.prompt, negativePrompt: parameters.negativePrompt, steps: parameters.steps,
            sampler: parameters.sampler, cfgScale: parameters.cfgScale, seed: parameters.seed,
            width: parameters.width, height: parameters.height, modelHash: try modelHash(), modelName: modelName,
            // A1111 records the setting whatever the model (SD2/SDXL ignore it while encoding).
            clipSkip: parameters.clipSkip, etaNoiseSeedDelta: parameters.etaNoiseSeedDelta,
            loraHashes: Self.infotextLoraHashes(loras),
            textualInversionHashes: try Self.infotextEmbeddingHashes(embeddingsUsed, available: adapters?.embeddings ?? []),
            version: version)
        return GenerationResult(latents: latents, decoded: decoded, image: image, infotext: settings.infotext,
                                loras: loras, hypernetworks: hypernetworks, embeddingsUsed: embeddingsUsed,
                                patchReport: report, warnings: warnings, timings: timings)
    }

    /// "Lora hashes" entries as A1111 builds them: a dictionary keyed by the mentioned name
    /// without ':' and ',', so a LoRA named twice is listed once, at its first position.
    static func infotextLoraHashes(_ loras: [LoadedLora]) -> [(name: String, hash: String)] {
        var seen = Set<String>()
        return loras.compactMap { lora in
            let key = lora.name.filter { $0 != ":" && $0 != "," }
            return seen.insert(key).inserted ? (name: key, hash: lora.shortHash) : nil
        }
    }

    /// "TI hashes" entries as A1111 builds them (`sd_hijack_clip`): per used embedding (the
    /// prompt's, then the negative prompt's, as `used` lists them) its name without ':' and ','
    /// and the first 12 hex digits of its file's SHA-256. Embeddings given only as hooks (no
    /// file in `available`) have no hash and are left out, as A1111 leaves out hashless ones.
    static func infotextEmbeddingHashes(_ used: [String], available: [LoadedEmbedding]) throws -> [(name: String, hash: String)] {
        var paths: [String: String] = [:]
        for loaded in available { paths[loaded.embedding.name] = loaded.path }
        var hashes: [String: String] = [:]
        return try used.compactMap { name in
            guard let path = paths[name] else { return nil }
            if hashes[path] == nil { hashes[path] = try EmbeddingHash.shortHash(path: path) }
            return (name: name.filter { $0 != ":" && $0 != "," }, hash: hashes[path]!)
        }
    }

    /// Conditioning and sampling only: the final latents [1, C, H/8, W/8] for `prompt` (extra
    /// network tags already removed) and `negativePrompt`, with `hooks` applied as given.
    public func sampleLatents(prompt: String, negativePrompt: String, parameters: GenerationParameters,
                              hooks: GenerationHooks = .none, startNoise: Tensor? = nil,
                              progress: ((Int, Int) -> Void)? = nil) throws -> Tensor {
        var timings = GenerationTimings()
        var warnings: [String] = []
        var embeddingsUsed: [String] = []
        return try sampleLatents(prompt: prompt, negativePrompt: negativePrompt, parameters: parameters, hooks: hooks,
                                 startNoise: startNoise, timings: &timings, warnings: &warnings,
                                 embeddingsUsed: &embeddingsUsed, progress: progress)
    }

    func sampleLatents(prompt: String, negativePrompt: String, parameters: GenerationParameters,
                       hooks: GenerationHooks, startNoise: Tensor?, timings: inout GenerationTimings,
                       warnings: inout [String], embeddingsUsed: inout [String],
                       progress: ((Int, Int) -> Void)?) throws -> Tensor {
        try validate(parameters)
        var clock = Date()
        let options = ConditioningOptions(clipSkip: parameters.clipSkip, padsToEqualLength: false)
        let conditioner = try PromptConditioner(family: family, encoders: textEncoders, hooks: hooks, options: options,
                                                tokenizer: tokenizer)
        let (cond, uncond) = try conditioner.condition(prompt: prompt, negative: negativePrompt)
        warnings += conditioner.warnings
        for conditioning in [cond, uncond] {
            var seen = Set<String>()
            embeddingsUsed += conditioning.chunks.flatMap { $0.fixes.map(\.embedding) }.filter { seen.insert($0).inserted }
        }
        let guided = GuidedUNet(unet: unet, cond: cond, uncond: uncond, hooks: hooks,
                                timeIDs: family == .sdxl ? [parameters.height, parameters.width, 0, 0,
                                                            parameters.height, parameters.width] : nil)
        timings.conditioning = Date().timeIntervalSince(clock)
        clock = Date()

        // A1111's ImageRNG: the first draw is the start noise, later ones Euler a's noise.
        let shape = [unet.inChannels, parameters.height / 8, parameters.width / 8]
        var noise = A1111ImageNoise(seeds: [parameters.seed], shape: shape,
                                    etaNoiseSeedDelta: parameters.etaNoiseSeedDelta)
        let seeded = noise.next()
        let start: Tensor
        if let startNoise {
            guard startNoise.count == shape.reduce(1, *), startNoise.dtype.isFloatingPoint else {
                throw PipelineError.badNoise(path: "--noise", reason: "a \(startNoise.dtype.rawValue) tensor of shape \(startNoise.shape) is not the latent noise [1, \(shape.map(String.init).joined(separator: ", "))]")
            }
            start = startNoise.to(.f32).contiguous().reshaped([1] + shape)
        } else {
            start = seeded
        }

        let scale = parameters.cfgScale
        let latents: Tensor
        if let sigmas = parameters.sampler.sigmas(steps: parameters.steps, schedule: schedule) {
            let total = sigmas.count - 1
            let callback: SamplerCallback = { step, _, _ in progress?(step + 1, total) }
            let inner = CompVisDenoiser(schedule: schedule, prediction: prediction).denoiser { scaled, t in
                try guided.outputs(scaled, timestep: t)
            }
            // CFGDenoiser: cond and uncond in one batch, guidance on the denoised estimates.
            let denoiser: Denoiser = { x, sigma in
                let both = try inner(Tensor.concat([x, x], axis: 0), sigma)
                return classifierFreeGuidance(cond: both.row(0), uncond: both.row(1), scale: scale)
            }
            // KDiffusionSampler.sample: x = noise · σ₀.
            let x = start.scaled(by: Double(sigmas[0]))
            switch parameters.sampler {
            case .euler:
                latents = try KDiffusionSampler.euler(denoiser, x: x, sigmas: sigmas, callback: callback)
            case .eulerAncestral:
                latents = try KDiffusionSampler.eulerAncestral(denoiser, x: x, sigmas: sigmas, eta: parameters.ancestralEta,
                                                               noise: { noise.next() }, callback: callback)
            case .dpmpp2M, .dpmpp2MKarras:
                latents = try KDiffusionSampler.dpmpp2M(denoiser, x: x, sigmas: sigmas, callback: callback)
            case .ddim:
                preconditionFailure("DDIM has no σ list")   // `sigmas(steps:)` is nil for it
            }
        } else {
            let timesteps = A1111DDIM.timesteps(steps: parameters.steps, trainingSteps: schedule.count)
            let total = timesteps.count - 1
            let schedule = self.schedule, prediction = self.prediction
            let model: A1111DDIM.EpsilonModel = { x, t in
                let doubled = Tensor.concat([x, x], axis: 0)
                var out = try guided.outputs(doubled, timestep: Float(t))
                // CompVisTimestepsVDenoiser: ε from v per branch, before guidance.
                if prediction == .v { out = schedule.epsilon(fromV: out, x: doubled, timestep: t) }
                return classifierFreeGuidance(cond: out.row(0), uncond: out.row(1), scale: scale)
            }
            latents = try A1111DDIM.sample(model, x: start, timesteps: timesteps, schedule: schedule,
                                           callback: { step, _, _ in progress?(step + 1, total) })
        }
        timings.sampling = Date().timeIntervalSince(clock)
        return latents
    }

    /// Throws for settings A1111 would not run.
    func validate(_ p: GenerationParameters) throws {
        guard p.steps >= 1, p.steps <= 10_000 else {
            throw PipelineError.badParameter(setting: "--steps", reason: "\(p.steps) is not between 1 and 10000")
        }
        guard p.cfgScale.isFinite else { throw PipelineError.badParameter(setting: "--cfg", reason: "\(p.cfgScale) is not finite") }
        let multiple = sizeMultiple
        for (name, value) in [("--width", p.width), ("--height", p.height)] {
            guard value >= multiple, value % multiple == 0 else {
                throw PipelineError.badParameter(setting: name, reason: "\(value) is not a positive multiple of \(multiple) (8 per latent pixel × \(multiple / 8) for this UNet's \(unet.levels - 1) downsamplings)")
            }
        }
        guard p.clipSkip >= 1, p.clipSkip <= textEncoders[0].configuration.layerCount else {
            throw PipelineError.badParameter(setting: "--clip-skip", reason: "\(p.clipSkip) is not between 1 and the encoder's \(textEncoders[0].configuration.layerCount) layers")
        }
    }
}

/// The UNet evaluated on [cond; uncond] at once, as A1111's CFGDenoiser batches them: one call
/// when both conditionings have the same token length, two otherwise (A1111's default, without
/// "pad prompt/negative prompt").
struct GuidedUNet {
    let unet: UNet
    let hooks: GenerationHooks
    /// [2, T, W] when cond and uncond have equal lengths.
    let stackedContext: Tensor?
    let contexts: (cond: Tensor, uncond: Tensor)
    /// SDXL's added conditioning for [cond; uncond] and for each alone.
    let added: SDXLConditioning?
    let addedEach: (cond: SDXLConditioning, uncond: SDXLConditioning)?

    init(unet: UNet, cond: PromptConditioning, uncond: PromptConditioning, hooks: GenerationHooks, timeIDs: [Int]?) {
        self.unet = unet
        self.hooks = hooks
        let c = cond.context.unsqueezed(0), u = uncond.context.unsqueezed(0)
        contexts = (c, u)
        stackedContext = c.shape == u.shape ? Tensor.concat([c, u], axis: 0) : nil
        if let timeIDs, let pooledCond = cond.pooled, let pooledUncond = uncond.pooled {
            let ids = Tensor(shape: [1, 6], values: timeIDs.map(Float.init))
            let one = SDXLConditioning(textEmbeds: pooledCond.unsqueezed(0), timeIDs: ids)
            let other = SDXLConditioning(textEmbeds: pooledUncond.unsqueezed(0), timeIDs: ids)
            addedEach = (one, other)
            added = SDXLConditioning(textEmbeds: Tensor.concat([one.textEmbeds, other.textEmbeds], axis: 0),
                                     timeIDs: Tensor.concat([ids, ids], axis: 0))
        } else {
            addedEach = nil
            added = nil
        }
    }

    /// The UNet's output for `x` [2, C, h, w] (row 0 conditioned on the prompt, row 1 on the
    /// negative prompt) at one timestep.
    func outputs(_ x: Tensor, timestep: Float) throws -> Tensor {
        if let stackedContext {
            return try unet(x, timestep: timestep, context: stackedContext, added: added, hooks: hooks)
        }
        let cond = try unet(x.row(0), timestep: timestep, context: contexts.cond, added: addedEach?.cond, hooks: hooks)
        let uncond = try unet(x.row(1), timestep: timestep, context: contexts.uncond, added: addedEach?.uncond, hooks: hooks)
        return Tensor.concat([cond, uncond], axis: 0)
    }
}

extension Tensor {
    /// Batch row `index` of a [B, …] tensor as a contiguous [1, …] tensor.
    func row(_ index: Int) -> Tensor { sliced(axis: 0, index..<index + 1).contiguous() }
}

extension GenerationHooks {
    /// These hooks plus `other`'s: `other`'s bypass when this has none, transforms and
    /// embeddings appended.
    func merged(with other: GenerationHooks) -> GenerationHooks {
        GenerationHooks(bypass: bypass ?? other.bypass, contextTransforms: contextTransforms + other.contextTransforms,
                        embeddings: embeddings + other.embeddings)
    }
}
