import Host
import Foundation
import Testing
@testable import Runtime

/// `Fixtures/tokenizer/a1111_prompts.json`. Decoded with JSONDecoder: swift-corelibs'
/// JSONSerialization rounds some doubles (0.9090909090909091 reads as …092).
private struct PromptFixture: Decodable {
    struct Attention: Decodable {
        let text: String
        let parsed: [WeightedPiece]
    }
    /// `[text, weight]`.
    struct WeightedPiece: Decodable {
        let text: String
        let weight: Double
        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            text = try container.decode(String.self)
            weight = try container.decode(Double.self)
        }
    }
    struct Chunking: Decodable {
        let text: String
        let comma_padding_backtrack: Int
        let emphasis: String
        let embeddings: Bool
        let token_count: Int
        let chunks: [Chunk]
    }
    struct Chunk: Decodable {
        let tokens: [Int32]
        let multipliers: [Double]
        let fixes: [Fix]
        let sd2_pad_from: Int
    }
    /// `[offset, name]`.
    struct Fix: Decodable {
        let offset: Int
        let name: String
        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            offset = try container.decode(Int.self)
            name = try container.decode(String.self)
        }
    }
    struct ExtraNetworks: Decodable {
        let text: String
        let stripped: String
        let tags: [Tag]
    }
    struct Tag: Decodable {
        let name: String
        let items: [String]
        let positional: [String]
        let named: [String: String]
    }
    let attention: [Attention]
    let chunking: [Chunking]
    let extra_networks: [ExtraNetworks]
    let embeddings: [Embedding]

    /// `[name, vector count]`.
    struct Embedding: Decodable {
        let name: String
        let vectorCount: Int
        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            name = try container.decode(String.self)
            vectorCount = try container.decode(Int.self)
        }
    }

    static func load() throws -> PromptFixture {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let data = try Data(contentsOf: base.appendingPathComponent("tokenizer/a1111_prompts.json"))
        return try JSONDecoder().decode(PromptFixture.self, from: data)
    }
}

@Suite("A1111 prompt parsing")
struct PromptTests {

    @Test("emphasis parsing equals A1111's parse_prompt_attention")
    func attention() throws {
        let cases = try PromptFixture.load().attention
        #expect(cases.count == 23)
        for testCase in cases {
            let expected = testCase.parsed.map { WeightedText(text: $0.text, weight: $0.weight) }
            // Weights compare exactly: the same double products in the same order.
            #expect(try PromptAttention.parse(testCase.text) == expected, "\(testCase.text.debugDescription)")
        }
    }

    @Test("a malformed weight is an error, as Python's float() raises")
    func malformedWeight() {
        #expect(throws: PromptSyntaxError.invalidWeight("1.2.3", prompt: "(x:1.2.3)")) {
            try PromptAttention.parse("(x:1.2.3)")
        }
        // Without an open bracket the same text is plain (A1111 never calls float() on it).
        #expect((try? PromptAttention.parse("x:1.2.3)")) == [WeightedText(text: "x:1.2.3)", weight: 1)])
    }

    @Test("chunks, multipliers, embedding fixes, token counts and SD2 padding equal A1111's tokenize_line")
    func chunking() throws {
        let data = try PromptFixture.load()
        let tokenizer = try CLIPTokenizer.bundled()
        var embeddings = EmbeddingVocabulary()
        for entry in data.embeddings { embeddings.register(name: entry.name, vectorCount: entry.vectorCount, tokenizer: tokenizer) }
        #expect(data.chunking.count == 65)
        for testCase in data.chunking {
            let chunker = PromptChunker(
                tokenizer: tokenizer,
                commaPaddingBacktrack: testCase.comma_padding_backtrack,
                parsesEmphasis: testCase.emphasis != "None",
                embeddings: testCase.embeddings ? embeddings : nil)
            let label = "\(testCase.text.prefix(40).debugDescription) backtrack \(chunker.commaPaddingBacktrack) emphasis \(chunker.parsesEmphasis)"
            let (chunks, tokenCount) = try chunker.chunks(for: testCase.text)
            #expect(tokenCount == testCase.token_count, "\(label): token count")
            #expect(chunks.count == testCase.chunks.count, "\(label): chunk count")
            for (chunk, want) in zip(chunks, testCase.chunks) {
                #expect(chunk.tokens == want.tokens, "\(label): tokens")
                #expect(chunk.multipliers == want.multipliers, "\(label): multipliers")
                #expect(chunk.fixes == want.fixes.map { EmbeddingFix(offset: $0.offset, embedding: $0.name) }, "\(label): fixes")
                let padFrom = want.sd2_pad_from
                let sd2 = chunk.encoderTokens(padding: .zero)
                #expect(Array(sd2[..<padFrom]) == Array(chunk.tokens[..<padFrom]) && sd2[padFrom...].allSatisfy { $0 == 0 }, "\(label): SD2 padding")
                #expect(chunk.encoderTokens(padding: .endOfText) == chunk.tokens)
                #expect(chunk.tokens.count == 77 && chunk.multipliers.count == 77)
            }
        }
    }

    @Test("empty chunk: start then 76 end tokens")
    func emptyChunk() throws {
        let chunk = PromptChunker.emptyChunk()
        #expect(chunk.tokens == [49406] + [Int32](repeating: 49407, count: 76))
        #expect(chunk.encoderTokens(padding: .zero) == [49406, 49407] + [Int32](repeating: 0, count: 75))
        let (chunks, count) = try PromptChunker(tokenizer: CLIPTokenizer.bundled()).chunks(for: "")
        #expect(chunks == [chunk] && count == 0)
    }

    @Test("extra-network tags are stripped as A1111's extra_networks.parse_prompt does (Host's A1111Prompt, the one parser)")
    func extraNetworks() throws {
        let cases = try PromptFixture.load().extra_networks
        #expect(cases.count == 9)
        for testCase in cases {
            let (stripped, tags) = A1111Prompt.removeTags(from: testCase.text)
            #expect(stripped == testCase.stripped, "\(testCase.text.debugDescription)")
            #expect(tags.count == testCase.tags.count, "\(testCase.text.debugDescription)")
            for (tag, want) in zip(tags, testCase.tags) {
                #expect(tag.type == want.name)
                #expect(tag.arguments == want.items)
                #expect(tag.positional == want.positional)
                #expect(tag.named == want.named)
            }
        }
    }
}
