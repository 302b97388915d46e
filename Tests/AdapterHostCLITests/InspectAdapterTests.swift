import Foundation
import SafeTensors
import Tensor
import Testing

/// The `inspect` section for adapters and checkpoints; hashes against coreutils' sha256sum.
@Suite struct InspectAdapterTests {
    @Test func kohyaLoRAWithTriggerWords() throws {
        let dir = try ScratchDirectory()
        let path = dir.file("style.safetensors")
        var writer = SafeTensorsWriter(metadata: [
            "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0",
            "ss_base_model_version": "sd_v1", "ss_tag_frequency": #"{"5_x": {"sks style": 9, "1girl": 4, "solo": 4}}"#,
            "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.title": "Style",
            "sshs_model_hash": String(repeating: "0", count: 64),
        ])
        for (i, m) in ["attn1_to_q", "attn1_to_k"].enumerated() {
            let name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_\(m)"
            writer.add("\(name).lora_down.weight", tensor: Tensor(shape: [4, 8], values: (0..<32).map { Float($0 + i) / 64 }).to(.f16))
            writer.add("\(name).lora_up.weight", tensor: Tensor(shape: [8, 4], values: (0..<32).map { Float($0 - i) / 64 }).to(.f16))
            writer.add("\(name).alpha", tensor: Tensor(shape: [], values: [2]))
        }
        try writer.write(to: path)
        let result = try CLI.run(["inspect", path, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try OpsCLI.json(result)
        let adapter = try #require(object["adapter"] as? [String: Any])
        #expect(adapter["method"] as? [String] == ["lora"] && adapter["format"] as? String == "kohya")
        #expect(adapter["modules"] as? Int == 2 && adapter["rank"] as? Int == 4 && adapter["alpha"] as? String == "2.0")
        #expect(adapter["base_model"] as? String == "sd1")
        #expect(adapter["trigger_words"] as? [String] == ["sks style", "1girl", "solo"])
        let hashes = try #require(adapter["hashes"] as? [String: Any])
        let file = try SafeTensorsFile(path: path)
        let sha = try OpsCLI.sha256sum(path), addnet = try OpsCLI.sha256sum(path, from: 8 + file.headerByteCount)
        #expect(hashes["sha256"] as? String == sha && hashes["autov2"] as? String == String(sha.prefix(10)))
        #expect(hashes["addnet"] as? String == addnet && hashes["addnet_short"] as? String == String(addnet.prefix(12)))
        #expect(hashes["sshs_model_hash_matches"] as? Bool == false)
        let kohya = try #require(adapter["kohya"] as? [String: String])
        #expect(kohya["ss_network_dim"] == "4")
        #expect((adapter["modelspec"] as? [String: String])?["title"] == "Style")

        let table = try CLI.run(["inspect", path])
        #expect(table.status == 0)
        #expect(table.stdout.contains("Adapter:\n  Method:      lora\n  Format:      kohya\n"))
        #expect(table.stdout.contains("  Triggers:    sks style, 1girl, solo\n"))
        #expect(table.stdout.contains("  sshs hash:   STALE"))
    }

    @Test func dynamicRanksAndLyCORIS() throws {
        let result = try CLI.run(["inspect", OpsCLI.lora("lycoris_mixed.safetensors"), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let adapter = try #require(try OpsCLI.json(result)["adapter"] as? [String: Any])
        #expect((adapter["method"] as? [String])?.count ?? 0 > 1)
        #expect(adapter["format"] as? String == "lycoris")
    }

    @Test func checkpointGetsAModelSection() throws {
        let path = OpsCLI.model("sd1.safetensors")
        let result = try CLI.run(["inspect", path, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try OpsCLI.json(result)
        #expect(object["adapter"] == nil)
        let model = try #require(object["model"] as? [String: Any])
        #expect(model["method"] as? [String] == ["checkpoint"] && model["family"] as? String == "sd1")
        let sha = try OpsCLI.sha256sum(path)
        let hashes = try #require(model["hashes"] as? [String: Any])
        #expect(hashes["sha256"] as? String == sha && hashes["autov2"] as? String == String(sha.prefix(10)))
    }
}
