import Foundation
import Host
import Tensor

/// What a LoRA-family file says about itself as a whole: its dialect, the base model it was
/// made for, and the per-module alpha/rank configuration that dialect keeps outside the module.
struct FileTraits {
    /// "kohya", "peft", "diffusers" or "lycoris".
    let format: String
    /// The family the file was made for, when it can be told.
    let baseModel: ModelFamily?
    /// PEFT configuration(s) from `lora_adapter_metadata`, by component prefix ("" when the
    /// config is not per component).
    let peftConfigs: [String: PEFTConfig]
    /// kohya metadata asks for rank-stabilised scaling (alpha/√r) and the file's alphas are
    /// stored unadjusted (see `init`).
    let kohyaRSLoRA: Bool

    /// A PEFT `LoraConfig`, the parts that set a module's scale.
    struct PEFTConfig {
        var alpha: Double?
        var rank: Int?
        var alphaPattern: [(pattern: String, value: Double)] = []
        var rankPattern: [(pattern: String, value: Int)] = []
        var useRSLoRA = false
    }

    init(source: TensorSource, parse: KeyGrammar.Parse) throws {
        let keys = source.keys
        let metadata = source.metadata
        format = FileTraits.detectFormat(keys: keys, metadata: metadata)
        peftConfigs = try FileTraits.peftConfigs(metadata: metadata, file: source.path)
        // LyCORIS's kohya wrapper records `rs_lora` in ss_network_args but already stores
        // alpha·√r/… so that alpha/rank in the file IS the rsLoRA scale (lycoris/modules/locon.py:
        // `alpha * (lora_dim / r_factor)`); applying √r again would double it. Only a kohya file
        // from another network module is taken to need the adjustment.
        let networkModule = metadata["ss_network_module"] ?? ""
        let args = FileTraits.jsonObject(metadata["ss_network_args"]) ?? [:]
        kohyaRSLoRA = FileTraits.truthy(args["rs_lora"] ?? args["use_rslora"]) && !networkModule.contains("lycoris")
        baseModel = FileTraits.detectBaseModel(source: source, parse: parse)
    }

    // MARK: Scale

    /// alpha/rank for a module of this file: the module's own `alpha` tensor when it has one
    /// (A1111, ComfyUI and kohya use each module's own alpha), else the PEFT config's
    /// alpha_pattern/lora_alpha, else none (scale 1). rsLoRA divides by √rank instead.
    func loraScale(module: String, storedAlpha: Double?, rank: Int) -> (alpha: Double?, scale: Double) {
        var alpha = storedAlpha
        var rsLoRA = kohyaRSLoRA
        if let (config, path) = peftConfig(for: module) {
            if alpha == nil {
                alpha = config.alphaPattern.first { FileTraits.peftPatternMatches($0.pattern, path) }?.value
                    ?? config.alpha
            }
            rsLoRA = config.useRSLoRA
        }
        guard let alpha else { return (nil, 1) }
        let divisor = rsLoRA ? Double(rank).squareRoot() : Double(rank)
        return (alpha, alpha / divisor)
    }

    /// The PEFT config for `module` and the module's path inside its component.
    func peftConfig(for module: String) -> (PEFTConfig, String)? {
        if peftConfigs.isEmpty { return nil }
        for component in ["text_encoder_2", "text_encoder", "unet", "transformer"] {
            if module.hasPrefix(component + "."), let config = peftConfigs[component] {
                return (config, String(module.dropFirst(component.count + 1)))
            }
        }
        if let config = peftConfigs[""] { return (config, module) }
        return nil
    }

