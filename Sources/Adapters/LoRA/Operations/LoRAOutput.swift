import Foundation
import Host
import Tensor

/// The dialect an operation writes.
public enum LoRAOutputFormat: String, CaseIterable, Sendable {
    /// kohya sd-scripts: `lora_unet_…`/`lora_te…` + `.lora_down.weight`, `.lora_up.weight`,
    /// `.alpha` (scale = alpha / rank). What A1111, ComfyUI and kohya's scripts read natively.
    case kohya
    /// PEFT as diffusers saves it: `unet.…`/`text_encoder.…` + `.lora_A.weight` (down),
    /// `.lora_B.weight` (up); scale = lora_alpha / r from `lora_adapter_metadata`.
    case peft
}

/// One module to write: its layer (or its name as read, when no model layout is known), its
/// factors and the alpha that makes its scale (kohya: scale = alpha / rank).
struct OutputModule {
    let layer: LoRALayer?
    let rawName: String
    var up: Tensor
    var down: Tensor
    var alpha: Double
    /// DoRA magnitudes per output channel (flattened, dtype kept), written as kohya
    /// `dora_scale` or PEFT `lora_magnitude_vector`; nil for plain LoRA.
    var magnitude: Tensor? = nil
    var rank: Int { down.shape[0] }
}

/// Turns modules into a file's tensors and metadata in either dialect.
struct LoRAOutput {
    var modules: [OutputModule] = []
    /// Tensors copied as they are (bundled embeddings).
    var extraTensors: [(String, Tensor)] = []

    /// The tensors in `format`, and the metadata the format needs (`lora_adapter_metadata` for PEFT).
    func render(format: LoRAOutputFormat, names: LoRANameSpace?, file: String) throws -> (tensors: [(String, Tensor)], metadata: [String: String]) {
        var tensors: [(String, Tensor)] = []
        var seen = Set<String>()
        var peftModules: [(component: String, path: String, rank: Int, alpha: Double, dora: Bool)] = []
        for module in modules {
            let (up, down) = shaped(module)
            let isConv = down.rank == 4
            let out = up.shape[0]
            switch format {
            case .kohya:
                let name: String
                if let layer = module.layer, let names {
                    name = names.kohyaName(layer)
                } else if module.rawName.hasPrefix("lora_") || module.rawName.hasPrefix("lycoris_") {
                    name = module.rawName
                } else {
                    throw LoRAOperationError(file: file, module: module.rawName,
                        reason: "no kohya name for this module without a model layout (give --model BASE or --family)")
                }
                guard seen.insert(name).inserted else {
                    throw LoRAOperationError(file: file, module: module.rawName, reason: "two modules would both be written as \(name)")
                }
                tensors += [("\(name).lora_down.weight", down), ("\(name).lora_up.weight", up),
                            ("\(name).alpha", Tensor(shape: [], values: [Float(module.alpha)]))]
                if let m = module.magnitude {
                    // LyCORIS's per-output `dora_scale`: [out, 1] / [out, 1, 1, 1].
                    tensors.append(("\(name).dora_scale", m.reshaped(isConv ? [out, 1, 1, 1] : [out, 1])))
                }
            case .peft:
                guard let layer = module.layer, let names else {
                    throw LoRAOperationError(file: file, module: module.rawName,
                        reason: "PEFT names need the model layout (give --model BASE or --family)")
                }
                let name = names.peftName(layer)
                guard seen.insert(name).inserted else {
                    throw LoRAOperationError(file: file, module: module.rawName, reason: "two modules would both be written as \(name)")
                }
                tensors += [("\(name).lora_A.weight", down), ("\(name).lora_B.weight", up)]
                if let m = module.magnitude {
                    // PEFT's DoRA magnitude: [out] (Linear), [1, out, 1, 1] (Conv2d, its norm transposed).
                    tensors.append(("\(name).lora_magnitude_vector", m.reshaped(isConv ? [1, out, 1, 1] : [out])))
                }
                peftModules.append((layer.component, layer.path, module.rank, module.alpha, module.magnitude != nil))
            }
        }
        tensors += extraTensors
        var metadata: [String: String] = [:]
        if format == .peft { metadata = ["format": "pt", "lora_adapter_metadata": try Self.peftMetadata(peftModules, file: file)] }
        return (tensors, metadata)
    }

