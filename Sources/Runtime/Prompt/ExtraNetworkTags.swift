/// An extra-network tag of a prompt, `<name:arg1:arg2:…>` (`<lora:file:0.8>`, `<hypernet:x:1>`).
public struct ExtraNetworkTag: Equatable, Sendable {
    /// The network type (`lora`, `lyco`, `hypernet`, …).
    public var name: String
    /// The text after the first colon, split at every colon.
    public var arguments: [String]

    public init(name: String, arguments: [String]) {
        self.name = name
        self.arguments = arguments
    }

    /// Arguments without `key=value` form, in order (A1111's `ExtraNetworkParams.positional`).
    public var positional: [String] { arguments.filter { namedPair($0) == nil } }

    /// `key=value` arguments (exactly one `=`); a repeated key keeps its last value.
    public var named: [String: String] {
        var result: [String: String] = [:]
        for argument in arguments { if let (key, value) = namedPair(argument) { result[key] = value } }
        return result
    }

    /// `item.split('=', 2)` having exactly two parts.
    private func namedPair(_ argument: String) -> (String, String)? {
        // Split by code point, as Python does (a Character split would keep "=\u{301}" whole).
        let parts = argument.unicodeScalars.split(separator: "=", maxSplits: 2, omittingEmptySubsequences: false)
        return parts.count == 2 ? (string(parts[0]), string(parts[1])) : nil
    }
}

/// Removes extra-network tags from a prompt, as A1111's `extra_networks.parse_prompt` does with
/// `re.sub(r"<(\w+):([^>]+)>", …)`: the text with every tag deleted (nothing else changes,
/// spaces and commas around the tag stay), and the tags in order of appearance.
public func stripExtraNetworkTags(_ prompt: String) -> (text: String, tags: [ExtraNetworkTag]) {
    let s = Array(prompt.unicodeScalars)
    var text = String.UnicodeScalarView()
    var tags: [ExtraNetworkTag] = []
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

/// `<(\w+):([^>]+)>` at `start`.
private func matchTag(_ s: [Unicode.Scalar], at start: Int) -> (ExtraNetworkTag, Int)? {
    var j = start + 1
    while j < s.count, PythonRegexClass.isWord(s[j]) { j += 1 }
    guard j > start + 1, j < s.count, s[j] == ":" else { return nil }
    let name = string(s[(start + 1)..<j])
    let argumentsStart = j + 1
    var k = argumentsStart
    while k < s.count, s[k] != ">" { k += 1 }
    guard k > argumentsStart, k < s.count else { return nil }
    let arguments = s[argumentsStart..<k].split(separator: ":", omittingEmptySubsequences: false).map { string($0) }
    return (ExtraNetworkTag(name: name, arguments: arguments), k + 1)
}
