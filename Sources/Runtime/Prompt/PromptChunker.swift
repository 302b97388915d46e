/// One 77-token window of a prompt for the CLIP text encoder, with per-token attention.
public struct PromptChunk: Equatable, Sendable {
    /// `<|startoftext|>`, 75 prompt tokens (padded with `<|endoftext|>`), `<|endoftext|>`.
    /// Positions covered by a textual-inversion embedding hold 0 (see `fixes`).
    public var tokens: [Int32]
    /// Attention multiplier of each token (1 for start, end and padding).
    public var multipliers: [Double]
    /// Where textual-inversion embeddings replace token embeddings.
    public var fixes: [EmbeddingFix]

    public init(tokens: [Int32], multipliers: [Double], fixes: [EmbeddingFix] = []) {
        self.tokens = tokens
        self.multipliers = multipliers
        self.fixes = fixes
    }

    /// The ids the text encoder reads, padded as the model family expects (A1111's
    /// `process_tokens`): with `.zero`, every id after the first `<|endoftext|>` becomes 0.
    public func encoderTokens(padding: PromptPadding) -> [Int32] {
        guard padding == .zero, let end = tokens.firstIndex(of: CLIPTokenizer.endOfTextID) else { return tokens }
        var ids = tokens
        for index in (end + 1)..<ids.count { ids[index] = 0 }
        return ids
    }
}

/// How a chunk is padded after its first `<|endoftext|>`.
public enum PromptPadding: Sendable {
    /// Padding stays `<|endoftext|>` (49407): OpenAI CLIP-L (SD1, SDXL's first encoder).
    case endOfText
    /// Padding is 0: OpenCLIP encoders (SD2's ViT-H, SDXL's bigG), as A1111's
    /// `FrozenOpenCLIPEmbedderWithCustomWords` sets `id_pad = 0`.
    case zero
}

/// A textual-inversion embedding placed in a chunk.
public struct EmbeddingFix: Equatable, Sendable {
    /// Offset of the embedding's first vector among the chunk's 75 prompt tokens (A1111's
    /// `fixes` offset); its index in the 77 encoder tokens is `offset + 1` (after BOS).
    public var offset: Int
    /// The embedding's name.
    public var embedding: String

    public init(offset: Int, embedding: String) {
        self.offset = offset
        self.embedding = embedding
    }
}

/// An embedding found in a token sequence.
public struct EmbeddingMatch: Equatable, Sendable {
    /// Name (the trigger word the user wrote).
    public var name: String
    /// How many token positions its vectors take.
    public var vectorCount: Int
    /// How many prompt tokens its name spans.
    public var tokenCount: Int

    public init(name: String, vectorCount: Int, tokenCount: Int) {
        self.name = name
        self.vectorCount = vectorCount
        self.tokenCount = tokenCount
    }
}

/// Turns a prompt into 77-token chunks as A1111 does (`sd_hijack_clip.py`, `tokenize_line`).
///
/// Emphasis is parsed, each piece tokenized on its own (no start/end tokens), and tokens
/// appended to 75-token chunks. When a chunk is full and the current token is not a comma,
/// and a comma lies within the last `commaPaddingBacktrack` tokens, the tokens after that comma
/// move to the next chunk (which the chunk's end is padded for). `BREAK` closes the chunk.
/// An embedding name is replaced by its vectors' positions, moved whole to the next chunk if
/// it does not fit. Each chunk is then `[start] + 75 tokens (end-padded) + [end]`.
public struct PromptChunker: Sendable {
    /// Prompt tokens per chunk.
    public static let chunkLength = 75

    public let tokenizer: CLIPTokenizer
    /// A1111's "Prompt word wrap length limit" (`comma_padding_backtrack`, default 20; 0: off).
    public var commaPaddingBacktrack: Int
    /// False for A1111's emphasis mode "None": the whole line is one piece of weight 1.
    public var parsesEmphasis: Bool
    /// Finds a textual-inversion embedding starting at `position` of a piece's tokens.
    public var embeddings: EmbeddingVocabulary?

    /// Id of `,</w>`.
    public let commaID: Int32

    public init(tokenizer: CLIPTokenizer, commaPaddingBacktrack: Int = 20, parsesEmphasis: Bool = true,
                embeddings: EmbeddingVocabulary? = nil) {
        self.tokenizer = tokenizer
        self.commaPaddingBacktrack = commaPaddingBacktrack
        self.parsesEmphasis = parsesEmphasis
        self.embeddings = embeddings
        self.commaID = tokenizer.vocabulary[",</w>"]!   // in every CLIP vocabulary (id 267)
    }

