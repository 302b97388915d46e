/// A piece of prompt text and its attention multiplier, or a `BREAK`.
public struct WeightedText: Equatable, Sendable {
    /// The text, with emphasis syntax removed and escapes resolved.
    public var text: String
    /// Attention multiplier; A1111 marks a `BREAK` with −1.
    public var weight: Double

    public init(text: String, weight: Double) {
        self.text = text
        self.weight = weight
    }

    /// A `BREAK` keyword: the chunker starts a new 75-token chunk here.
    public var isBreak: Bool { text == "BREAK" && weight == -1 }
}

/// Errors in prompt syntax.
public enum PromptSyntaxError: Error, Equatable, CustomStringConvertible {
    /// `(text:WEIGHT)` with a weight Python's `float()` rejects (e.g. `1.2.3`, `.`); A1111 fails
    /// the generation on it.
    case invalidWeight(String, prompt: String)

    public var description: String {
        switch self {
        case .invalidWeight(let weight, let prompt):
            return "prompt emphasis: weight \(weight.debugDescription) is not a number in \(prompt.debugDescription)"
        }
    }
}

/// A1111's emphasis syntax (`modules/prompt_parser.py`, `parse_prompt_attention`).
///
/// - `(text)` multiplies attention by 1.1, `[text]` by 1/1.1, `(text:1.3)` by 1.3; nesting
///   multiplies; brackets left open at the end still apply from where they opened.
/// - `\(`, `\)`, `\[`, `\]`, `\\` are the literal characters; a lone `\` is dropped.
/// - `BREAK` (a whole word, in capitals) with the whitespace around it becomes a break marker.
/// - Neighbouring pieces of exactly equal weight are merged.
///
/// Unbalanced closers and `:` outside `(…:w)` are plain text. Prompt editing (`[a:b:10]`),
/// alternation (`[a|b]`), `AND` and extra-network tags are other passes, run before this one.
public enum PromptAttention {
    public static let roundBracketMultiplier = 1.1
    public static let squareBracketMultiplier = 1 / 1.1

    /// The weighted pieces of `text`; never empty (an empty prompt gives one empty piece).
    public static func parse(_ text: String) throws -> [WeightedText] {
        let s = Array(text.unicodeScalars)
        var result: [WeightedText] = []
        var roundBrackets: [Int] = []
        var squareBrackets: [Int] = []

        func multiplyRange(from start: Int, by multiplier: Double) {
            for p in start..<result.count { result[p].weight *= multiplier }
        }
        func appendText(_ scalars: ArraySlice<Unicode.Scalar>) {
            for (index, part) in splitAtBreaks(scalars).enumerated() {
                if index > 0 { result.append(WeightedText(text: "BREAK", weight: -1)) }
                result.append(WeightedText(text: part, weight: 1.0))
            }
        }

        var i = 0
        while i < s.count {
            let c = s[i]
            switch c {
            case "\\":
                // \( \) \[ \] \\ give the character; a lone backslash gives an empty piece.
                if i + 1 < s.count, "()[]\\".unicodeScalars.contains(s[i + 1]) {
                    result.append(WeightedText(text: String(Character(s[i + 1])), weight: 1.0))
                    i += 2
                } else {
                    result.append(WeightedText(text: "", weight: 1.0))
                    i += 1
                }
            case "(":
                roundBrackets.append(result.count)
                i += 1
            case "[":
                squareBrackets.append(result.count)
                i += 1
            case ":":
                // `:\s*([+-]?[.\d]+)\s*\)`, else a plain ":".
                if let (weightRange, end) = matchWeight(s, from: i) {
                    if let open = roundBrackets.popLast() {
                        guard let weight = PythonRegexClass.parseFloat(s[weightRange]) else {
                            throw PromptSyntaxError.invalidWeight(string(s[weightRange]), prompt: text)
                        }
                        multiplyRange(from: open, by: weight)
                    } else {
                        appendText(s[i..<end])
                    }
                    i = end
                } else {
                    appendText(s[i..<(i + 1)])
                    i += 1
                }
            case ")":
                if let open = roundBrackets.popLast() {
                    multiplyRange(from: open, by: roundBracketMultiplier)
                } else {
                    appendText(s[i..<(i + 1)])
                }
                i += 1
            case "]":
                if let open = squareBrackets.popLast() {
                    multiplyRange(from: open, by: squareBracketMultiplier)
                } else {
                    appendText(s[i..<(i + 1)])
                }
                i += 1
            default:
                var j = i + 1
                while j < s.count, !"\\()[]:".unicodeScalars.contains(s[j]) { j += 1 }
                appendText(s[i..<j])
                i = j
            }
        }
        for open in roundBrackets { multiplyRange(from: open, by: roundBracketMultiplier) }
        for open in squareBrackets { multiplyRange(from: open, by: squareBracketMultiplier) }
        if result.isEmpty { result = [WeightedText(text: "", weight: 1.0)] }

        // Merge runs of identical weights (exact equality, as in Python).
        var i2 = 0
        while i2 + 1 < result.count {
            if result[i2].weight == result[i2 + 1].weight {
                result[i2].text += result[i2 + 1].text
                result.remove(at: i2 + 1)
            } else {
                i2 += 1
            }
        }
        return result
    }

    /// Matches `:\s*([+-]?[.\d]+)\s*\)` at `start`: the number's range and the end of the match.
    private static func matchWeight(_ s: [Unicode.Scalar], from start: Int) -> (Range<Int>, Int)? {
        var j = start + 1
        while j < s.count, PythonRegexClass.isSpace(s[j]) { j += 1 }
        let numberStart = j
        if j < s.count, s[j] == "+" || s[j] == "-" { j += 1 }
        let digitsStart = j
        while j < s.count, s[j] == "." || PythonRegexClass.isDigit(s[j]) { j += 1 }
        guard j > digitsStart else { return nil }
        let numberEnd = j
        while j < s.count, PythonRegexClass.isSpace(s[j]) { j += 1 }
        guard j < s.count, s[j] == ")" else { return nil }
        return (numberStart..<numberEnd, j + 1)
    }

    /// `re.split(r"\s*\bBREAK\b\s*", text)`.
    static func splitAtBreaks(_ s: ArraySlice<Unicode.Scalar>) -> [String] {
        let keyword = Array("BREAK".unicodeScalars)
        var parts: [String] = []
        var partStart = s.startIndex
        var position = s.startIndex
        func isWord(at index: Int) -> Bool {
            index >= s.startIndex && index < s.endIndex && PythonRegexClass.isWord(s[index])
        }
        while position < s.endIndex {
            // The leftmost match starts at `position` or later; try each start in turn.
            var matchStart = position
            var found: Range<Int>?
            while matchStart < s.endIndex {
                var k = matchStart
                while k < s.endIndex, PythonRegexClass.isSpace(s[k]) { k += 1 }
                let keywordEnd = k + keyword.count
                if keywordEnd <= s.endIndex, Array(s[k..<keywordEnd]) == keyword,
                   !isWord(at: k - 1), !isWord(at: keywordEnd) {
                    var m = keywordEnd
                    while m < s.endIndex, PythonRegexClass.isSpace(s[m]) { m += 1 }
                    found = matchStart..<m
                    break
                }
                matchStart += 1
            }
            guard let match = found else { break }
            parts.append(string(s[partStart..<match.lowerBound]))
            partStart = match.upperBound
            position = match.upperBound
        }
        parts.append(string(s[partStart..<s.endIndex]))
        return parts
    }
}

func string<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
    var text = ""
    text.unicodeScalars.append(contentsOf: scalars)
    return text
}
