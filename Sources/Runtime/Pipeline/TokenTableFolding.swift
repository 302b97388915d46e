import Host
import Tensor

/// Test models with a toy vocabulary.
///
/// Every released SD text encoder has CLIP's 49408 token rows. Tiny random-init test models
/// (the ones shipped in `models/default` and the test fixtures) have a few dozen, so the CLIP
/// tokenizer's ids do not index them. Rather than refusing every prompt, the runtime reads such
/// a model as if its table were repeated: id i uses row i mod rows. That is exactly
/// "fold the ids modulo the table size", which is what the conformance fixtures feed the peer
/// encoders. Models with a full table are never touched.
enum TokenTableFolding {
    /// `model` itself when every token table is full; otherwise a model whose short tables are
    /// repeated to CLIP's vocabulary size (all other tensors are the same views), and one
    /// warning per folded table.
    static func foldedIfNeeded(_ model: ModelWeights) throws -> (model: ModelWeights, warnings: [String]) {
        let resolver = WeightKeyResolver(model: model)
        var replacements: [String: Tensor] = [:]
        var warnings: [String] = []
        for index in 0..<model.family.textEncoderCount {
            let prefix = index == 0 ? "text_encoder." : "text_encoder_\(index + 1)."
            let key = prefix + "text_model.embeddings.token_embedding.weight"
            guard let conversion = resolver.resolve(key), conversion.transform == .identity,
                  let table = model.tensor(conversion.key), table.rank == 2,
                  table.shape[0] > 0, table.shape[0] < CLIPTokenizer.vocabularySize else { continue }
            replacements[conversion.key] = repeatedRows(table, to: CLIPTokenizer.vocabularySize)
            warnings.append("text encoder \(index + 1) has a toy vocabulary of \(table.shape[0]) tokens (a test model): "
                            + "CLIP token id i reads its row i mod \(table.shape[0])")
        }
        if replacements.isEmpty { return (model, []) }
        var tensors: [String: Tensor] = [:]
        for key in model.keys { tensors[key] = replacements[key] ?? model.tensor(key) }
        let folded = ModelWeights(path: model.path, keys: model.keys, tensors: tensors, naming: model.naming,
                                  family: model.family)
        return (folded, warnings)
    }

    /// `table` [r, w] repeated to [rows, w] (row i = table[i mod r]), same dtype, bytes copied.
    static func repeatedRows(_ table: Tensor, to rows: Int) -> Tensor {
        let source = table.contiguous()
        let rowBytes = source.shape[1] * source.dtype.byteSize
        let out = Tensor(uninitialized: [rows, source.shape[1]], dtype: source.dtype)
        withExtendedLifetime(source) {
            for row in 0..<rows {
                (out.baseAddress + row * rowBytes).copyMemory(
                    from: source.baseAddress + (row % source.shape[0]) * rowBytes, byteCount: rowBytes)
            }
        }
        return out
    }
}
