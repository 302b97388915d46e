import Foundation
import Host
import Tensor

/// One layer an adapter module changes, named independently of any file's dialect.
public struct LoRALayer: Hashable, Sendable, CustomStringConvertible {
    /// UNet or which text encoder.
    public let part: ModelPart
    /// The diffusers component: `unet`, `text_encoder`, `text_encoder_2`.
    public let component: String
    /// The diffusers module path inside the component (`down_blocks.0.attentions.0.proj_in`,
    /// `text_model.encoder.layers.0.self_attn.q_proj`).
    public let path: String
    /// The ldm/sgm module path (UNet only; `input_blocks.1.1.proj_in`), when it has one.
    public let sgmPath: String?
    /// Linear, convolution, ….
    public let kind: LayerKind

    public var description: String { "\(component).\(path)" }
}

/// Translates module names between dialects through a model's layer index (the host's
/// ``TargetIndex``): any name the host resolves (kohya `lora_unet_…`/`lora_te…` in either
/// spelling, PEFT/diffusers `unet.…`, LyCORIS `lycoris_…`, plain ldm) becomes a ``LoRALayer``,
/// which is written back as kohya or PEFT names.
///
/// kohya names follow sd-scripts' networks/lora.py: `lora_unet_` + the diffusers module path
/// with '.' → '_' for SD1/SD2 (its UNet is diffusers-named), + the sgm path for SDXL (its
/// `sdxl_original_unet` is sgm-named); `lora_te_` (SD1/SD2) or `lora_te1_`/`lora_te2_` (SDXL)
/// + the Hugging Face CLIP path (`text_model.encoder.layers.…`). PEFT names are diffusers'
/// `save_lora_weights` keys: `unet.<path>`, `text_encoder.<path>`, `text_encoder_2.<path>`.
public struct LoRANameSpace {
    public let family: ModelFamily
    /// Where the layer index came from (a model path, or the standard layout).
    public let origin: String
    private let index: TargetIndex
    private let map: CheckpointKeyMap
    private let naming: ModelNaming
    private let keys: [String]

    /// The name space of `model` (its own layers: extra or missing blocks are honoured).
    public init(model: ModelWeights) {
        family = model.family
        origin = model.path
        index = model.targetIndex
        naming = model.naming
        keys = model.keys
        map = CheckpointKeyMap(family: model.family,
                               layout: ModelLayout(keys: model.keys, naming: model.naming, family: model.family))
    }

    private static let standardCache: [ModelFamily: LoRANameSpace] = Dictionary(
        uniqueKeysWithValues: ModelFamily.allCases.map { ($0, LoRANameSpace(model: StandardLayout.model(for: $0))) })

    /// The released models' layers for `family` (no checkpoint needed).
    public static func standard(for family: ModelFamily) -> LoRANameSpace { standardCache[family]! }

    /// The layer a module name refers to, or nil when the model has no such layer.
    public func layer(named moduleName: String) -> LoRALayer? {
        index.resolve(moduleName).flatMap(layer(for:))
    }

    /// Every layer of the model, in model order.
    public var allLayers: [LoRALayer] { index.allTargets.compactMap(layer(for:)) }

    /// The target (model tensor) of a layer: its weight key in the model, and rows for fused tensors.
    public func target(of layer: LoRALayer) -> Target? {
        index.resolve("\(layer.component).\(layer.path)")
    }

    /// The layer of one of the model's targets.
    func layer(for target: Target) -> LoRALayer? {
        guard target.part != .vae else { return nil }
        guard let diffusersKey = diffusersWeightKey(target) else { return nil }
        guard let component = ["unet", "text_encoder_2", "text_encoder"].first(where: { diffusersKey.hasPrefix($0 + ".") }) else {
            return nil
        }
        var path = String(diffusersKey.dropFirst(component.count + 1).dropLast(".weight".count))
        if target.part.isTextEncoder, !path.hasPrefix("text_model."), !path.hasPrefix("text_projection") {
            path = "text_model." + path   // transformers ≥ 5.6 trees save without the level
        }
        var sgm: String?
        if target.part == .unet, let single = map.singleFileKey(forDiffusers: "unet.\(path).weight"),
           single.hasPrefix("model.diffusion_model.") {
            sgm = String(single.dropFirst("model.diffusion_model.".count).dropLast(".weight".count))
        }
        return LoRALayer(part: target.part, component: component, path: path, sgmPath: sgm, kind: target.layer)
    }

    /// The diffusers weight key of a target (for a fused OpenCLIP tensor: its row block's).
    private func diffusersWeightKey(_ target: Target) -> String? {
        if naming == .diffusers { return target.weightKey }
        let conversions = map.diffusersKeys(forSingleFile: target.weightKey).filter { $0.key.hasSuffix(".weight") }
        if let rows = target.rows {
            return conversions.first { conversion in
                if case let .fusedRows(index, count) = conversion.transform, count > 0 {
                    return rows.lowerBound == index * rows.count
                }
                return false
            }?.key
        }
        return conversions.count == 1 ? conversions[0].key : nil
    }

    /// kohya's name for `layer` (see the type's documentation).
    public func kohyaName(_ layer: LoRALayer) -> String {
        func underscored(_ s: String) -> String { s.replacingOccurrences(of: ".", with: "_") }
        switch layer.part {
        case .unet:
            if family == .sdxl, let sgm = layer.sgmPath { return "lora_unet_" + underscored(sgm) }
            return "lora_unet_" + underscored(layer.path)
        case .textEncoder(let i):
            let prefix = family.textEncoderCount == 1 ? "lora_te" : "lora_te\(i + 1)"
            return prefix + "_" + underscored(layer.path)
        case .vae:
            return "lora_vae_" + underscored(layer.path)
        }
    }

    /// PEFT's (diffusers') name for `layer`: `<component>.<path>`.
    public func peftName(_ layer: LoRALayer) -> String { "\(layer.component).\(layer.path)" }
}
