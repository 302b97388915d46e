import ArgumentParser
import Foundation
import Host
import Runtime

/// The model-folder options `generate` and `encode` share: A1111's models folder and the
/// per-kind folders that replace its defaults.
struct ModelFolderOptions: ParsableArguments {
    @Option(help: "A1111 models folder: Stable-diffusion/, Lora/ (and LyCORIS/), hypernetworks/ inside it, embeddings/ beside or inside it; searched recursively.")
    var modelsDir: String?
    @Option(help: "Folder of LoRA/LyCORIS files for <lora:NAME:…> and <lyco:NAME:…> (replaces MODELS_DIR/Lora).")
    var loraDir: String?
    @Option(help: "Folder of textual-inversion embeddings, each used by its file name anywhere in the prompts (replaces the embeddings folder).")
    var embeddingsDir: String?
    @Option(help: "Folder of hypernetworks (.pt) for <hypernet:NAME:STRENGTH> (replaces MODELS_DIR/hypernetworks).")
    var hypernetworkDir: String?

    /// The folders, checked to exist.
    func directory() throws -> ModelsDirectory {
        try ModelsDirectory(root: modelsDir, loraDirectory: loraDir, embeddingsDirectory: embeddingsDir,
                            hypernetworkDirectory: hypernetworkDir)
    }

    /// `--model` as given: an existing file or folder, else a checkpoint name in
    /// MODELS_DIR/Stable-diffusion (A1111's lookup: file name, path in the folder, then the
    /// shortest path containing it).
    func resolveModel(_ model: String, in models: ModelsDirectory) throws -> String {
        if FileManager.default.fileExists(atPath: model) || modelsDir == nil { return model }
        let match = try models.resolve(model, as: .checkpoint)
        for other in match.shadowed { printWarning("checkpoint '\(model)' also matches \(other.path); using \(match.file.path)") }
        return match.file.path
    }

    /// Every embedding of the embeddings folder (none when there is no such folder), loaded
    /// through `registry`; files that are no embedding are reported and skipped, as A1111 does.
    func embeddings(in models: ModelsDirectory, registry: AdapterRegistry) -> [LoadedEmbedding] {
        let (embeddings, warnings) = loadEmbeddings(models.embeddings(), registry: registry)
        for warning in warnings { printWarning(warning) }
        return embeddings
    }
}
