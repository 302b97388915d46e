import Foundation
import Host
import Tensor
import TorchPickle

/// Registers the "textual-inversion" method (prompt names = file stems, as A1111).
public func registerTextualInversion(into registry: AdapterRegistry) throws {
    try registry.register(TextualInversionMethod())
}

/// Textual Inversion: a file of learned token vectors (see ``EmbeddingLayout`` for the
/// formats). Loading gives an `Adapter` with one `TokenEmbedding` and no weight modules:
/// `vectorsByWidth` is `[width: [n, width]]` (SD1: 768, SD2: 1024) or, for SDXL,
/// `[768: clip_l, 1280: clip_g]`, F32.
///
/// The name a prompt uses: A1111 names an embedding after its file (`name, ext =
/// os.path.splitext(filename)`), whatever the `name` stored inside, so that is the default.
/// The stored name (A1111's `name` field, or a diffusers file's token such as `<cat-toy>`)
/// is kept in the adapter's metadata under `textual_inversion.internal_name`, and
/// ``Naming/internalName`` uses it instead.
///
/// Embeddings bundled in LoRA files (`bundle_emb.*`) are the LoRA method's.
public final class TextualInversionMethod: AdapterMethod {
    /// Which name the embedding answers to in prompts.
    public enum Naming: Sendable {
        /// The file name without its extension (A1111).
        case fileStem
        /// The name stored in the file (A1111's `name`, a diffusers token); the file stem when
        /// the file stores none (kohya).
        case internalName
    }

    public let naming: Naming

    public init(naming: Naming = .fileStem) { self.naming = naming }

    public var id: String { "textual-inversion" }
    public var summary: String {
        "Textual Inversion embeddings (A1111/original .pt, kohya emb_params, diffusers learned_embeds, SDXL clip_l/clip_g)"
    }

    public func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] {
        // A file another adapterhost method wrote (a DreamBooth difference of one tensor).
        if let owner = metadata["adapterhost.method"], owner != id { return [] }
        guard let layout = EmbeddingLayout.detect(keys: keys) else { return [] }
        return [ModuleClaim(module: "embedding", keys: layout.claimedKeys())]
    }

    public func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
        guard let layout = EmbeddingLayout.detect(keys: claims.flatMap(\.keys)) else {
            throw TextualInversionError(file: source.path, key: "", rule: .multipleTerms(count: 0))
        }
        let vectorsByWidth: [Int: Tensor]
        let fileMetadata = MetadataText.metadata(of: source)
        var internalName: String? = MetadataText.plain(fileMetadata["name"])
        switch layout {
        case let .stringToParam(params, _):
            guard params.count == 1 else {
                throw TextualInversionError(file: source.path, key: "string_to_param", rule: .multipleTerms(count: params.count))
            }
            let vectors = try Self.vectors(params[0], from: source)
            vectorsByWidth = [vectors.shape[1]: vectors]
        case .sdxl:
            let l = try Self.vectors("clip_l", from: source)
            let g = try Self.vectors("clip_g", from: source)
            guard l.shape[0] == g.shape[0], l.shape[1] != g.shape[1] else {
                throw TextualInversionError(file: source.path, key: "", rule: .sdxlMismatch(clipL: l.shape, clipG: g.shape))
            }
            vectorsByWidth = [l.shape[1]: l, g.shape[1]: g]
        case .single(let key):
            let vectors = try Self.vectors(key, from: source)
            vectorsByWidth = [vectors.shape[1]: vectors]
            if key != "emb_params" { internalName = key }
        }

        let stem = Self.fileStem(source.path)
        let name = naming == .internalName ? (internalName ?? stem) : stem
        var metadata = fileMetadata
        if let internalName { metadata["textual_inversion.internal_name"] = internalName }
        metadata["textual_inversion.vectors"] = String(vectorsByWidth.values.first!.shape[0])
        return Adapter(path: source.path, methodIDs: [id], format: layout.format,
                       baseModel: Self.family(widths: Set(vectorsByWidth.keys)), metadata: metadata,
                       modules: [], embeddings: [TokenEmbedding(name: name, vectorsByWidth: vectorsByWidth)])
    }

    /// The tensor under `key` as F32 `[vectors, width]` (a `[width]` vector is one token, as
    /// A1111's `unsqueeze(0)`).
    static func vectors(_ key: String, from source: TensorSource) throws -> Tensor {
        var t = try source.tensor(key)
        guard t.dtype.isFloatingPoint, t.rank == 1 || t.rank == 2, t.count > 0 else {
            throw TextualInversionError(file: source.path, key: key, rule: .badTensor(dtype: t.dtype.rawValue, shape: t.shape))
        }
        if t.rank == 1 { t = t.reshaped([1, t.shape[0]]) }
        // A copy in F32 (`to` keeps the storage when already F32): the adapter outlives nothing
        // it points into, and a pickle's tensors may be views of a shared storage.
        return t.to(.f32).contiguous()
    }

    /// A1111's name: the file name without directory and extension.
    static func fileStem(_ path: String) -> String {
        let file = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
        guard let dot = file.lastIndex(of: "."), dot != file.startIndex else { return file }
        return String(file[..<dot])
    }

    /// The family the widths belong to: 768 SD1 (CLIP-L), 1024 SD2 (OpenCLIP-H), 768 + 1280
    /// SDXL; nil for other widths (test models), where no family can be told.
    static func family(widths: Set<Int>) -> ModelFamily? {
        switch widths {
        case [768]: return .sd1
        case [1024]: return .sd2
        case [768, 1280]: return .sdxl
        default: return nil
        }
    }
}

/// Reading plain strings from metadata that may come from a pickle (rendered Python-style).
enum MetadataText {
    /// The file's string metadata; for a PyTorch pickle, its plain values (`name`, `step`,
    /// `sd_checkpoint`, …) rendered Python-style (`'text'`, `[1, 2]`, `True`, `None`).
    static func metadata(of source: TensorSource) -> [String: String] {
        var metadata = source.metadata
        if let pickle = source as? TorchFile {
            for key in pickle.valueKeys where metadata[key] == nil { metadata[key] = pickle.values[key]?.description }
        }
        return metadata
    }

    /// `s` without surrounding quotes; nil for absent, empty or Python `None`.
    static func plain(_ s: String?) -> String? {
        guard var text = s?.trimmingCharacters(in: .whitespaces), !text.isEmpty, text != "None" else { return nil }
        if text.count >= 2, let first = text.first, first == text.last, first == "'" || first == "\"" {
            text = String(text.dropFirst().dropLast())
        }
        return text
    }
}
