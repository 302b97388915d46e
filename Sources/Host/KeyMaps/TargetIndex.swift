/// Every name adapters use for a model's layers, resolved to the model's tensors.
///
/// Built once per model from its own keys (so tiny and real models, single files and
/// diffusers folders, inpainting UNets all index the same way): each weight is taken to its
/// diffusers module path (and, for the UNet, its ldm/sgm path) through ``CheckpointKeyMap``,
/// and registered under every dialect of ``AdapterNaming``: kohya `lora_unet_…` (diffusers
/// and sgm spellings), `lora_te_…`, `lora_te1_…`/`lora_te2_…`; PEFT/diffusers
/// `unet.…`/`text_encoder.…`/`text_encoder_2.…` (also without `unet.`, and text-encoder
/// paths without `text_model.`); LyCORIS `lycoris_…`; plain ldm `diffusion_model.…`; and the
/// model's own keys without `.weight`.
///
/// OpenCLIP's q/k/v (`self_attn.q_proj` …) resolve to the fused `in_proj_weight` with `rows`
/// set to their third. OpenCLIP's `text_projection` is stored transposed in single files and
/// is not a target there. Old diffusers forms (`…attn1.processor.to_q_lora`) are normalised
/// by the LoRA method before lookup, not here.
public struct TargetIndex {
    private var byName: [String: Target] = [:]
    /// Every target, in model key order (a fused tensor's row blocks in q, k, v order).
    public private(set) var allTargets: [Target] = []
    /// Names two different layers produced (kept for the first); empty for SD models.
    public private(set) var conflictingNames: [String] = []

    /// Number of distinct targets.
    public var count: Int { allTargets.count }
    /// Number of names that resolve.
    public var nameCount: Int { byName.count }

    /// Indexes `model`.
    public init(model: ModelWeights) {
        let layout = ModelLayout(keys: model.keys, naming: model.naming, family: model.family)
        let map = CheckpointKeyMap(family: model.family, layout: layout)
        for key in model.keys {
            guard let shape = model.tensor(key)?.shape else { continue }
            switch model.naming {
            case .singleFile:
                let conversions = map.diffusersKeys(forSingleFile: key)
                if conversions.isEmpty, key.hasSuffix(".weight") {
                    addSingleFileOnly(key: key, shape: shape, model: model, map: map)
                }
                for conversion in conversions where conversion.key.hasSuffix(".weight") {
                    // Stored transposed: an adapter's delta would need transposing; not a target.
                    if conversion.transform == .transpose { continue }
                    add(singleFileKey: key, diffusersKey: conversion.key, transform: conversion.transform,
                        shape: shape, model: model, map: map)
                }
            case .diffusers:
                guard key.hasSuffix(".weight"), let conversion = map.singleFileConversion(forDiffusers: key) else {
                    if key.hasSuffix(".weight") { addDiffusersOnly(key: key, shape: shape, model: model, map: map) }
                    continue
                }
                add(diffusersKey: key, single: conversion, shape: shape, model: model, map: map)
            }
        }
    }

    /// The target an adapter module name refers to, or nil when the model has no such layer.
    public func resolve(_ moduleName: String) -> Target? {
        if let target = byName[moduleName] { return target }
        // PEFT models saved whole carry their wrapper's prefix.
        for wrapper in ["base_model.model."] where moduleName.hasPrefix(wrapper) {
            return byName[String(moduleName.dropFirst(wrapper.count))]
        }
        return nil
    }

    // MARK: Building

    /// A single-file weight (or one row block of a fused one).
    private mutating func add(singleFileKey key: String, diffusersKey: String, transform: KeyTransform,
                              shape: [Int], model: ModelWeights, map: CheckpointKeyMap) {
        guard let component = map.component(ofDiffusersKey: diffusersKey) else { return }
        let path = String(diffusersKey.dropFirst(component.diffusersPrefix.count).dropLast(".weight".count))
        var rows: Range<Int>?
        if case let .fusedRows(index, count) = transform {
            // Shape checked here, where the split is made: equal blocks of rows.
            guard shape.count >= 1, shape[0] % count == 0 else { return }
            let size = shape[0] / count
            rows = index * size..<(index + 1) * size
        }
        guard let layer = LayerKindRules.kind(part: component.part, diffusersPath: path, shape: shape) else { return }
        let biasKey = map.singleFileKey(forDiffusers: component.diffusersPrefix + path + ".bias")
            .flatMap { model.tensor($0) != nil ? $0 : nil }
        let target = Target(weightKey: key, biasKey: biasKey, rows: rows, part: component.part, layer: layer)
        let singleStem = key.hasSuffix(".weight") && rows == nil ? String(key.dropLast(".weight".count)) : nil
        let sgm = component.part == .unet ? singleStem.map { String($0.dropFirst(component.singleFilePrefix.count)) } : nil
        register(target, names: AdapterNaming.names(
            part: component.part, family: model.family, component: String(component.diffusersPrefix.dropLast()),
            diffusersPath: path, sgmPath: sgm, singleFileStem: singleStem,
            diffusersStem: component.diffusersPrefix + path))
    }

