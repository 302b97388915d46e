/// Character classes of Python's `re` on `str` patterns, which A1111's prompt regexes use.
enum PythonRegexClass {
    /// `\s`: what `str.isspace()` accepts (White_Space, plus the separators U+001C...U+001F).
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1c...0x1f).contains(scalar.value)
    }

    /// `\d`: a Unicode decimal digit (general category Nd).
    static func isDigit(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .decimalNumber
    }

    /// `\w` (and so `\b`): letters, numbers (what `str.isalnum()` accepts) and `_`.
    static func isWord(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "_" { return true }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// Python's `float(text)` for text of signs, dots and decimal digits (any script's digits
    /// count, as in Python); nil where Python raises `ValueError`.
    static func parseFloat(_ scalars: ArraySlice<Unicode.Scalar>) -> Double? {
        var ascii = ""
        for scalar in scalars {
            if isDigit(scalar), let value = scalar.properties.numericValue, value >= 0, value <= 9 {
                ascii.unicodeScalars.append(Unicode.Scalar(UInt8(48 + Int(value))))
            } else {
                ascii.unicodeScalars.append(scalar)
            }
        }
        // Swift's parser also takes "inf", "nan" and hex, which cannot occur: only [+-.0-9] reach here.
        return Double(ascii)
    }
}
