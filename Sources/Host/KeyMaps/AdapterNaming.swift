/// The module-name dialects adapter files use, as templates over one layer's names.
///
/// Placeholders (a template needing one the layer lacks is skipped):
/// - `{d}` diffusers module path in its component (`down_blocks.0.attentions.0.proj_in`,
///   `text_model.encoder.layers.0.self_attn.q_proj`), `{d_}` the same with '.' → '_'
/// - `{f}`/`{f_}` text encoders only: the path without `text_model.` (transformers ≥ 5.6 trees)
/// - `{s}`/`{s_}` UNet only: the ldm/sgm module path (`input_blocks.1.1.proj_in`)
/// - `{c}` diffusers component (`unet`, `text_encoder`, `text_encoder_2`, `vae`)
/// - `{k}` kohya prefix (`lora_unet`, `lora_te` for SD1/SD2's encoder, `lora_te1`/`lora_te2`
///   for SDXL's), `{kl}` the same with `lycoris` for `lora`
/// - `{sf}` the single-file weight key without `.weight`; `{df}` the diffusers one
///
/// Sources: sd-scripts networks/lora.py (`lora_name = prefix + "." + name + "." + child_name`,
/// '.' → '_', over diffusers-named modules for SD1/SD2 and over sdxl_original_unet's sgm-named
/// modules for SDXL — both spellings are accepted for every family, as ComfyUI does); PEFT /
/// diffusers `save_lora_weights` (`unet.…`, `text_encoder.…`, also without `unet.`); LyCORIS's
/// standalone wrapper (`lycoris_` + module path, as SimpleTuner writes; for a text encoder
/// that only names the encoder when the family has one) and its kohya network
/// (kohya names); ComfyUI's plain ldm form (`diffusion_model.` + sgm path).
enum AdapterNaming {
    struct Template {
        let text: String
        /// Only for families with a single text encoder (bare names cannot say which one).
        var singleTextEncoderOnly = false
    }

    static let unet: [Template] = [
        Template(text: "{k}_{d_}"), Template(text: "{k}_{s_}"),
        Template(text: "{kl}_{d_}"), Template(text: "{kl}_{s_}"),
        Template(text: "lycoris_{d_}"), Template(text: "lycoris_{s_}"),
        Template(text: "{c}.{d}"), Template(text: "{d}"),
        Template(text: "diffusion_model.{s}"), Template(text: "{sf}"), Template(text: "{df}"),
    ]

    static let textEncoder: [Template] = [
        Template(text: "{k}_{d_}"), Template(text: "{k}_{f_}"),
        Template(text: "{kl}_{d_}"), Template(text: "{kl}_{f_}"),
        Template(text: "lycoris_{d_}", singleTextEncoderOnly: true),
        Template(text: "lycoris_{f_}", singleTextEncoderOnly: true),
        Template(text: "{c}.{d}"), Template(text: "{c}.{f}"),
        Template(text: "{sf}"), Template(text: "{df}"),
    ]

    static let vae: [Template] = [
        Template(text: "{c}.{d}"), Template(text: "{sf}"), Template(text: "{df}"),
    ]

    /// kohya prefix per part.
    static func kohyaPrefix(_ part: ModelPart, family: ModelFamily) -> String? {
        switch part {
        case .unet: return "lora_unet"
        case .textEncoder(let i): return family.textEncoderCount == 1 ? "lora_te" : "lora_te\(i + 1)"
        case .vae: return nil
        }
    }

    /// The names one layer answers to.
    static func names(part: ModelPart, family: ModelFamily, component: String, diffusersPath: String?,
                      sgmPath: String?, singleFileStem: String?, diffusersStem: String?) -> [String] {
        var values: [String: String] = ["c": component]
        if let diffusersPath { values["d"] = diffusersPath }
        if let diffusersStem { values["df"] = diffusersStem }
        if let kohya = kohyaPrefix(part, family: family) {
            values["k"] = kohya
            values["kl"] = "lycoris" + kohya.dropFirst("lora".count)
        }
        if part.isTextEncoder, let path = diffusersPath, path.hasPrefix("text_model.") {
            values["f"] = String(path.dropFirst("text_model.".count))
        }
        if let sgmPath { values["s"] = sgmPath }
        if let singleFileStem { values["sf"] = singleFileStem }

        let templates: [Template]
        switch part {
        case .unet: templates = unet
        case .textEncoder: templates = textEncoder
        case .vae: templates = vae
        }
        var names: [String] = []
        for template in templates {
            if template.singleTextEncoderOnly && family.textEncoderCount > 1 { continue }
            if let name = fill(template.text, values) { names.append(name) }
        }
        return names
    }

    /// `template` with its placeholders filled, nil when one has no value. `{x_}` is `{x}`
    /// with '.' → '_'.
    static func fill(_ template: String, _ values: [String: String]) -> String? {
        var out = ""
        var rest = template[...]
        while let open = rest.firstIndex(of: "{") {
            out += rest[..<open]
            guard let close = rest[open...].firstIndex(of: "}") else { return nil }
            var name = rest[rest.index(after: open)..<close]
            let underscored = name.hasSuffix("_")
            if underscored { name = name.dropLast() }
            guard let value = values[String(name)] else { return nil }
            out += underscored ? String(value.map { $0 == "." ? "_" : $0 }) : value
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }
}
