/// A1111's prompt syntax for extra networks, in one place: the tag scanner every command uses
/// (`removeTags`) and its reading of LoRA and hypernetwork tags (`parse`).
///
/// What is not here: textual-inversion embeddings are not tags. A1111 loads every embedding of
/// its embeddings folder and finds their names in the tokenized prompt; the host does the same
/// with `ModelsDirectory.embeddings()` (the files) and Runtime's `EmbeddingVocabulary` used by
/// `PromptChunker` (the matching, after tags are removed). Emphasis, `BREAK` and chunking are
/// Runtime's passes over the text this leaves.
public enum A1111Prompt {
    /// An extra-network tag as written, `<type:arg1:arg2:…>` (`<lora:file:0.8>`, `<hypernet:x:1>`):
    /// A1111's `ExtraNetworkParams`.
    public struct Tag: Equatable, Sendable, CustomStringConvertible {
        /// The network type (`lora`, `lyco`, `hypernet`, …), as written (A1111 compares it exactly).
        public var type: String
        /// The text after the first colon, split at every colon (`items`).
        public var arguments: [String]

        public init(type: String, arguments: [String]) {
            self.type = type
            self.arguments = arguments
        }

        /// The tag's text, `<type:arguments joined by ":">`: exactly what the prompt held.
        public var description: String { "<\(type):\(arguments.joined(separator: ":"))>" }

        /// Arguments not of `key=value` form, in order (`positional`).
        public var positional: [String] { arguments.filter { Self.namedPair($0) == nil } }

        /// `key=value` arguments (`named`); a repeated key keeps its last value.
        public var named: [String: String] {
            var result: [String: String] = [:]
            for (key, value) in namedPairs { result[key] = value }
            return result
        }

        /// `key=value` arguments in order, repeats included.
        public var namedPairs: [(key: String, value: String)] { arguments.compactMap(Self.namedPair) }

        /// `item.split('=', 2)` giving exactly two parts: an argument with exactly one `=`
        /// (`a=b=c` splits into three, so it is positional).
        static func namedPair(_ argument: String) -> (key: String, value: String)? {
            // Split by code point, as Python does (a Character split would keep "=\u{301}" whole).
            let parts = argument.unicodeScalars.split(separator: "=", maxSplits: 2, omittingEmptySubsequences: false)
            return parts.count == 2 ? (stringOfScalars(parts[0]), stringOfScalars(parts[1])) : nil
        }
    }

    /// Removes extra-network tags from `prompt` as A1111's `extra_networks.parse_prompt` does
    /// with `re.sub(r"<(\w+):([^>]+)>", "", prompt)`: each tag is replaced by nothing, and
    /// nothing else changes — spaces and commas around a tag stay (`"a, <lora:x:1>, b"` gives
    /// `"a, , b"`), which is what A1111 tokenizes. Tags can span lines (`[^>]` takes newlines),
    /// and text that only looks like a tag (`<a b:1>`, `<x:>`, `<:x>`, an unclosed `<lora:x`)
    /// stays as text. Never fails: arguments are read later (`parse`).
    ///
    /// Returns the text and the tags in order of appearance.
    public static func removeTags(from prompt: String) -> (text: String, tags: [Tag]) {
        let s = Array(prompt.unicodeScalars)
        var text = String.UnicodeScalarView()
        var tags: [Tag] = []
        var i = 0
        while i < s.count {
            if s[i] == "<", let (tag, end) = matchTag(s, at: i) {
                tags.append(tag)
                i = end
            } else {
                text.append(s[i])
                i += 1
            }
        }
        return (String(text), tags)
    }

    /// `<(\w+):([^>]+)>` at `start`, with the index after the match. Greedy matching is exact
    /// here: `\w` excludes `:` and `[^>]` excludes `>`, so the regex engine could not backtrack
    /// into another match.
    private static func matchTag(_ s: [Unicode.Scalar], at start: Int) -> (Tag, Int)? {
        var j = start + 1
        while j < s.count, PythonText.isWord(s[j]) { j += 1 }
        guard j > start + 1, j < s.count, s[j] == ":" else { return nil }
        let type = stringOfScalars(s[(start + 1)..<j])
        let argumentsStart = j + 1
        var k = argumentsStart
        while k < s.count, s[k] != ">" { k += 1 }
        guard k > argumentsStart, k < s.count else { return nil }
        let arguments = s[argumentsStart..<k].split(separator: ":", omittingEmptySubsequences: false).map { stringOfScalars($0) }
        return (Tag(type: type, arguments: arguments), k + 1)
    }
}

/// A `String` of `scalars`.
func stringOfScalars<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
    var text = ""
    text.unicodeScalars.append(contentsOf: scalars)
    return text
}
