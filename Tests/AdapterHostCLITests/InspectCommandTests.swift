import Foundation
import Testing
import Tensor
import SafeTensors

/// Runs the built `adapterhost` binary, found next to the test bundle in the build products.
enum CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static var binary: URL {
        get throws {
            // The test runner (…/debug/AdapterHostPackageTests.xctest on Linux, or a
            // .xctest bundle inside …/debug on macOS) lives in the products directory.
            var candidates: [URL] = []
            let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            candidates.append(runner.deletingLastPathComponent())
            for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
                candidates.append(bundle.bundleURL.deletingLastPathComponent())
            }
            for dir in candidates {
                let url = dir.appendingPathComponent("adapterhost")
                if FileManager.default.isExecutableFile(atPath: url.path) { return url }
            }
            Issue.record("adapterhost not found in \(candidates.map(\.path)); build it first (swift build --product adapterhost)")
            throw CancellationError()
        }
    }

    static func run(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = try binary
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Outputs here are a few KB, below the pipe buffer: reading one then the other is safe.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }
}

final class ScratchDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "ah-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

@Suite struct InspectCommandTests {
    /// A small LoRA-like file: known tensors and metadata.
    private func sampleFile(_ dir: ScratchDirectory) throws -> String {
        var w = SafeTensorsWriter(metadata: ["ss_network_dim": "4", "format": "pt", "note": "a \"b\"\nc"])
        w.add("lora_unet.down.weight", tensor: Tensor(zeros: [4, 320], dtype: .f16))
        w.add("lora_unet.up.weight", tensor: Tensor(zeros: [320, 4], dtype: .f16))
        w.add("lora_unet.alpha", tensor: Tensor(scalar: 4))
        w.add("empty", tensor: Tensor(zeros: [0, 3], dtype: .bf16))
        w.add("te.\u{65E5}", tensor: Tensor(zeros: [2, 3, 5], dtype: .i64))
        let path = dir.file("lora.safetensors")
        try w.write(to: path)
        return path
    }

    @Test func jsonOutput() throws {
        let dir = try ScratchDirectory()
        let path = try sampleFile(dir)
        let result = try CLI.run(["inspect", path, "--json"])
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])

        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(object["file"] as? String == path)
        #expect(object["file_size"] as? Int == bytes.count)
        #expect(object["header_size"] as? Int == headerLength)
        #expect(object["parameter_count"] as? Int == 4 * 320 * 2 + 1 + 0 + 30)
        #expect(object["metadata"] as? [String: String] == ["ss_network_dim": "4", "format": "pt", "note": "a \"b\"\nc"])
        let tensors = try #require(object["tensors"] as? [[String: Any]])
        #expect(tensors.map { $0["name"] as? String } == ["empty", "lora_unet.alpha", "lora_unet.down.weight",
                                                          "lora_unet.up.weight", "te.\u{65E5}"])
        #expect(tensors.map { $0["dtype"] as? String } == ["BF16", "F32", "F16", "F16", "I64"])
        #expect(tensors.map { $0["shape"] as? [Int] } == [[0, 3], [], [4, 320], [320, 4], [2, 3, 5]])
        #expect(tensors.map { $0["bytes"] as? Int } == [0, 4, 2560, 2560, 240])
        #expect(Set(object.keys) == ["file", "file_size", "header_size", "parameter_count", "metadata", "tensors"])
        for t in tensors { #expect(Set(t.keys) == ["name", "dtype", "shape", "bytes"]) }

        // Stable: keys in the documented order, same text on every run.
        let order = ["\"file\"", "\"file_size\"", "\"header_size\"", "\"parameter_count\"", "\"metadata\"", "\"tensors\""]
        let positions = order.map { result.stdout.range(of: $0)!.lowerBound }
        #expect(positions == positions.sorted())
        #expect(try CLI.run(["inspect", path, "--json"]).stdout == result.stdout)
    }

    @Test func tableOutput() throws {
        let dir = try ScratchDirectory()
        let path = try sampleFile(dir)
        let result = try CLI.run(["inspect", path])
        #expect(result.status == 0 && result.stderr.isEmpty)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        #expect(lines.contains("File:        \(path)"))
        #expect(lines.contains { $0.hasPrefix("File size:   \(size.formatted(.number.grouping(.automatic).locale(Locale(identifier: "en_US")))) bytes") })
        #expect(lines.contains("Parameters:  2,591 (2.59 K)"))
        #expect(lines.contains("  note            a \"b\"\\nc"))
        #expect(lines.contains("  ss_network_dim  4"))
        // The tensor table: header then rows, columns aligned.
        let header = try #require(lines.firstIndex { $0.hasPrefix("Name ") })
        let table = Array(lines[header...].prefix(6))
        #expect(table == [
            "Name                   DType  Shape      Bytes",
            "empty                  BF16   [0, 3]         0",
            "lora_unet.alpha        F32    []             4",
            "lora_unet.down.weight  F16    [4, 320]   2,560",
            "lora_unet.up.weight    F16    [320, 4]   2,560",
            // 日 is two columns wide: 3 + 2 + 16 spaces of padding = 21, the name column.
            "te.\u{65E5}" + String(repeating: " ", count: 16) + "  I64    [2, 3, 5]    240",
        ])
    }

    @Test func malformedFileFailsWithOneLine() throws {
        let dir = try ScratchDirectory()
        let path = dir.file("bad.safetensors")
        let header = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + [0, 0, 0, 0]
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        for arguments in [["inspect", path], ["inspect", path, "--json"]] {
            let result = try CLI.run(arguments)
            #expect(result.status == 1)
            #expect(result.stdout.isEmpty)
            #expect(result.stderr == "adapterhost: error: \(path): tensor \"w\": dtype F32 and shape [2] need 8 bytes but data_offsets [0, 4] span 4\n")
        }
    }

    @Test func otherFailures() throws {
        let dir = try ScratchDirectory()
        let missing = dir.file("missing.safetensors")
        var result = try CLI.run(["inspect", missing])
        #expect(result.status == 1 && result.stdout.isEmpty)
        #expect(result.stderr == "adapterhost: error: \(missing): cannot open: No such file or directory\n")

        let tiny = dir.file("tiny.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: tiny))
        result = try CLI.run(["inspect", tiny, "--json"])
        #expect(result.status == 1 && result.stdout.isEmpty)
        #expect(result.stderr == "adapterhost: error: \(tiny): file is 3 bytes, too small for the 8-byte header length\n")

        // A hostile tensor name cannot add lines to the error.
        let evil = dir.file("evil.safetensors")
        let header = #"{"a\nadapterhost: ok":{"dtype":"X","shape":[],"data_offsets":[0,0]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: evil))
        result = try CLI.run(["inspect", evil])
        #expect(result.status == 1 && result.stdout.isEmpty)
        #expect(result.stderr == "adapterhost: error: \(evil): tensor \"a\\nadapterhost: ok\": unknown dtype \"X\"\n")
    }

    @Test func emptyFileObject() throws {
        let dir = try ScratchDirectory()
        let path = dir.file("empty.safetensors")
        try SafeTensorsWriter().write(to: path)
        let result = try CLI.run(["inspect", path, "--json"])
        #expect(result.status == 0)
        #expect(result.stdout == """
            {
              "file": \(String(data: try JSONSerialization.data(withJSONObject: path, options: [.fragmentsAllowed, .withoutEscapingSlashes]), encoding: .utf8)!),
              "file_size": 16,
              "header_size": 8,
              "parameter_count": 0,
              "metadata": {},
              "tensors": []
            }

            """)
    }
}
