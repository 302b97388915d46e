@testable import Host
import Testing

/// `PythonJSON.string` against Python's own `json.dumps` output for the same text (values
/// printed by python3 -c 'import json; print(json.dumps(s)); print(json.dumps(s, ensure_ascii=False))').
@Suite struct PythonJSONTests {
    static let text = "a \"q\" \\ \n\r\t\u{08}\u{0C}\u{01}\u{7F} é 猫 😀"

    @Test func ensureASCIIEqualsPython() {
        #expect(PythonJSON.string(Self.text, ensureASCII: true)
                == #""a \"q\" \\ \n\r\t\b\f\u0001\u007f \u00e9 \u732b \ud83d\ude00""#)
    }

    @Test func unicodeKeptEqualsPython() {
        #expect(PythonJSON.string(Self.text, ensureASCII: false)
                == "\"a \\\"q\\\" \\\\ \\n\\r\\t\\b\\f\\u0001\u{7F} é 猫 😀\"")
    }
}
