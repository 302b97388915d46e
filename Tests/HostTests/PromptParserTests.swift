import Foundation
import Testing
@testable import Host

/// Tests/HostTests/Fixtures/prompt/a1111_extra_networks.json, made by tools/gen_prompt_fixtures.py
/// from A1111's extra_networks.py, extra_networks_lora.py and extra_networks_hypernet.py.
struct A1111PromptFixture: Decodable {
    struct Prompt: Decodable {
        let text: String
        let stripped: String
        let tags: [Tag]
        /// Names in the order A1111 loads them (absent when a tag raised).
        let lora_order: [String]?
        let hypernet_order: [String]?
    }
    struct Tag: Decodable {
        let type: String
        let items: [String]
        let lora: LoRA?
        let hypernet: Hypernet?
        /// A1111 raised on this tag alone (ValueError from float()/int()).
        let error: String?
        /// A1111 read a non-finite weight.
        let nonfinite: Bool?
        /// A1111 has no network of this type.
        let skipped: Bool?
    }
    struct LoRA: Decodable { let name: String; let te: Double; let unet: Double; let dyn: Int? }
    struct Hypernet: Decodable { let name: String; let strength: Double }
    /// Python's float(text) and int(text): a number, nil (ValueError) or "nonfinite".
    struct Number: Decodable {
        let text: String
        let float: Value?
        let int: Int?
        enum Value: Decodable, Equatable {
            case number(Double), nonfinite
            init(from decoder: Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let value = try? container.decode(Double.self) { self = .number(value) } else { self = .nonfinite }
            }
        }
    }
    struct Tree: Decodable {
        let files: [String]
        let lora_listing: [String]
        let lora_names: [String: String]
        let hypernet_listing: [String]
        let hypernet_names: [String: String]
    }
    let prompts: [Prompt]
    let numbers: [Number]
    let tree: Tree
    let natural_sort: [String]

    static func load() throws -> A1111PromptFixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/prompt/a1111_extra_networks.json")
        return try JSONDecoder().decode(A1111PromptFixture.self, from: Data(contentsOf: url))
    }
}

@Suite("A1111 prompt tags")
struct PromptParserTests {
    @Test("tags are removed and read exactly as A1111 does, on every fixture prompt")
    func fixturePrompts() throws {
        let fixture = try A1111PromptFixture.load()
        #expect(fixture.prompts.count == 53)
        for prompt in fixture.prompts {
            let label = prompt.text.debugDescription
            let (text, tags) = A1111Prompt.removeTags(from: prompt.text)
            #expect(text == prompt.stripped, "\(label)")
            #expect(tags.map(\.type) == prompt.tags.map(\.type), "\(label)")
            #expect(tags.map(\.arguments) == prompt.tags.map(\.items), "\(label)")

            // A1111 fails on the first tag it cannot read; the host names that tag.
            if let bad = prompt.tags.first(where: { $0.error != nil || $0.nonfinite == true }) {
                let written = A1111Prompt.Tag(type: bad.type, arguments: bad.items).description
                #expect(throws: PromptTagError.self, "\(label)") { try A1111Prompt.parse(prompt.text) }
                do {
                    _ = try A1111Prompt.parse(prompt.text)
                } catch let error as PromptTagError {
                    #expect(error.tag == written, "\(label)")
                    #expect(error.description.hasPrefix(written), "\(label)")
                }
                continue
            }
            let parsed = try A1111Prompt.parse(prompt.text)
            #expect(parsed.text == prompt.stripped)
            #expect(parsed.networks.count == prompt.tags.count, "\(label)")
            for (network, want) in zip(parsed.networks, prompt.tags) {
                if let lora = want.lora {
                    #expect(network == .lora(name: lora.name, te: lora.te, unet: lora.unet, dynRank: lora.dyn), "\(label)")
                } else if let hypernet = want.hypernet {
                    #expect(network == .hypernet(name: hypernet.name, strength: hypernet.strength), "\(label)")
                } else {
                    #expect(want.skipped == true)
                    #expect(network == .other(type: want.type, arguments: want.items), "\(label)")
                }
            }
            #expect(parsed.lorasInA1111Order.compactMap(\.name) == prompt.lora_order, "\(label)")
            #expect(parsed.hypernetworks.compactMap(\.name) == prompt.hypernet_order, "\(label)")
            let unknown = prompt.tags.filter { $0.skipped == true }.count
            #expect(parsed.warnings.filter { $0.kind == .unknownNetworkType }.count == unknown, "\(label)")
        }
    }

