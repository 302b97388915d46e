/// How an embedding file lays out its vectors, told from its keys alone (claiming happens
/// before any tensor is read). The layouts, as A1111's `EmbeddingDatabase.load_from_file` and
/// diffusers' `load_textual_inversion` accept them:
///
/// - **A1111 / original textual inversion** (`.pt`, `.bin`): `{"string_to_param": {"*": [n, w]},
///   "string_to_token": {"*": 265}, "name", "step", "sd_checkpoint", "sd_checkpoint_name"}`.
///   The original (rinongal) implementation stores `string_to_param` as a `ParameterDict` and
///   `string_to_token` as tensors; both read as `string_to_param.*` / `string_to_token.*`.
///   Exactly one term is allowed.
/// - **SDXL** (kohya sd-scripts, A1111, diffusers' SDXL script): `{"clip_l": [n, 768],
///   "clip_g": [n, 1280]}`, one tensor per text encoder.
/// - **one tensor** — kohya's `{"emb_params": [n, w]}` (`.safetensors` or `.pt`) and diffusers'
///   `learned_embeds.bin` / `.safetensors` `{token: [w] or [n, w]}`: A1111's "diffuser concepts"
///   branch takes any file of exactly one tensor.
///
/// A1111's `.png`/`.webp` embeddings (the data in an image's text chunk or pixels) are not read.
enum EmbeddingLayout: Equatable {
    /// `string_to_param.<term>` (the vectors) and `string_to_token.<term>` keys (ignored).
    case stringToParam(paramKeys: [String], tokenKeys: [String])
    /// `clip_l` and `clip_g`.
    case sdxl
    /// One tensor under `key`: kohya (`emb_params`) or a diffusers token.
    case single(key: String)

    /// The layout of `keys`, or nil when they are no embedding file.
    ///
    /// A single-tensor file is only taken when its key cannot be another method's (no
    /// `.weight`/`.bias`/`alpha`-style module suffix, no LoRA naming), so a one-tensor LoRA or
    /// checkpoint fragment is never mistaken for an embedding.
    static func detect(keys: [String]) -> EmbeddingLayout? {
        let params = keys.filter { $0.hasPrefix("string_to_param.") }
        if !params.isEmpty {
            return .stringToParam(paramKeys: params, tokenKeys: keys.filter { $0.hasPrefix("string_to_token.") })
        }
        if keys.count == 2, Set(keys) == ["clip_l", "clip_g"] { return .sdxl }
        if keys.count == 1, let key = keys.first, looksLikeToken(key) { return .single(key: key) }
        return nil
    }

    /// All keys the layout takes.
    func claimedKeys() -> [String] {
        switch self {
        case let .stringToParam(params, tokens): return params + tokens
        case .sdxl: return ["clip_l", "clip_g"]
        case .single(let key): return [key]
        }
    }

    /// File dialect for reports.
    var format: String {
        switch self {
        case .stringToParam: return "a1111"
        case .sdxl: return "sdxl"
        case .single(let key): return key == "emb_params" ? "kohya" : "diffusers"
        }
    }

    /// A key that can be an embedding's name: not a module tensor of another adapter method
    /// or of a checkpoint.
    private static func looksLikeToken(_ key: String) -> Bool {
        if key == "emb_params" { return true }
        let moduleSuffixes = [".weight", ".bias", ".alpha", ".scale", ".diff", ".diff_b", ".on_input",
                              ".w_norm", ".b_norm", ".oft_blocks", ".oft_diag", ".dora_scale"]
        if moduleSuffixes.contains(where: { key.hasSuffix($0) }) { return false }
        if key.hasPrefix("lora_") || key.hasPrefix("lycoris_") || key.hasPrefix("bundle_emb.") { return false }
        return !key.isEmpty
    }
}
