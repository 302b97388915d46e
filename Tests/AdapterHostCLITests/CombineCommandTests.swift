import Foundation
import SafeTensors
import Tensor
import Testing

/// Paths and checks shared by the combine/extract/resize/convert/inspect-adapter CLI tests.
enum OpsCLI {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    /// LoRA-family fixtures (tools/gen_lora_fixtures.py), read in place.
    static func lora(_ name: String) -> String { tests.appendingPathComponent("LoRATests/Fixtures/\(name)").path }
    /// The tiny SD models (tools/gen_model_fixtures.py), read in place.
    static func model(_ name: String) -> String { tests.appendingPathComponent("HostTests/Fixtures/models/\(name)").path }

    /// A failed run: status 1, nothing on stdout, exactly one line on stderr starting with
    /// "adapterhost: error:" and containing `mention`; the directory holds exactly `files`.
    static func expectFailure(_ result: CLI.Result, mentioning mention: String, dir: ScratchDirectory, files: [String] = [],
                              sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(result.status == 1, "status \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("adapterhost: error: ") && result.stderr.hasSuffix("\n"), sourceLocation: sourceLocation)
        #expect(result.stderr.dropLast().contains("\n") == false, "more than one line: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(mention), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == files.sorted(),
                "nothing may be written", sourceLocation: sourceLocation)
    }

    /// The JSON object a `--json` run printed.
    static func json(_ result: CLI.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    /// `sha256sum` of a file, or of its bytes from `offset` on (coreutils: an independent reference).
    static func sha256sum(_ path: String, from offset: Int = 0) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "tail -c +\(offset + 1) \"$0\" | sha256sum", path]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(String(decoding: data, as: UTF8.self).prefix(64))
    }
}

/// `adapterhost combine` end to end.
@Suite struct CombineCommandTests {
    @Test func concatDoublesTheRankAndWritesMetadata() throws {
        let dir = try ScratchDirectory()
        let out = dir.file("c.safetensors")
        let input = OpsCLI.lora("kohya_sd1_locon.safetensors")
        let result = try CLI.run(["combine", "\(input):0.5", "\(input):0.5", "--mode", "concat", "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try OpsCLI.json(result)
        #expect(summary["modules"] as? Int == 19 && summary["mode"] as? String == "concat")
        let original = try SafeTensorsFile(path: input), combined = try SafeTensorsFile(path: out)
        #expect(Set(combined.names) == Set(original.names))
        for name in original.names where name.hasSuffix(".lora_down.weight") {
            #expect(try combined.tensor(named: name).shape[0] == 2 * original.tensor(named: name).shape[0], "\(name)")
        }
        #expect(combined.metadata["ss_network_module"] == "networks.lora")
        #expect(combined.metadata["sshs_model_hash"] == (try OpsCLI.sha256sum(out, from: 8 + combined.headerByteCount)))
        #expect(combined.metadata["modelspec.architecture"] == "stable-diffusion-v1/lora")
    }

    @Test func svdAcceptsMixedTypes() throws {
        let dir = try ScratchDirectory()
        let out = dir.file("s.safetensors")
        let result = try CLI.run(["combine", OpsCLI.lora("kohya_sd1_locon.safetensors"), "\(OpsCLI.lora("lycoris_loha.safetensors")):-1",
                                  "--mode", "svd", "--rank", "3", "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("combined 2 files (svd)") && result.stdout.contains("relative error"))
        let file = try SafeTensorsFile(path: out)
        #expect(try file.names.filter { $0.hasSuffix(".alpha") }.allSatisfy { try file.tensor(named: $0).floats[0] <= 3 })
    }

    @Test func badInputsFailWithOneLineAndWriteNothing() throws {
        let dir = try ScratchDirectory()
        let out = dir.file("o.safetensors")
        let good = OpsCLI.lora("kohya_sd1_locon.safetensors")
        try OpsCLI.expectFailure(try CLI.run(["combine", dir.file("missing.safetensors"), "--mode", "concat", "--out", out]),
                                 mentioning: "missing.safetensors", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["combine", good, "--mode", "average", "--out", out]),
                                 mentioning: "--mode must be", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["combine", good, "--mode", "svd", "--out", out]),
                                 mentioning: "--rank", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["combine", good, OpsCLI.lora("lycoris_loha.safetensors"), "--mode", "concat", "--out", out]),
                                 mentioning: "--mode svd", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["combine", good, OpsCLI.lora("kohya_sdxl_sgm.safetensors"), "--mode", "concat", "--out", out]),
                                 mentioning: "different model families", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["combine", "\(good):abc:", "--mode", "concat", "--out", out]),
                                 mentioning: "abc", dir: dir)
    }
}
