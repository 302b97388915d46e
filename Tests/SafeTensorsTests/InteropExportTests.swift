import Foundation
import Testing
import Tensor
@testable import SafeTensors

/// Files our writer produces for tools/check_safetensors_interop.py to read with Python's
/// safetensors. The test always writes and re-reads them itself; when the environment variable
/// ADAPTERHOST_INTEROP_DIR names a directory, the files (and a JSON spec per file) are left
/// there for the script.
@Suite struct InteropExportTests {
    struct Spec: Encodable {
        struct Entry: Encodable {
            let name: String
            let dtype: String
            let shape: [Int]
        }
        let metadata: [String: String]
        let tensors: [Entry]
    }

    /// Every dtype, scalar and zero-size tensors, names that need escaping, a streamed source
    /// and a non-contiguous source; metadata with several keys (one file) and one key (other).
    static let entries: [(String, DType, [Int])] = [
        ("f64", .f64, [3, 2]), ("f32", .f32, [2, 3, 4]), ("f16", .f16, [5]), ("bf16", .bf16, [2, 4]),
        ("f8_e4m3", .f8e4m3, [9]), ("f8_e5m2", .f8e5m2, [3, 3]), ("i64", .i64, [4]), ("i32", .i32, [2, 2]),
        ("i16", .i16, [3]), ("i8", .i8, [6]), ("u8", .u8, [300]), ("bool", .bool, [7]),
        ("scalar", .f32, []), ("empty", .f16, [0, 4]), ("quote\"back\\slash\ttab\u{1}", .i32, [1]),
        ("\u{65E5}\u{672C}/\u{1F600}", .bf16, [2]), ("streamed", .f32, [10, 3]), ("transposed", .f32, [4, 3]),
    ]

    private static func writer(metadata: [String: String]) -> SafeTensorsWriter {
        var w = SafeTensorsWriter(metadata: metadata)
        for (k, (name, dtype, shape)) in entries.enumerated() {
            switch name {
            case "streamed":
                let bytes = Formula.bytes(dtype, k: k, shape: shape)
                w.add(name, dtype: dtype, shape: shape) { sink in
                    for start in stride(from: 0, to: bytes.count, by: 13) {
                        try bytes[start..<min(bytes.count, start + 13)].withUnsafeBytes { try sink($0) }
                    }
                }
            case "transposed":
                // Logical [4, 3] from a [3, 4] buffer: base[j][i] = value(i*3 + j).
                let logical = Formula.tensor(dtype, k: k, shape: shape).floats
                var base = [Float](repeating: 0, count: 12)
                for i in 0..<4 { for j in 0..<3 { base[j * 4 + i] = logical[i * 3 + j] } }
                w.add(name, tensor: Tensor(shape: [3, 4], values: base).transposed())
            default:
                w.add(name, tensor: Formula.tensor(dtype, k: k, shape: shape))
            }
        }
        return w
    }

    static let files: [(String, [String: String])] = [
        ("swift_many_metadata.safetensors", ["format": "pt", "creator": "AdapterHost \u{2713}", "empty": "", "nl": "a\nb"]),
        ("swift_one_metadata.safetensors", ["format": "pt"]),
        ("swift_no_metadata.safetensors", [:]),
    ]

    @Test func writeFilesForPython() throws {
        let temporary = try TemporaryDirectory()
        let exportDir = ProcessInfo.processInfo.environment["ADAPTERHOST_INTEROP_DIR"] ?? temporary.path
        for (fileName, metadata) in Self.files {
            let path = (exportDir as NSString).appendingPathComponent(fileName)
            try Self.writer(metadata: metadata).write(to: path)
            let spec = Spec(metadata: metadata, tensors: Self.entries.map { .init(name: $0.0, dtype: $0.1.rawValue, shape: $0.2) })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(spec).write(to: URL(fileURLWithPath: path + ".json"))

            // Our own reader agrees with the formula, value by value.
            let file = try SafeTensorsFile(path: path)
            #expect(file.metadata == metadata)
            #expect(Set(file.names) == Set(Self.entries.map(\.0)))
            for (k, (name, dtype, shape)) in Self.entries.enumerated() {
                let t = try file.tensor(named: name)
                #expect(t.dtype == dtype && t.shape == shape, "\(name)")
                #expect(rawBytes(t) == Formula.bytes(dtype, k: k, shape: shape), "\(name)")
            }
        }
    }
}
