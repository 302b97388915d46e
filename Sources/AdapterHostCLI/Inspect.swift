import ArgumentParser
import Foundation
import Host
import SafeTensors
import Tensor

/// `adapterhost inspect FILE [--json]`: what a safetensors file holds.
///
/// The command is split in three so that more can be reported later without touching the
/// rest: `InspectReport` gathers facts (the core ones from the file; `sections` for optional
/// extras such as the adapter method/format a detector recognises), and two renderers turn a
/// report into an aligned table or stable JSON. A new section is one more `InspectSection`
/// appended in `run()`: it brings its own JSON key and table lines.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a safetensors file's tensors and metadata.",
        discussion: """
            Tensors are listed sorted by name (UTF-8 byte order). With --json the output is one \
            JSON object with, in this order, the keys file, file_size, header_size (bytes of \
            the JSON header, without the 8-byte length prefix), parameter_count, metadata \
            (keys sorted) and tensors ([{name, dtype, shape, bytes}]).
            A file that breaks a rule of the format prints one line, \
            "adapterhost: error: <file>: <rule>", on stderr and exits with status 1.
            """
    )

    @Argument(help: "The file to inspect.") var file: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var report: InspectReport
        do {
            report = try InspectReport(path: file)
        } catch {
            // One line on stderr, nothing on stdout (SafeTensorsError.description is
            // "<file>: <rule>" with control characters escaped).
            fputs("adapterhost: error: \(error)\n", stderr)
            throw ExitCode(1)
        }
        // Extension point: adapter-method detection appends its section here.
        if let section = AdapterSection.make(path: file) { report.sections.append(section) }
        let text = json ? InspectRenderer.json(report) : InspectRenderer.table(report)
        // stdio, not FileHandle: a closed pipe (`| head`) must not trap.
        fputs(text, stdout)
    }
}

/// An optional block of an inspect report (e.g. the detected adapter method).
protocol InspectSection {
    /// Key of this section in the JSON object (after the core keys).
    var jsonKey: String { get }
    /// Value of this section in the JSON output.
    var jsonValue: JSONValue { get }
    /// Heading of this section in the table output.
    var title: String { get }
    /// Lines of this section in the table output (without indentation).
    var tableLines: [String] { get }
}

/// The facts `inspect` reports about a file.
struct InspectReport {
    struct TensorRow {
        let name: String
        let dtype: DType
        let shape: [Int]
        let bytes: Int
    }

    let file: String
    let fileSize: Int
    let headerSize: Int
    let parameterCount: Int
    let metadata: [String: String]
    /// Sorted by name (UTF-8 byte order).
    let tensors: [TensorRow]
    /// Optional extras, rendered after the core facts in the order added.
    var sections: [InspectSection] = []

    /// Opens and validates `path` (header only; no tensor data is read).
    init(path: String) throws(SafeTensorsError) {
        let st = try SafeTensorsFile(path: path)
        file = path
        fileSize = st.fileSize
        headerSize = st.headerByteCount
        parameterCount = st.parameterCount
        metadata = st.metadata
        tensors = st.tensorInfos
            .sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
            .map { TensorRow(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: $0.byteCount) }
    }
}

/// A JSON value whose objects keep their key order, for stable output.
indirect enum JSONValue {
    case string(String)
    case int(Int)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// Pretty-printed (2-space indent): objects and arrays one member per line, except
    /// arrays of scalars and objects inside arrays, which stay on one line.
    func rendered(indent: Int = 0, compact: Bool = false) -> String {
        let pad = String(repeating: "  ", count: indent + 1), close = String(repeating: "  ", count: indent)
        switch self {
        case .string(let s): return JSONValue.quote(s)
        case .int(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array(let items):
            if items.isEmpty { return "[]" }
            let scalars = items.allSatisfy { $0.isScalar }
            if compact || scalars { return "[" + items.map { $0.rendered(compact: true) }.joined(separator: ", ") + "]" }
            return "[\n" + items.map { pad + $0.rendered(indent: indent + 1, compact: true) }.joined(separator: ",\n") + "\n\(close)]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            if compact {
                return "{" + members.map { "\(JSONValue.quote($0.0)): \($0.1.rendered(compact: true))" }.joined(separator: ", ") + "}"
            }
            return "{\n" + members.map { "\(pad)\(JSONValue.quote($0.0)): \($0.1.rendered(indent: indent + 1))" }
                .joined(separator: ",\n") + "\n\(close)}"
        }
    }

    private var isScalar: Bool {
        switch self {
        case .array, .object: return false
        default: return true
        }
    }

    /// A JSON string literal (`json.dumps(s, ensure_ascii=False)`).
    static func quote(_ s: String) -> String { PythonJSON.string(s, ensureASCII: false) }
}

