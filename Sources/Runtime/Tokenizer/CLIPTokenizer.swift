import Foundation

/// Errors loading a CLIP vocabulary.
public enum CLIPTokenizerError: Error, CustomStringConvertible {
    case resourceMissing(String)
    case malformedMerges(file: String, line: Int, text: String)
    case wrongVocabularySize(file: String, expected: Int, found: Int)

    public var description: String {
        switch self {
        case .resourceMissing(let name):
            return "CLIP tokenizer: resource \(name) is missing from the Runtime bundle"
        case .malformedMerges(let file, let line, let text):
            return "CLIP tokenizer: \(file) line \(line) is not a merge of two symbols: \(text.debugDescription)"
        case .wrongVocabularySize(let file, let expected, let found):
            return "CLIP tokenizer: \(file) gives \(found) tokens, CLIP has \(expected)"
        }
    }
}

/// CLIP's byte-level BPE tokenizer (SD1's CLIP-L, SD2's OpenCLIP-H and SDXL's two encoders
/// all use this vocabulary of 49408 tokens).
///
/// Matches transformers' `CLIPTokenizer` (v5, backed by `tokenizers`): text is split at exact
/// occurrences of `<|startoftext|>` / `<|endoftext|>` (special tokens); every other part is
/// normalized (Unicode NFC, then lowercased), split into pieces by CLIP's regex
/// (`CLIPPreTokenizer`), each piece's UTF-8 bytes mapped to the byte-level alphabet with `</w>`
/// on its last symbol, and merged by BPE rank.
///
/// Differences from other CLIP tokenizers (none applies to ASCII text):
/// - open_clip's `SimpleTokenizer`, and transformers' older slow tokenizer when `ftfy` is
///   installed (A1111's setup), first run `ftfy.fix_text` (curly quotes to straight ones,
///   full-width forms to ASCII, ligatures split, HTML entities unescaped, mojibake repaired);
///   this tokenizer does not. Callers wanting that must clean the text first.
/// - A special token's text that only appears after normalization (`<|ENDOFTEXT|>`) is
///   byte-level encoded as `<|`, `endoftext`, `|>`, as transformers does.
public final class CLIPTokenizer: @unchecked Sendable {
    // @unchecked Sendable: the only mutable state is `cache`, guarded by `cacheLock`.

    /// `<|startoftext|>`.
    public static let startOfTextID: Int32 = 49406
    /// `<|endoftext|>`, also SD1's padding.
    public static let endOfTextID: Int32 = 49407
    /// Number of tokens.
    public static let vocabularySize = 49408
    /// Merges CLIP uses from the BPE file: 49408 − 256 bytes − 256 bytes with `</w>` − 2 specials.
    public static let mergeCount = 49152 - 256 - 2
    static let endOfWord = "</w>"

    /// Token text by id (byte-level alphabet, `</w>` marking a word end).
    public let tokens: [String]
    /// Token id by text.
    public let vocabulary: [String: Int32]
    /// Pair of symbol ids → (rank, id of the merged symbol).
    private let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Base symbol id of each byte, without and with `</w>`.
    private let byteIDs: [Int32]
    private let byteEndIDs: [Int32]

    private var cache: [String: [Int32]] = [:]
    private let cacheLock = NSLock()

    /// Builds the tokenizer from the text of `bpe_simple_vocab_16e6.txt` (a header line, then
    /// one merge `a b` per line; only the first `mergeCount` merges are used, as in CLIP).
    public init(mergesText: String, source: String = "bpe merges") throws {
        var lines = mergesText.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        let mergeLines = lines.dropFirst().prefix(Self.mergeCount)
        var pairs: [(Substring, Substring)] = []
        pairs.reserveCapacity(Self.mergeCount)
        for (offset, line) in mergeLines.enumerated() {
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw CLIPTokenizerError.malformedMerges(file: source, line: offset + 2, text: String(line))
            }
            pairs.append((parts[0], parts[1]))
        }
        // Vocabulary order as CLIP builds it: bytes, bytes + </w>, merges, specials.
        var tokens: [String] = ByteLevelAlphabet.orderedPairs.map { String(Character(Unicode.Scalar($0.1)!)) }
        tokens += tokens.map { $0 + Self.endOfWord }
        for (a, b) in pairs { tokens.append(String(a) + String(b)) }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        guard tokens.count == Self.vocabularySize else {
            throw CLIPTokenizerError.wrongVocabularySize(file: source, expected: Self.vocabularySize, found: tokens.count)
        }
        // `dict(zip(vocab, range(len(vocab))))`: a repeated text keeps its last id.
        var vocabulary = [String: Int32](minimumCapacity: tokens.count)
        for (id, token) in tokens.enumerated() { vocabulary[token] = Int32(id) }

        var merges = [UInt64: (rank: Int32, merged: Int32)](minimumCapacity: pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {
            // Both halves and the result are vocabulary entries by construction of the file.
            guard let left = vocabulary[String(a)], let right = vocabulary[String(b)],
                  let merged = vocabulary[String(a) + String(b)] else {
                throw CLIPTokenizerError.malformedMerges(file: source, line: rank + 2, text: "\(a) \(b)")
            }
            let key = UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
            if merges[key] == nil { merges[key] = (Int32(rank), merged) }   // first (lowest) rank wins
        }
        var byteIDs = [Int32](repeating: 0, count: 256), byteEndIDs = byteIDs
        for byte in 0..<256 {
            let symbol = String(Character(ByteLevelAlphabet.scalarForByte[byte]))
            byteIDs[byte] = vocabulary[symbol]!
            byteEndIDs[byte] = vocabulary[symbol + Self.endOfWord]!
        }
        self.tokens = tokens
        self.vocabulary = vocabulary
        self.merges = merges
        self.byteIDs = byteIDs
        self.byteEndIDs = byteEndIDs
    }

