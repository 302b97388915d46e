import Foundation
import Host

/// Where a generation's extra networks come from and how they are applied: the composition
/// root's registry (built-in methods and plugins; the runtime knows no adapter method itself),
/// the models folders (`ModelsDirectory`: LoRA/LyCORIS, hypernetworks by name), the
/// textual-inversion embeddings available to every prompt, and the LoRA mode.
public struct AdapterContext {
    /// Loads adapter files (the composition root's registry: built-ins and plugins).
    public var registry: AdapterRegistry
    /// Resolves `<lora:NAME>`, `<lyco:NAME>` and `<hypernet:NAME>` names to files.
    public var models: ModelsDirectory
    public var mode: AdapterMode
    /// Embeddings the prompts may use by name (A1111 loads every embedding of its folder;
    /// only those a prompt names are injected). See `loadEmbeddings`.
    public var embeddings: [LoadedEmbedding]
    /// Adapters given outside the prompt (a DreamBooth difference, a LoRA by path), applied
    /// after the prompt's LoRAs in the same stack and mode.
    public var additional: [AdapterApplication]
    /// Apply a difference file (`Adapter.requiredBaseHash`) to a model file other than its
    /// recorded base (`PatchPlan`'s `force`).
    public var forceBaseMismatch: Bool

    public init(registry: AdapterRegistry, models: ModelsDirectory, mode: AdapterMode = .merged,
                embeddings: [LoadedEmbedding] = [], additional: [AdapterApplication] = [],
                forceBaseMismatch: Bool = false) {
        self.registry = registry
        self.models = models
        self.mode = mode
        self.embeddings = embeddings
        self.additional = additional
        self.forceBaseMismatch = forceBaseMismatch
    }

    /// Resolves and loads the LoRA networks of a parsed prompt (in A1111's order:
    /// `ParsedPrompt.lorasInA1111Order`) through `registry`. An unknown name throws
    /// `ModelsDirectoryError.notFound` listing the closest names.
    public func loadLoras(_ networks: [ExtraNetwork]) throws -> [LoadedLora] {
        try networks.compactMap { network in
            guard case let .lora(name, te, unet, dyn) = network else { return nil }
            let path = try models.resolve(name, as: .lora).file.path
            let (source, adapter) = try load(path, name: name)
            return LoadedLora(name: name, textEncoderWeight: Float(te), unetWeight: Float(unet), dynRank: dyn, path: path,
                              adapter: adapter,
                              shortHash: try LoraHash.shortHash(path: path, metadata: source.metadata))
        }
    }

    /// Resolves and loads the `<hypernet:NAME:STRENGTH>` networks of a parsed prompt, in order.
    /// A file that gives no context transform (not a hypernetwork) is an error naming it.
    public func loadHypernetworks(_ networks: [ExtraNetwork]) throws -> [LoadedHypernetwork] {
        try networks.compactMap { network in
            guard case let .hypernet(name, strength) = network else { return nil }
            let path = try models.resolve(name, as: .hypernetwork).file.path
            let (_, adapter) = try load(path, name: name)
            guard !adapter.contextTransforms.isEmpty else {
                throw PipelineError.networkLoadFailed(name: name, path: path,
                                                      reason: "not a hypernetwork (it was read as \(adapter.format))")
            }
            return LoadedHypernetwork(name: name, strength: Float(strength), path: path, adapter: adapter)
        }
    }

    private func load(_ path: String, name: String) throws -> (TensorSource, Adapter) {
        let source: TensorSource
        do {
            source = try openAdapterSource(path)
        } catch {
            throw PipelineError.networkLoadFailed(name: name, path: path, reason: "\(error)")
        }
        do {
            return (source, try registry.load(source))
        } catch {
            throw PipelineError.networkLoadFailed(name: name, path: path, reason: "\(error)")
        }
    }
}

/// A LoRA (or LyCORIS) network loaded for a generation: the tag's name and weights, its file,
/// adapter and A1111 short hash.
public struct LoadedLora {
    /// The name as written in the tag (A1111's `mentioned_name`).
    public let name: String
    public let textEncoderWeight: Float
    public let unetWeight: Float
    public let dynRank: Int?
    public let path: String
    public let adapter: Adapter
    /// A1111's `shorthash` (12 hex digits), as written in "Lora hashes".
    public let shortHash: String

    /// The stack entry at the tag's weights.
    public var application: AdapterApplication {
        AdapterApplication(adapter: adapter, weight: textEncoderWeight, unetWeight: unetWeight, dynRank: dynRank)
    }
}

/// A hypernetwork loaded for a generation: its tag's name and strength, file and adapter
/// (whose `contextTransforms` the UNet's attention applies).
public struct LoadedHypernetwork {
    public let name: String
    public let strength: Float
    public let path: String
    public let adapter: Adapter

    /// The hooks' entries: each transform at the tag's strength.
    public var contextTransforms: [(transform: any ContextTransform, strength: Float)] {
        adapter.contextTransforms.map { (transform: $0, strength: strength) }
    }
}

/// A textual-inversion embedding with the file it came from (for "TI hashes").
public struct LoadedEmbedding {
    public let embedding: TokenEmbedding
    public let path: String

    public init(embedding: TokenEmbedding, path: String) {
        self.embedding = embedding
        self.path = path
    }
}

/// Loads every embedding file of `files` (`ModelsDirectory.embeddings()`) through `registry`,
/// as A1111 loads its embeddings folder: a file that cannot be read, or holds no embedding, is
/// skipped with a warning naming it (A1111 logs and skips such files).
public func loadEmbeddings(_ files: [ModelFile], registry: AdapterRegistry) -> (embeddings: [LoadedEmbedding], warnings: [String]) {
    var embeddings: [LoadedEmbedding] = []
    var warnings: [String] = []
    for file in files {
        do {
            let adapter = try registry.load(openAdapterSource(file.path))
            if adapter.embeddings.isEmpty { warnings.append("\(file.path): no embedding in it; skipped") }
            embeddings += adapter.embeddings.map { LoadedEmbedding(embedding: $0, path: file.path) }
        } catch {
            warnings.append("\(file.path): \(error); skipped")
        }
    }
    return (embeddings, warnings)
}
