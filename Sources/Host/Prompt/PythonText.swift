/// The parts of Python's `str`, `re`, `float()` and `int()` that A1111's prompt code depends on,
/// so the host reads prompts exactly as A1111 does. Everything works on Unicode scalars (code
/// points), as Python's `str` does; Swift's `Character` would merge combining marks.
///
/// `package`: Runtime's prompt passes (emphasis, BREAK) can use the same definitions.
package enum PythonText {
    /// `\s` of `re` and what `str.isspace()`/`str.strip()` take: White_Space, plus the
    /// separators U+001C...U+001F.
    package static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1c...0x1f).contains(scalar.value)
    }

    /// `\d`: a Unicode decimal digit (general category Nd).
    package static func isDigit(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .decimalNumber
    }

    /// `\w`: letters, numbers (what `str.isalnum()` accepts) and `_`.
    package static func isWord(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "_" { return true }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// `str.strip()` without arguments.
    package static func strip<C: BidirectionalCollection>(_ scalars: C) -> C.SubSequence where C.Element == Unicode.Scalar {
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return scalars[scalars.endIndex...] }
        let last = scalars.lastIndex(where: { !isSpace($0) })!   // exists: `first` does
        return scalars[first...last]
    }

    /// Python's `float(text)`: surrounding whitespace ignored, any script's decimal digits,
    /// `_` between digits, `inf`/`infinity`/`nan` in any case. Nil where Python raises
    /// `ValueError`. Like Python, an overflowing literal (`1e999`) gives infinity.
    package static func float(_ text: String) -> Double? {
        let s = Array(strip(Array(text.unicodeScalars)))
        var i = 0
        var ascii = ""
        if i < s.count, s[i] == "+" || s[i] == "-" {
            ascii.unicodeScalars.append(s[i])
            i += 1
        }
        let word = String(String.UnicodeScalarView(s[i...])).lowercased()
        if word == "inf" || word == "infinity" { return ascii == "-" ? -.infinity : .infinity }
        if word == "nan" { return .nan }

        let integer = digitPart(s, from: &i)
        guard let integerDigits = integer else { return nil }   // malformed underscores
        var fraction = ""
        if i < s.count, s[i] == "." {
            i += 1
            guard let digits = digitPart(s, from: &i) else { return nil }
            fraction = digits
        }
        // `number ::= [digitpart] "." digitpart | digitpart ["."]`: some digit is needed.
        guard !integerDigits.isEmpty || !fraction.isEmpty else { return nil }
        ascii += (integerDigits.isEmpty ? "0" : integerDigits) + "." + (fraction.isEmpty ? "0" : fraction)
        if i < s.count, s[i] == "e" || s[i] == "E" {
            i += 1
            var sign = ""
            if i < s.count, s[i] == "+" || s[i] == "-" {
                sign = String(Character(s[i]))
                i += 1
            }
            guard let exponent = digitPart(s, from: &i), !exponent.isEmpty else { return nil }
            ascii += "e" + sign + exponent
        }
        guard i == s.count else { return nil }
        // Only [+-0-9.e] reach Swift's parser, which then agrees with Python's (correctly
        // rounded, overflow to infinity).
        return Double(ascii)
    }

    /// Python's `int(text)` (base 10): surrounding whitespace ignored, an optional sign, any
    /// script's decimal digits, `_` between digits. Nil where Python raises `ValueError`, and
    /// for values beyond `Int` (Python's integers are unbounded).
    package static func int(_ text: String) -> Int? {
        let s = Array(strip(Array(text.unicodeScalars)))
        var i = 0
        var sign = ""
        if i < s.count, s[i] == "+" || s[i] == "-" {
            sign = s[i] == "-" ? "-" : ""
            i += 1
        }
        guard let digits = digitPart(s, from: &i), !digits.isEmpty, i == s.count else { return nil }
        return Int(sign + digits)
    }

    /// `digit (["_"] digit)*` at `i`, as ASCII digits: "" when no digit is there, nil when an
    /// underscore is not between two digits. Advances `i` past what it read.
    private static func digitPart(_ s: [Unicode.Scalar], from i: inout Int) -> String? {
        var digits = ""
        while i < s.count {
            if let value = asciiDigit(s[i]) {
                digits.unicodeScalars.append(value)
                i += 1
            } else if s[i] == "_" {
                guard !digits.isEmpty, i + 1 < s.count, asciiDigit(s[i + 1]) != nil else { return nil }
                i += 1
            } else {
                break
            }
        }
        return digits
    }

    /// The ASCII digit for a decimal digit of any script (Python converts them before parsing).
    private static func asciiDigit(_ scalar: Unicode.Scalar) -> Unicode.Scalar? {
        guard isDigit(scalar), let value = scalar.properties.numericValue, value >= 0, value <= 9 else { return nil }
        return Unicode.Scalar(UInt8(48 + Int(value)))
    }
}
