import Foundation
import Host
import Runtime
import Testing

/// Host's tag scanner must give exactly what Runtime's `stripExtraNetworkTags` gives, so call
/// sites can move to `A1111Prompt` without any change in output. Delete this file (and
/// HostTests' Runtime dependency) once Runtime's copy is removed.
@Suite("Host tag parser vs Runtime's stripExtraNetworkTags")
struct PromptRuntimeEquivalenceTests {
    /// Hand-written prompts plus every fixture prompt (A1111's own and Runtime's).
    static func prompts() throws -> [String] {
        var prompts = [
            "", "plain text", "a <lora:x:1> b", "a, <lora:x:1>, b", "<lora:x:1><lora:y:0.5>",
            "(<lora:x:0.5>:1.2) [<lyco:y:1>]", "<lora:x:te=1:unet=0.5:dyn=4>", "<a b:1> <:x> <x:> <x:y",
            "<lora:a<lora:b:1>", "<lora:multi\nline:1>", "<lora:x:1>>", "<<lora:x:1>", "<lora::>", "<_:_>",
            "<ünï:cödé:1> <lora:名前:0.5> <x٣:y>", "e\u{301}<lora:x:1>\u{301}", "<lora:x:=\u{301}>", "\\<lora:x:1\\>",
            "BREAK <lora:x:1> BREAK", "<hypernet:h:0.5>, masterpiece, <foo:bar:baz:qux>",
        ]
        prompts += try A1111PromptFixture.load().prompts.map(\.text)
        let runtimeFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("RuntimeTests/Fixtures/tokenizer/a1111_prompts.json")
        if let data = try? Data(contentsOf: runtimeFixture),
           let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] {
            for key in ["extra_networks", "attention"] {
                for entry in object[key] as? [[String: Any]] ?? [] { if let text = entry["text"] as? String { prompts.append(text) } }
            }
        }
        return prompts
    }

    @Test("same text and same tags on every prompt")
    func sameOutput() throws {
        let prompts = try Self.prompts()
        #expect(prompts.count > 80)
        for prompt in prompts {
            let (hostText, hostTags) = A1111Prompt.removeTags(from: prompt)
            let (runtimeText, runtimeTags) = stripExtraNetworkTags(prompt)
            // Compare scalar by scalar: String == would call canonically equivalent texts equal.
            #expect(Array(hostText.unicodeScalars) == Array(runtimeText.unicodeScalars), "\(prompt.debugDescription)")
            #expect(hostTags.map(\.type) == runtimeTags.map(\.name), "\(prompt.debugDescription)")
            #expect(hostTags.map(\.arguments) == runtimeTags.map(\.arguments), "\(prompt.debugDescription)")
            #expect(hostTags.map(\.positional) == runtimeTags.map(\.positional), "\(prompt.debugDescription)")
            #expect(hostTags.map(\.named) == runtimeTags.map(\.named), "\(prompt.debugDescription)")
        }
    }
}
