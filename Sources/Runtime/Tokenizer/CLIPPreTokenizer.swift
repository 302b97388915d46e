/// Splits normalized text into the pieces CLIP's BPE encodes separately, as the regex
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// does with `findall`: at each position the first alternative that matches wins; whitespace
/// separates pieces and is dropped.
///
/// `\s` is the Unicode White_Space property, `\p{L}` and `\p{N}` the general categories, all as
/// this Swift's Unicode tables define them (characters newer than either side's tables may differ).
enum CLIPPreTokenizer {
    enum Piece {
        /// Text for byte-level BPE.
        case text(Substring.UnicodeScalarView)
        /// A special token's text met in normalized text (see `CLIPTokenizer.encode`).
        case special(String)
    }

    static let specialTokens = ["<|startoftext|>", "<|endoftext|>"]
    private static let contractions = ["s", "t", "re", "ve", "m", "ll", "d"]

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isSpace(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.isWhitespace }

    static func pieces(_ text: Substring.UnicodeScalarView) -> [Piece] {
        var result: [Piece] = []
        var i = text.startIndex
        let end = text.endIndex
        func hasPrefix(_ literal: String, at index: String.UnicodeScalarView.Index) -> String.UnicodeScalarView.Index? {
            var j = index
            for scalar in literal.unicodeScalars {
                guard j < end, text[j] == scalar else { return nil }
                j = text.index(after: j)
            }
            return j
        }
        outer: while i < end {
            let scalar = text[i]
            if scalar == "<" {
                for special in specialTokens {
                    if let after = hasPrefix(special, at: i) {
                        result.append(.special(special))
                        i = after
                        continue outer
                    }
                }
            }
            if scalar == "'" {
                let next = text.index(after: i)
                for suffix in contractions {
                    if let after = hasPrefix(suffix, at: next) {
                        result.append(.text(text[i..<after]))
                        i = after
                        continue outer
                    }
                }
            }
            if isLetter(scalar) {
                var j = text.index(after: i)
                while j < end, isLetter(text[j]) { j = text.index(after: j) }
                result.append(.text(text[i..<j]))
                i = j
            } else if isNumber(scalar) {
                let j = text.index(after: i)
                result.append(.text(text[i..<j]))
                i = j
            } else if isSpace(scalar) {
                i = text.index(after: i)
            } else {
                var j = text.index(after: i)
                while j < end, !isLetter(text[j]), !isNumber(text[j]), !isSpace(text[j]) { j = text.index(after: j) }
                result.append(.text(text[i..<j]))
                i = j
            }
        }
        return result
    }
}