    @Test("numbers are read as Python's float() and int() read them")
    func pythonNumbers() throws {
        let fixture = try A1111PromptFixture.load()
        #expect(fixture.numbers.count == 43)
        for number in fixture.numbers {
            let float = PythonText.float(number.text)
            switch number.float {
            case .number(let value)?: #expect(float == value, "\(number.text.debugDescription)")
            case .nonfinite?: #expect(float.map { !$0.isFinite } == true, "\(number.text.debugDescription)")
            case nil: #expect(float == nil, "\(number.text.debugDescription)")
            }
            #expect(PythonText.int(number.text) == number.int, "\(number.text.debugDescription)")
        }
    }

    @Test("every LoRA form: positional, named, mixed, lyco, defaults")
    func loraForms() throws {
        func lora(_ prompt: String) throws -> ExtraNetwork { try A1111Prompt.parse(prompt).networks[0] }
        #expect(try lora("<lora:x>") == .lora(name: "x", te: 1, unet: 1, dynRank: nil))
        #expect(try lora("<lora:x:0.7>") == .lora(name: "x", te: 0.7, unet: 0.7, dynRank: nil))
        #expect(try lora("<lora:x:0.7:0.9:4>") == .lora(name: "x", te: 0.7, unet: 0.9, dynRank: 4))
        #expect(try lora("<lora:x:te=0.6:unet=0.8:dyn=2>") == .lora(name: "x", te: 0.6, unet: 0.8, dynRank: 2))
        #expect(try lora("<lora:x:unet=0.8:0.6>") == .lora(name: "x", te: 0.6, unet: 0.8, dynRank: nil))
        // `unet` defaults to te as finally read, named te included.
        #expect(try lora("<lora:x:0.9:te=0.6>") == .lora(name: "x", te: 0.6, unet: 0.6, dynRank: nil))
        #expect(try lora("<lyco:y:0.5>") == .lora(name: "y", te: 0.5, unet: 0.5, dynRank: nil))
        let parsed = try A1111Prompt.parse("<lyco:y:0.5>")
        #expect(parsed.tags == [A1111Prompt.Tag(type: "lyco", arguments: ["y", "0.5"])])
        #expect(parsed.warnings.isEmpty)
    }

