import Foundation
import Testing
@testable import Runtime

@Suite("CLIPTokenizer")
struct TokenizerTests {
    @Test("ids equal transformers' CLIPTokenizer on the prompt set")
    func matchesTransformers() throws {
        let tokenizer = try CLIPTokenizer.bundled()
        let fixture = try loadRuntimeFixture("tokenizer/clip_tokenizer.json")
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count >= 48)
        for testCase in cases {
            let text = try #require(testCase["text"] as? String)
            let expected = (testCase["ids"] as? [Int] ?? []).map(Int32.init)
            #expect(tokenizer.encode(text) == expected, "\(text.debugDescription)")
            #expect(tokenizer.encodeWithSpecialTokens(text) == [49406] + expected + [49407])
        }
    }

    @Test("vocabulary order: bytes, bytes with </w>, merges, specials")
    func vocabularyOrder() throws {
        let tokenizer = try CLIPTokenizer.bundled()
        let fixture = try loadRuntimeFixture("tokenizer/clip_tokenizer.json")
        let checks = try #require(fixture["vocab_checks"] as? [String: Int])
        #expect(checks.count == 11)
        for (token, id) in checks {
            #expect(tokenizer.vocabulary[token] == Int32(id), "\(token)")
            #expect(tokenizer.tokens[id] == token)
        }
        #expect(tokenizer.tokens.count == CLIPTokenizer.vocabularySize)
        #expect(Set(tokenizer.tokens).count == CLIPTokenizer.vocabularySize)
    }

    @Test("decoding joins words with spaces as CLIP's decoder does")
    func decodeRoundTrip() throws {
        let tokenizer = try CLIPTokenizer.bundled()
        let text = "A photo of a cat, highly detailed, 8K, it's fine!"
        #expect(tokenizer.decode(tokenizer.encode(text)) == "a photo of a cat , highly detailed , 8 k , it 's fine !")
        let fixture = try loadRuntimeFixture("tokenizer/clip_tokenizer.json")
        for testCase in try #require(fixture["cases"] as? [[String: Any]]) {
            let ids = (testCase["ids"] as? [Int] ?? []).map(Int32.init)
            #expect(tokenizer.decode(ids) == testCase["decoded"] as? String)
        }
    }

    @Test("malformed merges are rejected with the line number")
    func malformed() {
        #expect(throws: CLIPTokenizerError.self) {
            _ = try CLIPTokenizer(mergesText: "#version: 0.2\ni n\nbad-line\n", source: "test.txt")
        }
        do {
            _ = try CLIPTokenizer(mergesText: "#version: 0.2\ni n\nbad-line\n", source: "test.txt")
        } catch {
            #expect("\(error)".contains("test.txt line 3"))
        }
    }
}