    /// The tokenizer over the vocabulary shipped in this module's resources
    /// (`clip_bpe_merges.txt`: the used lines of open_clip's `bpe_simple_vocab_16e6.txt.gz`).
    public static func bundled() throws -> CLIPTokenizer {
        try bundledResult.get()
    }

    private static let bundledResult: Result<CLIPTokenizer, Error> = Result {
        let name = "clip_bpe_merges.txt"
        guard let url = Bundle.module.url(forResource: "clip_bpe_merges", withExtension: "txt", subdirectory: "Resources")
            ?? Bundle.module.url(forResource: "clip_bpe_merges", withExtension: "txt") else {
            throw CLIPTokenizerError.resourceMissing(name)
        }
        return try CLIPTokenizer(mergesText: String(contentsOf: url, encoding: .utf8), source: name)
    }

    /// Token ids of `text`, without start/end tokens (`add_special_tokens=False`).
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        var rest = Substring(text)
        // Exact special-token text is split out before normalization, as transformers'
        // added-token matching does.
        while let (range, id) = firstSpecialToken(in: rest) {
            ids += encodeNormalizing(rest[rest.startIndex..<range.lowerBound])
            ids.append(id)
            rest = rest[range.upperBound...]
        }
        ids += encodeNormalizing(rest)
        return ids
    }

    /// `[startOfText] + encode(text) + [endOfText]`.
    public func encodeWithSpecialTokens(_ text: String) -> [Int32] {
        [Self.startOfTextID] + encode(text) + [Self.endOfTextID]
    }

    /// The text of token ids: tokens joined, `</w>` read as a space, bytes decoded as UTF-8
    /// (invalid sequences become U+FFFD), trimmed.
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0, Int(id) < tokens.count else { continue }
            let token = tokens[Int(id)]
            if id >= Self.startOfTextID {
                bytes += Array(token.utf8)
                continue
            }
            var text = Substring(token)
            let wordEnd = text.hasSuffix(Self.endOfWord)
            if wordEnd { text = text.dropLast(Self.endOfWord.count) }
            for scalar in text.unicodeScalars { if let byte = ByteLevelAlphabet.byteForScalar[scalar] { bytes.append(byte) } }
            if wordEnd { bytes.append(0x20) }
        }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    // MARK: Internals

    private func firstSpecialToken(in text: Substring) -> (Range<Substring.Index>, Int32)? {
        var best: (Range<Substring.Index>, Int32)?
        for (literal, id) in [("<|startoftext|>", Self.startOfTextID), ("<|endoftext|>", Self.endOfTextID)] {
            if let range = text.range(of: literal, options: .literal), best == nil || range.lowerBound < best!.0.lowerBound {
                best = (range, id)
            }
        }
        return best
    }

    /// Normalizes (NFC, lowercase) and encodes text that holds no exact special token.
    private func encodeNormalizing(_ text: Substring) -> [Int32] {
        if text.isEmpty { return [] }
        // NFC first, then lowercase, as the tokenizers normalizer sequence does. (Whitespace
        // runs become one space there; only separators, so it changes no piece.)
        let normalized = String(text).precomposedStringWithCanonicalMapping.lowercased()
        var ids: [Int32] = []
        let scalars = Substring(normalized).unicodeScalars
        for piece in CLIPPreTokenizer.pieces(scalars) {
            switch piece {
            case .special(let literal):
                // Not matched as a special token before normalization: byte-level BPE of `<|`,
                // the name and `|>` (the byte-level pre-tokenizer splits it so).
                let name = literal.dropFirst(2).dropLast(2)
                for part in ["<|", String(name), "|>"] { ids += bpe(String(part)) }
            case .text(let view):
                ids += bpe(String(view))
            }
        }
        return ids
    }

    /// BPE of one piece, cached.
    private func bpe(_ piece: String) -> [Int32] {
        cacheLock.lock()
        if let hit = cache[piece] { cacheLock.unlock(); return hit }
        cacheLock.unlock()
        let bytes = Array(piece.utf8)
        var symbols = bytes.enumerated().map { index, byte in
            index == bytes.count - 1 ? byteEndIDs[Int(byte)] : byteIDs[Int(byte)]
        }
        while symbols.count > 1 {
            // The adjacent pair of lowest rank.
            var bestRank = Int32.max, bestMerged: Int32 = 0, bestLeft: Int32 = 0, bestRight: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(symbols[i])) << 32 | UInt64(UInt32(symbols[i + 1]))
                if let merge = merges[key], merge.rank < bestRank {
                    bestRank = merge.rank
                    bestMerged = merge.merged
                    bestLeft = symbols[i]
                    bestRight = symbols[i + 1]
                }
            }
            if bestRank == Int32.max { break }
            // Merge every occurrence of that pair, left to right, without overlaps.
            var merged: [Int32] = []
            merged.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count, symbols[i] == bestLeft, symbols[i + 1] == bestRight {
                    merged.append(bestMerged)
                    i += 2
                } else {
                    merged.append(symbols[i])
                    i += 1
                }
            }
            symbols = merged
        }
        cacheLock.lock()
        if cache.count > 50_000 { cache.removeAll(keepingCapacity: true) }
        cache[piece] = symbols
        cacheLock.unlock()
        return symbols
    }
}