    /// Factor shapes the target layer type expects: 4-D for convolutions (PEFT's Conv2d
    /// LoRA, kohya's LoCon), 2-D for linear layers (a 1×1 conv-shaped factor is squeezed).
    private func shaped(_ m: OutputModule) -> (up: Tensor, down: Tensor) {
        let r = m.rank
        guard let kind = m.layer?.kind else { return (m.up, m.down) }
        switch kind {
        case .conv2d:
            let up = m.up.rank == 4 ? m.up : m.up.reshaped([m.up.shape[0], r, 1, 1])
            let down = m.down.rank == 4 ? m.down : m.down.reshaped([r, m.down.shape[1], 1, 1])
            return (up, down)
        case .linear:
            let up = m.up.rank == 4 ? m.up.reshaped([m.up.shape[0], r]) : m.up
            let down = m.down.rank == 4 && m.down.shape[2] == 1 && m.down.shape[3] == 1 ? m.down.reshaped([r, m.down.shape[1]]) : m.down
            return (up, down)
        case .norm, .embedding:
            return (m.up, m.down)
        }
    }

    /// diffusers' `lora_adapter_metadata`: per component `<component>.<LoraConfig field>`
    /// with `r` and `lora_alpha` the most common values, `rank_pattern`/`alpha_pattern` for the
    /// modules that differ (keyed by full module path, matched by PEFT as `(.*\.)?(path)$`),
    /// and `target_modules`.
    ///
    /// Text-encoder paths are written without their `text_model.` level in the config (the
    /// tensor keys keep it): transformers ≥ 5.6 builds `CLIPTextModel` without that level, and
    /// PEFT matches `target_modules` and patterns as suffixes, so `encoder.layers.0.…` names the
    /// layer under both layouts while `text_model.encoder.…` would match only the old one
    /// (measured with transformers 5.24 + diffusers 0.42: tools/check_peft_export.py).
    /// `use_dora` is one flag per component in PEFT: a component where only some modules
    /// have DoRA magnitudes cannot be written.
    static func peftMetadata(_ modules: [(component: String, path: String, rank: Int, alpha: Double, dora: Bool)],
                             file: String = "") throws -> String {
        var object: [String: Any] = [:]
        let relaxed = modules.map { m -> (component: String, path: String, rank: Int, alpha: Double, dora: Bool) in
            let path = m.component.hasPrefix("text_encoder") && m.path.hasPrefix("text_model.")
                ? String(m.path.dropFirst("text_model.".count)) : m.path
            return (m.component, path, m.rank, m.alpha, m.dora)
        }
        let byComponent = Dictionary(grouping: relaxed, by: \.component)
        for (component, list) in byComponent {
            let r = mostCommon(list.map(\.rank))
            let alpha = mostCommon(list.filter { $0.rank == r }.map(\.alpha))
            var rankPattern: [String: Any] = [:], alphaPattern: [String: Any] = [:]
            for m in list {
                if m.rank != r { rankPattern[m.path] = m.rank }
                if m.alpha != alpha { alphaPattern[m.path] = jsonNumber(m.alpha) }
            }
            object["\(component).r"] = r
            object["\(component).lora_alpha"] = jsonNumber(alpha)
            object["\(component).rank_pattern"] = rankPattern
            object["\(component).alpha_pattern"] = alphaPattern
            object["\(component).target_modules"] = list.map(\.path).sorted()
            object["\(component).use_rslora"] = false
            let dora = list.filter(\.dora)
            if !dora.isEmpty, dora.count != list.count {
                throw LoRAOperationError(file: file, module: dora[0].path,
                    reason: "PEFT's use_dora is one flag per component, and \(dora.count) of \(list.count) \(component) modules have DoRA magnitudes")
            }
            object["\(component).use_dora"] = !dora.isEmpty
            object["\(component).lora_dropout"] = 0.0
            object["\(component).bias"] = "none"
            object["\(component).init_lora_weights"] = true
        }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }

    /// Most frequent value; ties go to the first seen.
    static func mostCommon<T: Hashable>(_ values: [T]) -> T {
        var counts: [T: Int] = [:]
        for v in values { counts[v, default: 0] += 1 }
        let top = counts.values.max() ?? 0
        return values.first { counts[$0] == top }!
    }

    /// Whole numbers as JSON integers (LoraConfig's `lora_alpha` is an int in PEFT's
    /// signature), others as doubles.
    static func jsonNumber(_ x: Double) -> Any {
        x == x.rounded() && abs(x) < 1e15 ? Int(x) as Any : x as Any
    }
}
