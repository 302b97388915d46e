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
/// Only LoRA/LoCon modules can be converted (PEFT has no LoHa/LoKr/Tucker/DoRA form in
/// these files); anything else is refused by name.
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
            guard case .factors(let f) = input.content(module) else {
                let what = (module as? LoRAModule)?.mid != nil ? "a Tucker LoRA (lora_mid) module" : "a \(module.moduleType) module"
                throw LoRAOperationError(file: input.path, module: module.name,
                    reason: "\(what): convert rewrites LoRA/LoCon factors only (resize or combine --mode svd can turn other types into LoRA factors)")
            }
            let id = try ModuleIdentity.of(module, in: input, names: names)
            output.modules.append(OutputModule(layer: id.layer, rawName: module.name, up: f.up, down: f.down, alpha: f.kohyaAlpha))
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
}
