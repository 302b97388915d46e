import Foundation

/// JSON string literals exactly as Python's `json.dumps` writes them, for the files and texts
/// whose bytes the peers define (kohya metadata, A1111 infotext) and for our own JSON output.
package enum PythonJSON {
    /// `json.dumps(s, ensure_ascii=…)`: `"` and `\` escaped, `\n \r \t \b \f` by name, other
    /// controls as `\u00XX`; with `ensureASCII` every code unit outside ' '…'~' as `\uXXXX`
    /// (UTF-16, so astral characters become surrogate pairs, as Python writes them).
    package static func string(_ s: String, ensureASCII: Bool) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            case _ where ensureASCII && scalar.value >= 0x7F:
                for unit in String(scalar).utf16 { out += String(format: "\\u%04x", unit) }
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
