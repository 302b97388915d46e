import Foundation
import Host
import Tensor

/// Rewrites a LoRA in another dialect without changing any delta: the factors are copied bit
/// for bit (dtype kept; only reshaped between `[r, in]` and `[r, in, 1, 1]` where the target
/// layer's type needs it), names are translated through the model layout, and each module's
/// scale is carried: kohya alpha = scale · rank ↔ PEFT `lora_alpha` (with `rank_pattern` /
/// `alpha_pattern` where modules differ), so `lora_alpha / r` — or rsLoRA's `lora_alpha / √r`
/// read from a PEFT file — is exactly the scale the input had.
///
/// (diffusers' `convert_state_dict_to_kohya` writes alpha = rank, silently changing the
/// scale of every module whose alpha was not its rank; this does not.)
///
/// DoRA on LoRA/LoCon factors is carried too: kohya/LyCORIS `dora_scale` per output channel
/// (`[out, 1]`, `[out, 1, 1, 1]`: LyCORIS ≥ 2.2's `wd_on_out`) ↔ PEFT `lora_magnitude_vector`
/// (`[out]` for linear, `[1, out, 1, 1]` for conv layers: PEFT's DoRA norm is always per
/// output). The magnitudes are the same values, only reshaped, so the merged weights are
/// equal. Per-input `dora_scale` (`[1, in, …]`, older LyCORIS files) has no PEFT form and is
/// refused when writing PEFT.
///
/// Only LoRA/LoCon modules (with or without DoRA) can be converted: PEFT has no
/// LoHa/LoKr/Tucker form (and a PEFT `lora_B.bias` no kohya one); anything else is refused by
/// file, module and rule.
public enum LoRAConversion {
    public struct Result {
        public let tensors: [(String, Tensor)]
        public let metadata: [String: String]
        /// Modules converted.
        public let modules: Int
    }

    public static func convert(_ input: LoRAOperationInput, to format: LoRAOutputFormat, names: LoRANameSpace?) throws -> Result {
        var output = LoRAOutput()
        var ranks: [Int] = [], alphas: [Double] = []
        for module in input.adapter.modules {
            let (f, magnitude) = try convertible(module, input: input, to: format)
            let id = try ModuleIdentity.of(module, in: input, names: names)
            output.modules.append(OutputModule(layer: id.layer, rawName: module.name, up: f.up, down: f.down,
                                               alpha: f.kohyaAlpha, magnitude: magnitude))
            ranks.append(f.rank)
            alphas.append(f.kohyaAlpha)
        }
        guard !output.modules.isEmpty else { throw LoRAOperationError(file: input.path, reason: "no LoRA module to convert") }
        output.extraTensors = try input.embeddingKeys.map { ($0, try input.source.tensor(named: $0)) }
        let (tensors, formatMetadata) = try output.render(format: format, names: names, file: input.path)
        var metadata = LoRAMetadataBuilder.carried(input.adapter.metadata, to: format)
        metadata.merge(formatMetadata) { _, new in new }
        switch format {
        case .kohya:
            let network = LoRAMetadataBuilder.kohyaNetwork(family: names?.family ?? input.adapter.baseModel,
                                                           dim: LoRAMetadataBuilder.dimString(ranks),
                                                           alpha: LoRAMetadataBuilder.alphaString(alphas))
            // The factors are plain LoRA now, whatever network wrote them.
            metadata["ss_network_module"] = "networks.lora"
            metadata["ss_network_dim"] = network["ss_network_dim"]
            metadata["ss_network_alpha"] = network["ss_network_alpha"]
            for key in ["ss_base_model_version", "ss_v2"] where metadata[key] == nil { metadata[key] = network[key] }
        case .peft:
            for key in metadata.keys where key.hasPrefix("ss_network_") { metadata[key] = nil }
        }
        if metadata["modelspec.architecture"] == nil, let family = names?.family ?? input.adapter.baseModel {
            let title = (input.fileName as NSString).deletingPathExtension
            metadata.merge(LoRAMetadataBuilder.modelSpec(family: family, title: title)) { old, _ in old }
        }
        return Result(tensors: tensors, metadata: metadata, modules: output.modules.count)
    }

    /// The module's LoRA factors and, for DoRA, its per-output magnitudes (flattened, dtype
    /// kept); a module with no form in `format` is refused by file, module and rule.
    static func convertible(_ module: any AdapterModule, input: LoRAOperationInput,
                            to format: LoRAOutputFormat) throws -> (LoRAFactors, magnitude: Tensor?) {
        func refuse(_ what: String, _ rule: String) -> LoRAOperationError {
            LoRAOperationError(file: input.path, module: module.name,
                reason: "\(what) \(rule); convert rewrites LoRA/LoCon factors (with DoRA magnitudes) only — "
                    + "turn it into LoRA factors first with `adapterhost resize --rank R` or `adapterhost combine --mode svd`")
        }
        let target = format == .peft ? "PEFT" : "kohya"
        if let dora = module as? DoRAModule {
            guard let lora = dora.inner as? LoRAModule, lora.mid == nil, lora.upBias == nil else {
                let inner = (dora.inner as? LoRAModule)?.mid != nil ? "a Tucker LoRA (lora_mid) module with DoRA" : "a \(module.moduleType) module"
                // resize/combine cannot help here: DoRA's renormalisation needs the base weight.
                throw LoRAOperationError(file: input.path, module: module.name,
                    reason: "\(inner) has no \(target) LoRA form; convert rewrites LoRA/LoCon factors (with DoRA magnitudes) only, "
                        + "and its DoRA magnitudes depend on the base weight, so resize/combine cannot turn it into LoRA factors either")
            }
            // Per output: PEFT's only axis and LyCORIS's `wd_on_out`. An undeclared axis (a
            // 1-D or all-ones magnitude) is per output when its length is the up factor's.
            let perOutput = dora.declaredAxis == .output
                || (dora.declaredAxis == nil && dora.magnitude.count == lora.up.shape[0])
            guard perOutput else {
                if format == .kohya {
                    throw refuse("a DoRA module with per-input magnitudes", "cannot be rewritten (only per-output dora_scale is carried)")
                }
                throw refuse("a DoRA module with per-input magnitudes (dora_scale [1, in, …])",
                             "has no PEFT form (lora_magnitude_vector is per output)")
            }
            guard dora.magnitude.count == lora.up.shape[0] else {
                throw LoRAOperationError(file: input.path, module: module.name,
                    reason: "DoRA magnitude has \(dora.magnitude.count) entries for \(lora.up.shape[0]) outputs")
            }
            return (LoRAFactors(up: lora.up, down: lora.down, scale: lora.scale), dora.magnitude)
        }
        guard case .factors(let f) = input.content(module) else {
            let what: String
            if let lora = module as? LoRAModule, lora.mid != nil {
                what = "a Tucker LoRA (lora_mid) module"
            } else if let lora = module as? LoRAModule, lora.upBias != nil {
                throw LoRAOperationError(file: input.path, module: module.name,
                    reason: "a LoRA module with a bias delta (PEFT lora_B.bias): convert does not carry biases (kohya LoRA has no form for them); refusing to drop it")
            } else {
                what = "a \(module.moduleType) module"
            }
            throw refuse(what, "has no \(target) LoRA form")
        }
        return (f, nil)
    }
}