    /// A chunk of an empty prompt: start, then 76 end tokens.
    public static func emptyChunk() -> PromptChunk {
        PromptChunk(tokens: [CLIPTokenizer.startOfTextID] + [Int32](repeating: CLIPTokenizer.endOfTextID, count: chunkLength + 1),
                    multipliers: [Double](repeating: 1, count: chunkLength + 2))
    }

    /// The chunks of one prompt line, and its token count as A1111 shows it (75 per full chunk
    /// plus the tokens of the last one).
    public func chunks(for line: String) throws -> (chunks: [PromptChunk], tokenCount: Int) {
        let parsed = parsesEmphasis ? try PromptAttention.parse(line) : [WeightedText(text: line, weight: 1)]
        var chunks: [PromptChunk] = []
        var tokens: [Int32] = [], multipliers: [Double] = [], fixes: [EmbeddingFix] = []
        var tokenCount = 0
        var lastComma = -1
        let length = Self.chunkLength

        func closeChunk(isLast: Bool = false) {
            tokenCount += isLast ? tokens.count : length
            let missing = length - tokens.count
            if missing > 0 {
                tokens += [Int32](repeating: CLIPTokenizer.endOfTextID, count: missing)
                multipliers += [Double](repeating: 1, count: missing)
            }
            chunks.append(PromptChunk(tokens: [CLIPTokenizer.startOfTextID] + tokens + [CLIPTokenizer.endOfTextID],
                                      multipliers: [1] + multipliers + [1], fixes: fixes))
            tokens = []; multipliers = []; fixes = []
            lastComma = -1
        }

        for piece in parsed {
            if piece.isBreak {
                closeChunk()
                continue
            }
            let ids = tokenizer.encode(piece.text)
            var position = 0
            while position < ids.count {
                let token = ids[position]
                if token == commaID {
                    lastComma = tokens.count
                } else if commaPaddingBacktrack != 0, tokens.count == length, lastComma != -1,
                          tokens.count - lastComma <= commaPaddingBacktrack {
                    // Move the words after the last comma to the next chunk.
                    let breakLocation = lastComma + 1
                    let movedTokens = Array(tokens[breakLocation...])
                    let movedMultipliers = Array(multipliers[breakLocation...])
                    tokens.removeSubrange(breakLocation...)
                    multipliers.removeSubrange(breakLocation...)
                    closeChunk()
                    tokens = movedTokens
                    multipliers = movedMultipliers
                }
                if tokens.count == length { closeChunk() }

                guard let match = embeddings?.match(in: ids, at: position) else {
                    tokens.append(token)
                    multipliers.append(piece.weight)
                    position += 1
                    continue
                }
                if tokens.count + match.vectorCount > length { closeChunk() }
                fixes.append(EmbeddingFix(offset: tokens.count, embedding: match.name))
                tokens += [Int32](repeating: 0, count: match.vectorCount)
                multipliers += [Double](repeating: piece.weight, count: match.vectorCount)
                position += match.tokenCount
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { closeChunk(isLast: true) }
        return (chunks, tokenCount)
    }
}

/// Textual-inversion embeddings by their names' token ids, matched as A1111's
/// `EmbeddingDatabase.find_embedding_at_position` does: candidates sharing the first token are
/// tried longest name first (ties: registration order), and must match token for token.
public struct EmbeddingVocabulary: Sendable {
    private var byFirstToken: [Int32: [(ids: [Int32], name: String, vectorCount: Int)]] = [:]

    public init() {}

    /// Registers an embedding under `name` (tokenized as a prompt would be) taking `vectorCount`
    /// token positions. A name that tokenizes to nothing is ignored.
    public mutating func register(name: String, vectorCount: Int, tokenizer: CLIPTokenizer) {
        let ids = tokenizer.encode(name)
        guard let first = ids.first else { return }
        var entries = byFirstToken[first, default: []]
        entries.append((ids, name, vectorCount))
        // Python's sorted(..., key=len, reverse=True) is stable: equal lengths keep their order.
        entries = entries.enumerated().sorted {
            $0.element.ids.count != $1.element.ids.count ? $0.element.ids.count > $1.element.ids.count : $0.offset < $1.offset
        }.map(\.element)
        byFirstToken[first] = entries
    }

    /// The embedding whose name's tokens start at `position` of `tokens`, if any.
    public func match(in tokens: [Int32], at position: Int) -> EmbeddingMatch? {
        guard let candidates = byFirstToken[tokens[position]] else { return nil }
        for candidate in candidates {
            let end = position + candidate.ids.count
            // Python's slice tokens[offset:offset+len] is shorter near the end, so it cannot match.
            if end <= tokens.count, Array(tokens[position..<end]) == candidate.ids {
                return EmbeddingMatch(name: candidate.name, vectorCount: candidate.vectorCount, tokenCount: candidate.ids.count)
            }
        }
        return nil
    }
}