    @Test("whitespace and commas around tags stay, tags inside emphasis leave the brackets")
    func textAroundTags() throws {
        let parsed = try A1111Prompt.parse("best, <lora:a:1>, (<lora:b:0.8>:1.2), [<hypernet:h:0.5>] end ")
        #expect(parsed.text == "best, , (:1.2), [] end ")
        #expect(parsed.networks == [.lora(name: "a", te: 1, unet: 1, dynRank: nil), .lora(name: "b", te: 0.8, unet: 0.8, dynRank: nil),
                                    .hypernet(name: "h", strength: 0.5)])
        #expect(try A1111Prompt.parse("<lora:a:1>\n<lora:b:1>").text == "\n")
    }

    @Test("weight warnings: unusual outside 0.5–1.2, distorting beyond ±1.5")
    func weightWarnings() throws {
        func kinds(_ prompt: String) throws -> [PromptWarning.Kind] { try A1111Prompt.parse(prompt).warnings.map(\.kind) }
        for usual in ["0.5", "0.75", "1", "1.2"] { #expect(try kinds("<lora:x:\(usual)>").isEmpty, "\(usual)") }
        for unusual in ["0.49", "1.21", "1.5", "0", "-0.5", "-1.5"] {
            #expect(try kinds("<lora:x:\(unusual)>") == [.unusualWeight], "\(unusual)")
        }
        for distorting in ["1.51", "2", "-1.6", "10"] {
            #expect(try kinds("<lora:x:\(distorting)>") == [.distortingWeight], "\(distorting)")
        }
        let off = try A1111Prompt.parse("<lora:x:0>").warnings[0]
        #expect(off.tag == "<lora:x:0>")
        #expect(off.description == "<lora:x:0>: LoRA weight 0 is unusual; LoRA weights are usually 0.5–1.2 (0 turns it off)")
        // Separate TE and UNet weights are judged separately, and named.
        let split = try A1111Prompt.parse("<lora:x:0.3:1.8>").warnings
        #expect(split.map(\.kind) == [.unusualWeight, .distortingWeight])
        #expect(split[0].message.contains("text-encoder weight 0.3"))
        #expect(split[1].message == "LoRA UNet weight 1.8 is beyond ±1.5, which tends to distort the image")
        // Hypernetwork strengths are not LoRA weights.
        #expect(try kinds("<hypernet:h:3>").isEmpty)
    }

    @Test("unknown types and ignored arguments are warnings, not errors")
    func otherWarnings() throws {
        let parsed = try A1111Prompt.parse("<LORA:x:1><foo:a:b><lora:y:1:1:4:extra:k=v><hypernet:h:1:9>")
        #expect(parsed.networks[0] == .other(type: "LORA", arguments: ["x", "1"]))
        #expect(parsed.networks[1] == .other(type: "foo", arguments: ["a", "b"]))
        #expect(parsed.warnings.map(\.kind) == [.unknownNetworkType, .unknownNetworkType, .ignoredArguments, .ignoredArguments])
        #expect(parsed.warnings[0].message.contains("did you mean 'lora'"))
        #expect(!parsed.warnings[1].message.contains("did you mean"))
        #expect(parsed.warnings[2].tag == "<lora:y:1:1:4:extra:k=v>")
        #expect(parsed.warnings[2].message.hasPrefix("ignored arguments \"extra\", \"k=v\""))
        #expect(parsed.warnings[3].message.hasPrefix("ignored arguments \"9\""))
    }

    @Test("malformed tags are errors naming the tag and the argument")
    func errors() {
        func error(_ prompt: String) -> PromptTagError? {
            do { _ = try A1111Prompt.parse(prompt); return nil } catch { return error as? PromptTagError }
        }
        #expect(error("ok <lora:x:abc>") == PromptTagError(tag: "<lora:x:abc>", reason: .notANumber(argument: "te", value: "abc", integer: false)))
        #expect(error("<lora:x:1:1.2.3>")?.reason == .notANumber(argument: "unet", value: "1.2.3", integer: false))
        #expect(error("<lora:x:dyn=8.0>")?.reason == .notANumber(argument: "dyn", value: "8.0", integer: true))
        #expect(error("<lora:x:dyn=0>")?.reason == .rankBelowOne(value: 0))
        #expect(error("<lora:x:inf>")?.reason == .notFinite(argument: "te", value: "inf"))
        #expect(error("<lora::1>")?.reason == .missingName)
        #expect(error("<lora:te=1>")?.reason == .missingName)
        #expect(error("<hypernet::1>")?.reason == .missingName)
        #expect(error("<hypernet:h:x>")?.reason == .notANumber(argument: "strength", value: "x", integer: false))
        #expect(error("<lora:x:1> <lora:y:bad> <lora:z:worse>")?.tag == "<lora:y:bad>")
        #expect(error("<lora:x:abc>")?.description == "<lora:x:abc>: te \"abc\" is not a number")
        #expect(error("<lora:x:dyn=-2>")?.description == "<lora:x:dyn=-2>: dyn -2 must be at least 1 (the number of ranks to keep)")
        // The text alone never fails.
        #expect(A1111Prompt.removeTags(from: "a <lora:x:abc> b").text == "a  b")
    }

    @Test("named arguments: exactly one '=' makes key=value; repeats keep the last")
    func namedArguments() {
        let tag = A1111Prompt.Tag(type: "lora", arguments: ["x", "te=1", "a=b=c", "te=0.5", "=v", "k="])
        #expect(tag.positional == ["x", "a=b=c"])
        #expect(tag.named == ["te": "0.5", "": "v", "k": ""])
        #expect(tag.namedPairs.map(\.key) == ["te", "te", "", "k"])
        #expect(tag.description == "<lora:x:te=1:a=b=c:te=0.5:=v:k=>")
    }
}
