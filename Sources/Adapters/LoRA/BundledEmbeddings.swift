import Host
import Tensor

/// Textual-inversion embeddings bundled in a LoRA file (kohya/A1111 `bundle_emb.*`):
/// `bundle_emb.NAME.string_to_param.*` (one width, SD1/SD2) or `bundle_emb.NAME.clip_l` /
/// `bundle_emb.NAME.clip_g` (SDXL: one tensor per text encoder). Vectors `[tokens, width]`;
/// a single vector `[width]` is one token.
enum BundledEmbeddings {
    static func load(_ bundle: KeyGrammar.BundledEmbedding, from source: TensorSource) throws -> TokenEmbedding {
        var byWidth: [Int: Tensor] = [:]
        for key in bundle.keys {
            let tail = key.dropFirst("bundle_emb.\(bundle.name)".count)
            guard [".string_to_param.*", ".clip_l", ".clip_g"].contains(tail) else {
                throw LoRAFormatError(file: source.path, module: "bundle_emb.\(bundle.name)",
                                      rule: .badShape(suffix: String(tail.dropFirst()), shape: source.info(key)?.shape ?? [],
                                                      expected: "string_to_param.*, clip_l or clip_g"))
            }
            var t = try source.tensor(key)
            guard t.dtype.isFloatingPoint, t.rank == 1 || t.rank == 2, t.count > 0 else {
                throw LoRAFormatError(file: source.path, module: "bundle_emb.\(bundle.name)",
                                      rule: .badShape(suffix: String(tail.dropFirst()), shape: t.shape, expected: "[tokens, width] floats"))
            }
            if t.rank == 1 { t = t.reshaped([1, t.shape[0]]) }
            let width = t.shape[1]
            guard byWidth[width] == nil else {
                throw LoRAFormatError(file: source.path, module: "bundle_emb.\(bundle.name)",
                                      rule: .badShape(suffix: String(tail.dropFirst()), shape: t.shape, expected: "one tensor per width"))
            }
            byWidth[width] = t.to(.f32)
        }
        return TokenEmbedding(name: bundle.name, vectorsByWidth: byWidth)
    }
}
