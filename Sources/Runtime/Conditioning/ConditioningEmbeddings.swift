import Host
import Tensor

/// Textual-inversion embeddings prepared for a model's text encoders: the chunker's
/// vocabulary (names → how many token positions) and the vectors per encoder width.
///
/// A1111 semantics: an embedding is used wherever its name (file stem) appears in a prompt,
/// takes as many positions as it has vectors, carries the emphasis of the text around it and
/// is moved whole to the next 75-token chunk when it does not fit.
///
/// Widths: an embedding needs vectors of at least one encoder's width, else it is not
/// registered (its name stays ordinary prompt text, as A1111 skips embeddings of another
/// model's shape). On SDXL an embedding with only CLIP-L vectors (an SD1 embedding) is used on
/// CLIP-L and skipped on bigG, whose positions keep the placeholder token's embedding (the
/// way ComfyUI treats a width mismatch); a warning says so. The position count is that of the
/// last encoder with vectors (SDXL: `clip_g`, as A1111 counts).
struct ConditioningEmbeddings {
    private(set) var vocabulary = EmbeddingVocabulary()
    /// F32 vectors [count, width] by name and width.
    private(set) var vectors: [String: [Int: Tensor]] = [:]
    /// Why an embedding (or one of its widths) is not used.
    private(set) var warnings: [String] = []

    /// Registers `embeddings` for encoders of `widths` (in encoder order).
    init(_ embeddings: [TokenEmbedding], widths: [Int], tokenizer: CLIPTokenizer) {
        for embedding in embeddings {
            let name = embedding.name
            if vectors[name] != nil {
                warnings.append("embedding '\(name)' is given twice; the first one is used")
                continue
            }
            let usable = embedding.vectorsByWidth.filter { widths.contains($0.key) && $0.value.rank == 2 && $0.value.shape[0] > 0 }
            let offered = embedding.vectorsByWidth.keys.sorted()
            guard let countWidth = widths.last(where: { usable[$0] != nil }) else {
                warnings.append("embedding '\(name)' has vectors of width \(offered), the model's encoders need \(widths): not loaded, its name stays prompt text")
                continue
            }
            for width in widths where usable[width] == nil {
                warnings.append("embedding '\(name)' has no vectors of width \(width) (widths \(offered)): skipped on that encoder")
            }
            vectors[name] = usable.mapValues { $0.contiguousF32 }
            vocabulary.register(name: name, vectorCount: usable[countWidth]!.shape[0], tokenizer: tokenizer)
        }
    }

    /// The vectors of `name` for an encoder of `width`, or nil.
    func vectors(_ name: String, width: Int) -> Tensor? { vectors[name]?[width] }

    /// Whether any embedding is registered.
    var isEmpty: Bool { vectors.isEmpty }
}
