/// How the keys of a LoRA-family file split into modules.
///
/// A key is `<module>.<suffix>`; the suffix says what the tensor is (`lora_down.weight`,
/// `hada_w1_a`, `alpha`, …). Every dialect's suffixes are mapped to one canonical spelling, so
/// a module type reads `down`/`up` whether the file says `lora_down.weight` (kohya),
/// `lora_A.weight` (PEFT), `lora.down.weight` / `lora_linear_layer.down.weight` (diffusers) or
/// `processor.to_q_lora.down.weight` (diffusers attention processors).
///
/// Module names are normalised to the target layer's path where a dialect wraps it
/// (`…attn1.processor.to_q_lora` → `…attn1.to_q`, `to_out_lora` → `to_out.0`,
/// `base_model.model.` stripped); kohya and LyCORIS names are kept as written — the host's
/// key maps resolve them.
enum KeyGrammar {
    /// A canonical tensor role within a module.
    enum Role: String, CaseIterable {
        // LoRA (every dialect); `upBias` is PEFT's `lora_B.bias` (LoraConfig(lora_bias=True))
        case up, down, mid, magnitude, upBias = "lora_B.bias"
        // shared
        case alpha, scale, doraScale = "dora_scale"
        // LoHa
        case hadaW1A = "hada_w1_a", hadaW1B = "hada_w1_b", hadaW2A = "hada_w2_a", hadaW2B = "hada_w2_b"
        case hadaT1 = "hada_t1", hadaT2 = "hada_t2"
        // LoKr
        case lokrW1 = "lokr_w1", lokrW1A = "lokr_w1_a", lokrW1B = "lokr_w1_b"
        case lokrW2 = "lokr_w2", lokrW2A = "lokr_w2_a", lokrW2B = "lokr_w2_b", lokrT2 = "lokr_t2"
        // IA3
        case ia3Weight = "weight", onInput = "on_input"
        // OFT / BOFT
        case oftBlocks = "oft_blocks", oftDiag = "oft_diag", rescale
        // GLoRA
        case gloraA1 = "a1.weight", gloraA2 = "a2.weight", gloraB1 = "b1.weight", gloraB2 = "b2.weight"
        case gloraBM = "bm.weight"
        // full
        case diff, diffBias = "diff_b"
        // norm
        case normWeight = "w_norm", normBias = "b_norm"
    }

    /// File suffix → role. Longest suffixes are tried first, so `lora_A.weight` wins over
    /// IA3's bare `weight`.
    static let suffixes: [(suffix: String, role: Role)] = {
        var table: [(String, Role)] = [
            ("lora_up.weight", .up), ("lora_down.weight", .down), ("lora_mid.weight", .mid),
            ("lora_B.weight", .up), ("lora_A.weight", .down),
            ("lora_B.default.weight", .up), ("lora_A.default.weight", .down),
            ("lora.up.weight", .up), ("lora.down.weight", .down),
            ("lora_linear_layer.up.weight", .up), ("lora_linear_layer.down.weight", .down),
            ("lora_magnitude_vector", .magnitude), ("lora_magnitude_vector.weight", .magnitude),
            ("lora_magnitude_vector.default", .magnitude), ("lora_magnitude_vector.default.weight", .magnitude),
            ("lora_B.bias", .upBias), ("lora_B.default.bias", .upBias),
            ("lora.up.bias", .upBias), ("lora_linear_layer.up.bias", .upBias),
        ]
        for role in Role.allCases where ![.up, .down, .mid, .magnitude, .upBias].contains(role) {
            table.append((role.rawValue, role))
        }
        return table.sorted { $0.0.count > $1.0.count }
    }()

    /// One module of a file: its normalised name and its tensors by role.
    struct Module {
        /// The normalised module name (what the host's key maps resolve).
        let name: String
        /// Role → the key in the file.
        var keys: [Role: String] = [:]
        /// Keys in file order (for claims).
        var allKeys: [String] = []

        func has(_ role: Role) -> Bool { keys[role] != nil }
    }

    /// A bundled embedding (`bundle_emb.NAME.…`): its name and keys.
    struct BundledEmbedding {
        let name: String
        var keys: [String] = []
    }

    /// The parse of a file's keys.
    struct Parse {
        /// Modules in order of first appearance.
        var modules: [Module] = []
        /// Bundled embeddings in order of first appearance.
        var embeddings: [BundledEmbedding] = []
    }

