/// Text-encoder key renaming, relative to the encoder's prefix on each side.
///
/// - CLIP-L (SD1's encoder, SDXL's first) is stored in single files with Hugging Face names
///   (`cond_stage_model.transformer.text_model.…`), so only the prefix changes.
/// - OpenCLIP (SD2's ViT-H, SDXL's bigG) is stored with open_clip names; diffusers uses a
///   Hugging Face `CLIPTextModel(WithProjection)`: `resblocks.N` ↔ `encoder.layers.N`,
///   `ln_1` ↔ `layer_norm1`, `mlp.c_fc` ↔ `mlp.fc1`, `mlp.c_proj` ↔ `mlp.fc2`, and the fused
///   `attn.in_proj_weight` (q, k, v stacked by rows) ↔ `self_attn.{q,k,v}_proj.weight`.
enum TextEncoderKeyMap {
    /// CLIP-L: Hugging Face names on both sides.
    static let clip: [KeyRule] = [
        KeyRule("text_model.", "text_model."),
    ]

    /// One OpenCLIP residual block's parameters.
    static let openCLIPBlock: [KeyRule] = [
        KeyRule("ln_1.", "layer_norm1."),
        KeyRule("ln_2.", "layer_norm2."),
        KeyRule("mlp.c_fc.", "mlp.fc1."),
        KeyRule("mlp.c_proj.", "mlp.fc2."),
        KeyRule("attn.out_proj.", "self_attn.out_proj."),
        KeyRule("attn.in_proj_weight",
                fused: ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"]),
        KeyRule("attn.in_proj_bias",
                fused: ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]),
    ]

    /// OpenCLIP ↔ Hugging Face CLIP. `withProjection`: SDXL's bigG keeps `text_projection`
    /// (diffusers `CLIPTextModelWithProjection`); SD2's diffusers encoder has no projection,
    /// so there the single file's `text_projection` (and `logit_scale` always) maps to nothing.
    static func openCLIP(withProjection: Bool) -> [KeyRule] {
        var rules = [
            KeyRule("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
            KeyRule("positional_embedding", "text_model.embeddings.position_embedding.weight"),
            KeyRule("ln_final.", "text_model.final_layer_norm."),
            KeyRule("transformer.resblocks.#.", "text_model.encoder.layers.#.", inner: openCLIPBlock,
                    innerRequired: true),
        ]
        if withProjection {
            rules.append(KeyRule("text_projection", "text_projection.weight", weightTransform: .transpose))
        }
        return rules
    }
}