/// Turns a report into text.
enum InspectRenderer {
    static func json(_ r: InspectReport) -> String {
        var members: [(String, JSONValue)] = [
            ("file", .string(r.file)),
            ("file_size", .int(r.fileSize)),
            ("header_size", .int(r.headerSize)),
            ("parameter_count", .int(r.parameterCount)),
            ("metadata", .object(r.metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                .map { ($0, .string(r.metadata[$0]!)) })),
            ("tensors", .array(r.tensors.map { t in
                .object([("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)),
                         ("shape", .array(t.shape.map { .int($0) })), ("bytes", .int(t.bytes))])
            })),
        ]
        for section in r.sections { members.append((section.jsonKey, section.jsonValue)) }
        return JSONValue.object(members).rendered() + "\n"
    }

    /// Metadata values longer than this are cut in the table (JSON output has them whole).
    static let maxMetadataWidth = 100

    static func table(_ r: InspectReport) -> String {
        var lines: [String] = []
        let dtypeCounts = Dictionary(grouping: r.tensors, by: \.dtype).map { ($0.key.rawValue, $0.value.count) }
            .sorted { $0.0 < $1.0 }.map { "\($0.0) ×\($0.1)" }.joined(separator: ", ")
        lines += alignedPairs([
            ("File", printable(r.file)),
            ("File size", "\(grouped(r.fileSize)) bytes (\(binarySize(r.fileSize)))"),
            ("Header size", "\(grouped(r.headerSize)) bytes"),
            ("Tensors", r.tensors.isEmpty ? "0" : "\(r.tensors.count) (\(dtypeCounts))"),
            ("Parameters", "\(grouped(r.parameterCount))\(r.parameterCount >= 1000 ? " (\(decimalSize(r.parameterCount)))" : "")"),
        ])
        lines.append("")
        if r.metadata.isEmpty {
            lines.append("Metadata: none")
        } else {
            lines.append("Metadata (\(r.metadata.count)):")
            let keys = r.metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            lines += alignedPairs(keys.map { (printable($0), truncated(printable(r.metadata[$0]!))) },
                                  labelSuffix: "", gap: "  ").map { "  " + $0 }
        }
        for section in r.sections {
            lines.append("")
            lines.append("\(section.title):")
            lines += section.tableLines.map { "  " + $0 }
        }
        if !r.tensors.isEmpty {
            lines.append("")
            let rows = r.tensors.map { t in
                [printable(t.name), t.dtype.rawValue, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", grouped(t.bytes)]
            }
            lines += alignedTable(header: ["Name", "DType", "Shape", "Bytes"], rows: rows, rightAligned: [3])
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Formatting helpers

    /// `label<suffix> value` lines with the values aligned (labels padded to one width).
    private static func alignedPairs(_ pairs: [(String, String)], labelSuffix: String = ":", gap: String = " ") -> [String] {
        let labels = pairs.map { $0.0 + labelSuffix }
        let width = labels.map(displayWidth).max() ?? 0
        return zip(labels, pairs).map { label, pair in padded(label, to: width) + gap + pair.1 }
    }

    /// Columns separated by two spaces; `rightAligned` columns are padded on the left.
    static func alignedTable(header: [String], rows: [[String]], rightAligned: Set<Int>) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { displayWidth($0[c]) }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { c, cell in
                if rightAligned.contains(c) { return padded(cell, to: widths[c], left: true) }
                return c == row.count - 1 ? cell : padded(cell, to: widths[c])
            }.joined(separator: "  ")
        }
    }

    private static func padded(_ s: String, to width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - displayWidth(s)))
        return left ? fill + s : s + fill
    }

    /// Terminal columns `s` takes: 2 for East Asian wide and emoji scalars, 0 for combining
    /// marks, 1 otherwise (an approximation of wcwidth good enough for tensor names).
    static func displayWidth(_ s: String) -> Int {
        var width = 0
        for scalar in s.unicodeScalars {
            let v = scalar.value
            switch scalar.properties.generalCategory {
            case .nonspacingMark, .enclosingMark, .format: continue
            default: break
            }
            let wide = (0x1100...0x115F).contains(v) || (0x2E80...0xA4CF).contains(v) || (0xAC00...0xD7A3).contains(v)
                || (0xF900...0xFAFF).contains(v) || (0xFE30...0xFE4F).contains(v) || (0xFF00...0xFF60).contains(v)
                || (0xFFE0...0xFFE6).contains(v) || (0x1F300...0x1F64F).contains(v) || (0x1F900...0x1F9FF).contains(v)
                || (0x20000...0x3FFFD).contains(v)
            width += wide ? 2 : 1
        }
        return width
    }

    /// Backslash and control characters (C0, DEL, C1) escaped, so a name or value cannot
    /// break the table or send escape sequences to the terminal.
    static func printable(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value):
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func truncated(_ s: String) -> String {
        s.count <= maxMetadataWidth ? s : String(s.prefix(maxMetadataWidth - 1)) + "…"
    }

    /// 1234567 → "1,234,567".
    static func grouped(_ n: Int) -> String {
        let digits = Array(String(n.magnitude))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(d)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// 1536 → "1.5 KiB".
    static func binarySize(_ n: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(n) bytes" : String(format: "%.1f %@", value, units[unit])
    }

    /// 2_570_000 → "2.57 M".
    static func decimalSize(_ n: Int) -> String {
        let units = ["", "K", "M", "B", "T"]
        var value = Double(n), unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return String(format: "%.2f %@", value, units[unit])
    }
}