    /// PEFT's `get_pattern_key`: `re.match(rf"(.*\.)?({pattern})$", path)`.
    static func peftPatternMatches(_ pattern: String, _ path: String) -> Bool {
        guard let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(pattern))$") else { return pattern == path }
        let range = NSRange(path.startIndex..., in: path)
        return regex.firstMatch(in: path, range: range) != nil
    }

    // MARK: Format

    static func detectFormat(keys: [String], metadata: [String: String]) -> String {
        let lycorisSuffixes = [".hada_w1_a", ".hada_w1_b", ".lokr_w1", ".lokr_w1_a", ".lokr_w2", ".lokr_w2_a",
                               ".oft_blocks", ".oft_diag", ".on_input", ".diff", ".w_norm", ".a1.weight", ".dora_scale"]
        if keys.contains(where: { $0.contains(".lora_A.") || $0.contains(".lora_B.") || $0.contains("lora_magnitude_vector") }) {
            return "peft"
        }
        if keys.contains(where: { $0.contains(".lora.down.") || $0.contains(".lora_linear_layer.") || $0.contains("_lora.down.") }) {
            return "diffusers"
        }
        if (metadata["ss_network_module"] ?? "").contains("lycoris")
            || keys.contains(where: { $0.hasPrefix("lycoris_") })
            || keys.contains(where: { key in lycorisSuffixes.contains { key.hasSuffix($0) } }) {
            return "lycoris"
        }
        return "kohya"
    }

    // MARK: Base model

    /// From metadata (`ss_base_model_version`, `ss_v2`, `modelspec.architecture`), then key
    /// structure (two text encoders, or SDXL's sgm UNet names), then the width of the
    /// cross-attention context — only when it is a real family's width.
    static func detectBaseModel(source: TensorSource, parse: KeyGrammar.Parse) -> ModelFamily? {
        let metadata = source.metadata
        if let version = metadata["ss_base_model_version"]?.lowercased() {
            if version.hasPrefix("sdxl") { return .sdxl }
            if version.hasPrefix("sd_v2") || version.hasPrefix("sd_2") { return .sd2 }
            if version.hasPrefix("sd_v1") || version.hasPrefix("sd_1") { return .sd1 }
        }
        if metadata["ss_v2"] == "True" { return .sd2 }
        if let architecture = metadata["modelspec.architecture"]?.lowercased() {
            if architecture.hasPrefix("stable-diffusion-xl") { return .sdxl }
            if architecture.hasPrefix("stable-diffusion-v2") { return .sd2 }
            if architecture.hasPrefix("stable-diffusion-v1") { return .sd1 }
        }
        let names = parse.modules.map(\.name)
        // A second text encoder, or kohya's sgm spelling of the UNet, is SDXL. `lora_te1_`
        // alone is not enough: diffusers' `convert_state_dict_to_kohya` writes `lora_te1_` for
        // SD1's single text encoder too.
        if names.contains(where: { $0.hasPrefix("lora_te2_") || $0.hasPrefix("text_encoder_2.")
            || $0.hasPrefix("lora_unet_input_blocks_") || $0.hasPrefix("lora_unet_output_blocks_")
            || $0.hasPrefix("lora_unet_middle_block_") }) {
            return .sdxl
        }
        if let width = contextWidth(source: source, parse: parse) {
            return ModelFamily.allCases.first { $0.contextWidth == width }
        }
        return nil
    }

    /// The input width of a cross-attention key projection (attn2 to_k), read from the
    /// factor whose second axis is that layer's input.
    static func contextWidth(source: TensorSource, parse: KeyGrammar.Parse) -> Int? {
        for module in parse.modules {
            let n = module.name
            guard n.hasSuffix("attn2_to_k") || n.hasSuffix("attn2.to_k") else { continue }
            for role in [KeyGrammar.Role.down, .hadaW1B] {
                if let key = module.keys[role], let info = source.info(key), info.shape.count >= 2 {
                    return info.shape[1]
                }
            }
        }
        return nil
    }

    // MARK: Metadata parsing

    /// `lora_adapter_metadata` (diffusers ≥ 0.35: one JSON object whose keys are
    /// `<component>.<LoraConfig field>`, or a plain LoraConfig, or one object per component).
    static func peftConfigs(metadata: [String: String], file: String) throws -> [String: PEFTConfig] {
        guard let text = metadata["lora_adapter_metadata"] else { return [:] }
        guard let object = jsonObject(text) else {
            throw LoRAFormatError(file: file, module: "", rule: .badMetadata(key: "lora_adapter_metadata", reason: "not a JSON object"))
        }
        var flat: [String: [String: Any]] = [:]
        for (key, value) in object {
            if let nested = value as? [String: Any], ["unet", "text_encoder", "text_encoder_2", "transformer"].contains(key) {
                flat[key, default: [:]].merge(nested) { a, _ in a }
            } else if let dot = key.firstIndex(of: "."),
                      ["unet", "text_encoder", "text_encoder_2", "transformer"].contains(String(key[..<dot])) {
                flat[String(key[..<dot]), default: [:]][String(key[key.index(after: dot)...])] = value
            } else {
                flat["", default: [:]][key] = value
            }
        }
        var configs: [String: PEFTConfig] = [:]
        for (component, fields) in flat {
            var config = PEFTConfig()
            config.alpha = number(fields["lora_alpha"])
            config.rank = number(fields["r"]).map { Int($0) }
            config.useRSLoRA = truthy(fields["use_rslora"])
            if let pattern = fields["alpha_pattern"] as? [String: Any] {
                config.alphaPattern = pattern.compactMap { k, v in number(v).map { (k, $0) } }.sorted { $0.0 < $1.0 }
            }
            if let pattern = fields["rank_pattern"] as? [String: Any] {
                config.rankPattern = pattern.compactMap { k, v in number(v).map { (k, Int($0)) } }.sorted { $0.0 < $1.0 }
            }
            // A component entry without any scale field (e.g. only "format") is not a config.
            if config.alpha != nil || config.rank != nil || !config.alphaPattern.isEmpty || config.useRSLoRA {
                configs[component] = config
            }
        }
        return configs
    }

    static func jsonObject(_ text: String?) -> [String: Any]? {
        guard let data = text?.data(using: .utf8) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    static func number(_ value: Any?) -> Double? {
        switch value {
        case let n as NSNumber: return n.doubleValue
        case let s as String: return Double(s)
        default: return nil
        }
    }

    static func truthy(_ value: Any?) -> Bool {
        switch value {
        case let b as Bool: return b
        case let n as NSNumber: return n.boolValue
        case let s as String: return ["true", "1", "yes"].contains(s.lowercased())
        default: return false
        }
    }
}