    /// A diffusers weight with its single-file counterpart (for the sgm spelling).
    private mutating func add(diffusersKey key: String, single: KeyConversion, shape: [Int], model: ModelWeights,
                              map: CheckpointKeyMap) {
        guard let component = map.component(ofDiffusersKey: key) else { return }
        let path = canonicalPath(key, component)
        guard let layer = LayerKindRules.kind(part: component.part, diffusersPath: path, shape: shape) else { return }
        let stem = String(key.dropLast(".weight".count))
        let biasKey = model.tensor(stem + ".bias") != nil ? stem + ".bias" : nil
        let target = Target(weightKey: key, biasKey: biasKey, rows: nil, part: component.part, layer: layer)
        let plain = single.transform == .identity || single.transform == .conv1x1
        let singleStem = plain && single.key.hasSuffix(".weight") ? String(single.key.dropLast(".weight".count)) : nil
        let sgm = component.part == .unet ? singleStem.map { String($0.dropFirst(component.singleFilePrefix.count)) } : nil
        register(target, names: AdapterNaming.names(
            part: component.part, family: model.family, component: String(component.diffusersPrefix.dropLast()),
            diffusersPath: path, sgmPath: sgm, singleFileStem: singleStem,
            diffusersStem: component.diffusersPrefix + path))
    }

    /// A diffusers weight without a single-file counterpart (e.g. SDXL's `text_projection`
    /// in a diffusers model, SD2's extra layers): diffusers names only.
    private mutating func addDiffusersOnly(key: String, shape: [Int], model: ModelWeights, map: CheckpointKeyMap) {
        guard let component = map.component(ofDiffusersKey: key) else { return }
        let path = canonicalPath(key, component)
        guard let layer = LayerKindRules.kind(part: component.part, diffusersPath: path, shape: shape) else { return }
        let stem = String(key.dropLast(".weight".count))
        let biasKey = model.tensor(stem + ".bias") != nil ? stem + ".bias" : nil
        register(Target(weightKey: key, biasKey: biasKey, rows: nil, part: component.part, layer: layer),
                 names: AdapterNaming.names(
                    part: component.part, family: model.family, component: String(component.diffusersPrefix.dropLast()),
                    diffusersPath: path, sgmPath: nil, singleFileStem: nil, diffusersStem: component.diffusersPrefix + path))
    }

    /// A single-file weight inside a component that no rule knows (a UNet with extra layers):
    /// the names built from its own key only (sgm spellings for the UNet, the key itself).
    private mutating func addSingleFileOnly(key: String, shape: [Int], model: ModelWeights, map: CheckpointKeyMap) {
        guard let component = map.component(ofSingleFileKey: key) else { return }
        let stem = String(key.dropLast(".weight".count))
        let path = String(stem.dropFirst(component.singleFilePrefix.count))
        // The conv table is keyed by diffusers paths; an unknown layer gets the default rule.
        guard let layer = LayerKindRules.kind(part: component.part, diffusersPath: path, shape: shape) else { return }
        let biasKey = model.tensor(stem + ".bias") != nil ? stem + ".bias" : nil
        register(Target(weightKey: key, biasKey: biasKey, rows: nil, part: component.part, layer: layer),
                 names: AdapterNaming.names(
                    part: component.part, family: model.family, component: String(component.diffusersPrefix.dropLast()),
                    diffusersPath: nil, sgmPath: component.part == .unet ? path : nil, singleFileStem: stem,
                    diffusersStem: nil))
    }

    /// The module path of a diffusers weight key, with `text_model.` for text encoders saved
    /// by transformers ≥ 5.6 without it.
    private func canonicalPath(_ key: String, _ component: ComponentKeyMap) -> String {
        var path = String(key.dropFirst(component.diffusersPrefix.count).dropLast(".weight".count))
        if component.text != nil, !path.hasPrefix("text_model."), !path.hasPrefix("text_projection") {
            path = "text_model." + path
        }
        return path
    }

    private mutating func register(_ target: Target, names: [String]) {
        allTargets.append(target)
        for name in names {
            if let existing = byName[name] {
                if existing != target { conflictingNames.append(name) }
                continue
            }
            byName[name] = target
        }
    }
}
