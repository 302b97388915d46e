import Foundation
import SafeTensors
import Tensor
import Testing

/// `adapterhost resize` end to end.
@Suite struct ResizeCommandTests {
    @Test func fixedAndDynamicRanks() throws {
        let dir = try ScratchDirectory()
        let input = OpsCLI.lora("kohya_sd1_locon.safetensors")
        let out = dir.file("r.safetensors")
        let result = try CLI.run(["resize", input, "--rank", "1", "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try OpsCLI.json(result)
        let layers = try #require(summary["layers"] as? [[String: Any]])
        #expect(layers.count == 19 && layers.allSatisfy { $0["new_rank"] as? Int == 1 })
        #expect(layers.allSatisfy { ($0["fro_retained"] as? Double ?? 2) <= 1 })
        // alpha keeps the scale: new alpha = old alpha / old rank · 1.
        let original = try SafeTensorsFile(path: input), resized = try SafeTensorsFile(path: out)
        for name in original.names where name.hasSuffix(".alpha") {
            let rank = try original.tensor(named: name.replacingOccurrences(of: ".alpha", with: ".lora_down.weight")).shape[0]
            #expect(try resized.tensor(named: name).floats[0] == original.tensor(named: name).floats[0] / Float(rank), "\(name)")
        }
        #expect(resized.metadata["ss_network_dim"] == "1")
        #expect(resized.metadata["ss_training_comment"]?.hasPrefix("dimension is resized from 4 to 1") == true)

        let dynamic = try CLI.run(["resize", input, "--dynamic", "sv_fro=0.999", "--out", dir.file("d.safetensors"), "--verbose"])
        #expect(dynamic.status == 0, "\(dynamic.stderr)")
        #expect(dynamic.stdout.contains("sv_fro=0.999") && dynamic.stdout.contains("fro retained"))
        #expect(try SafeTensorsFile(path: dir.file("d.safetensors")).metadata["ss_network_dim"] == "Dynamic")
    }

    @Test func badInputsFailWithOneLineAndWriteNothing() throws {
        let dir = try ScratchDirectory()
        let input = OpsCLI.lora("kohya_sd1_locon.safetensors"), out = dir.file("o.safetensors")
        try OpsCLI.expectFailure(try CLI.run(["resize", input, "--out", out]), mentioning: "--rank", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["resize", input, "--dynamic", "sv_max=3", "--out", out]), mentioning: "--dynamic", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["resize", input, "--rank", "0", "--out", out]), mentioning: "--rank", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["resize", OpsCLI.model("sd1.safetensors"), "--rank", "2", "--out", out]),
                                 mentioning: "sd1.safetensors", dir: dir)
        // The output may not replace the input.
        let copy = dir.file("in.safetensors")
        try FileManager.default.copyItem(atPath: input, toPath: copy)
        let before = try Data(contentsOf: URL(fileURLWithPath: copy))
        try OpsCLI.expectFailure(try CLI.run(["resize", copy, "--rank", "2", "--out", copy]), mentioning: "in.safetensors", dir: dir,
                                 files: ["in.safetensors"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == before)
    }
}
