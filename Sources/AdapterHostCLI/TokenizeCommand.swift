import ArgumentParser
import Foundation
import Host
import Runtime

/// `adapterhost tokenize --prompt TEXT [--json]`: a prompt's 77-token chunks as A1111 makes them.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how a prompt is split into CLIP tokens and 75-token chunks, as A1111 does.",
        discussion: """
        Per chunk: the 77 token ids (start, 75 prompt tokens padded with end-of-text, end), each \
        token's text and emphasis multiplier, and where textual-inversion embeddings go (offset \
        among the 75 prompt tokens). Extra-network tags (<lora:…>) are taken out first and listed. \
        The token count is A1111's (75 per full chunk plus the last chunk's tokens). With \
        --embeddings-dir, names of the embeddings there count as A1111 counts them (their vectors).
        """
    )

    @Option(help: "The prompt.") var prompt: String
    @Option(help: "Emphasis mode: Original, \"No norm\", Ignore, None (None: brackets are text).")
    var emphasis: String = "Original"
    @Option(help: "Words after a comma move to the next chunk when within this many tokens of its end (0: off).")
    var commaBacktrack: Int = 20
    @Option(help: "Textual-inversion embeddings whose names to recognise.") var embeddingsDir: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        guard let mode = EmphasisMode(rawValue: emphasis) else {
            throw ValidationError("--emphasis must be one of \(EmphasisMode.allCases.map(\.rawValue))")
        }
        let tokenizer = try CLIPTokenizer.bundled()
        var vocabulary: EmbeddingVocabulary?
        var vectorCounts: [String: Int] = [:]
        if let embeddingsDir {
            let (registry, failures) = makeRegistry(pluginDir: nil)
            reportPluginFailures(failures)
            var v = EmbeddingVocabulary()
            let folder = try ModelsDirectory(root: nil, embeddingsDirectory: embeddingsDir)
            let (loaded, warnings) = loadEmbeddings(folder.embeddings(), registry: registry)
            for warning in warnings { printWarning(warning) }
            for embedding in loaded.map(\.embedding) {
                // A1111 counts an SDXL embedding's clip_g vectors: the widest width's rows here.
                guard let widest = embedding.vectorsByWidth.keys.max(), let vectors = embedding.vectorsByWidth[widest],
                      vectors.rank == 2 else { continue }
                v.register(name: embedding.name, vectorCount: vectors.shape[0], tokenizer: tokenizer)
                vectorCounts[embedding.name] = vectors.shape[0]
            }
            vocabulary = v
        }
        let (text, tags) = A1111Prompt.removeTags(from: prompt)
        let chunker = PromptChunker(tokenizer: tokenizer, commaPaddingBacktrack: commaBacktrack,
                                    parsesEmphasis: mode.parsesSyntax, embeddings: vocabulary)
        let (chunks, count) = try chunker.chunks(for: text)

        if json {
            let object: [String: Any] = [
                "prompt": text, "token_count": count,
                "extra_networks": tags.map { ["name": $0.type, "arguments": $0.arguments] },
                "chunks": chunks.map { chunk -> [String: Any] in
                    ["tokens": chunk.tokens.map(Int.init),
                     "text": chunk.tokens.map { tokenizer.tokens[Int($0)] },
                     "multipliers": chunk.multipliers,
                     "fixes": chunk.fixes.map { ["offset": $0.offset, "embedding": $0.embedding] as [String: Any] }]
                },
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("\(count) tokens, \(chunks.count) chunk(s)")
        for tag in tags { print("extra network: \(tag)") }
        for (index, chunk) in chunks.enumerated() {
            print("chunk \(index + 1):")
            // The prompt's own tokens: after the start token, up to the padding.
            var embeddingAt: [Int: String] = [:]
            for fix in chunk.fixes {
                for i in 0..<(vectorCounts[fix.embedding] ?? 1) {
                    embeddingAt[fix.offset + 1 + i] = "[\(fix.embedding) vector \(i + 1)]"
                }
            }
            var position = 1
            while position < chunk.tokens.count - 1 {
                let id = chunk.tokens[position]
                if id == CLIPTokenizer.endOfTextID, chunk.tokens[position...].allSatisfy({ $0 == CLIPTokenizer.endOfTextID }) {
                    print("  … \(chunk.tokens.count - 1 - position) end-of-text padding")
                    break
                }
                let weight = chunk.multipliers[position]
                let shown = embeddingAt[position] ?? tokenizer.tokens[Int(id)]
                let multiplier = weight == 1 ? "" : String(format: "  ×%.4g", weight)
                print(String(format: "  %3d  %6d  ", position, id) + shown + multiplier)
                position += 1
            }
        }
    }
}