    /// Splits `keys` into modules and bundled embeddings; keys that fit no grammar are left out.
    static func parse(_ keys: [String]) -> Parse {
        var parse = Parse()
        var moduleIndex: [String: Int] = [:]
        var embeddingIndex: [String: Int] = [:]
        for key in keys {
            if let embedding = bundledEmbeddingName(key) {
                if let i = embeddingIndex[embedding] {
                    parse.embeddings[i].keys.append(key)
                } else {
                    embeddingIndex[embedding] = parse.embeddings.count
                    parse.embeddings.append(BundledEmbedding(name: embedding, keys: [key]))
                }
                continue
            }
            guard let (rawModule, role) = split(key) else { continue }
            let name = normalisedModuleName(rawModule)
            let i: Int
            if let existing = moduleIndex[name] {
                i = existing
            } else {
                i = parse.modules.count
                moduleIndex[name] = i
                parse.modules.append(Module(name: name))
            }
            // A second key with the same role (e.g. `lora_A.weight` and `lora_A.default.weight`)
            // keeps the first; the other stays unclaimed and is reported.
            if parse.modules[i].keys[role] == nil {
                parse.modules[i].keys[role] = key
                parse.modules[i].allKeys.append(key)
            }
        }
        return parse
    }

    /// `(module, role)` for a key, or nil when no suffix fits.
    static func split(_ key: String) -> (String, Role)? {
        if let processor = splitProcessorKey(key) { return processor }
        for (suffix, role) in suffixes {
            guard key.count > suffix.count + 1, key.hasSuffix(suffix) else { continue }
            let moduleEnd = key.index(key.endIndex, offsetBy: -(suffix.count + 1))
            guard key[moduleEnd] == "." else { continue }
            return (String(key[..<moduleEnd]), role)
        }
        return nil
    }

    /// diffusers' attention-processor LoRA keys: `<attn>[.processor].<proj>_lora.<up|down>.weight`
    /// with `<proj>` one of to_q, to_k, to_v, to_out. The module is the projection layer itself:
    /// `<attn>.to_q` (UNet) — or, in a CLIP text encoder's `self_attn`, `q_proj`/…/`out_proj`.
    static func splitProcessorKey(_ key: String) -> (String, Role)? {
        let role: Role
        let stem: Substring
        if key.hasSuffix("_lora.up.weight") {
            role = .up
            stem = key.dropLast("_lora.up.weight".count)
        } else if key.hasSuffix("_lora.down.weight") {
            role = .down
            stem = key.dropLast("_lora.down.weight".count)
        } else {
            return nil
        }
        guard let dot = stem.lastIndex(of: ".") else { return nil }
        let projection = String(stem[stem.index(after: dot)...])
        var attention = String(stem[..<dot])
        guard ["to_q", "to_k", "to_v", "to_out"].contains(projection) else { return nil }
        if attention.hasSuffix(".processor") { attention.removeLast(".processor".count) }
        let isTextEncoder = attention.hasSuffix("self_attn")
        let layer: String
        switch projection {
        case "to_q": layer = isTextEncoder ? "q_proj" : "to_q"
        case "to_k": layer = isTextEncoder ? "k_proj" : "to_k"
        case "to_v": layer = isTextEncoder ? "v_proj" : "to_v"
        default: layer = isTextEncoder ? "out_proj" : "to_out.0"
        }
        return ("\(attention).\(layer)", role)
    }

    /// PEFT's `base_model.model.` wrapper prefix removed; a bare CLIP path (`text_model.…`)
    /// gets the `text_encoder.` component it belongs to.
    static func normalisedModuleName(_ raw: String) -> String {
        var name = raw
        if name.hasPrefix("base_model.model.") { name.removeFirst("base_model.model.".count) }
        if name.hasPrefix("text_model.") { name = "text_encoder." + name }
        return name
    }

    /// NAME for `bundle_emb.NAME.string_to_param.*` and `bundle_emb.NAME.clip_l|clip_g`.
    static func bundledEmbeddingName(_ key: String) -> String? {
        guard key.hasPrefix("bundle_emb.") else { return nil }
        let rest = key.dropFirst("bundle_emb.".count)
        for tail in [".string_to_param.*", ".clip_l", ".clip_g"] where rest.hasSuffix(tail) && rest.count > tail.count {
            return String(rest.dropLast(tail.count))
        }
        // Any other bundle_emb form: name up to the first dot (still claimed, then rejected at load).
        guard let dot = rest.firstIndex(of: ".") else { return String(rest) }
        return String(rest[..<dot])
    }
}
