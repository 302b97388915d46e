import Foundation
import SafeTensors
import Tensor
import Testing

/// `adapterhost extract` end to end on the tiny SD1 checkpoint.
@Suite struct ExtractCommandTests {
    static let changed = [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",   // [32, 4]
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",      // [4, 32]
    ]
    static let te = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"

    /// base = the tiny model; tuned = the same with `changed` (and `te`, by `teChange`) altered.
    func checkpoints(_ dir: ScratchDirectory, teChange: Float) throws -> (String, String) {
        let base = OpsCLI.model("sd1.safetensors"), tuned = dir.file("tuned.safetensors")
        let file = try SafeTensorsFile(path: base)
        var writer = SafeTensorsWriter(metadata: file.metadata)
        for name in file.names {
            let t = try file.tensor(named: name)
            if Self.changed.contains(name) {
                let bump = Tensor(shape: t.shape, values: (0..<t.count).map { Float(($0 * 37) % 11) / 50 - 0.1 })
                writer.add(name, tensor: (t.to(.f32) + bump).to(.f16))
            } else if name == Self.te {
                writer.add(name, tensor: (t.to(.f32) + Tensor(shape: t.shape, values: [Float](repeating: teChange, count: t.count))).to(.f16))
            } else {
                writer.add(name, tensor: t)
            }
        }
        try writer.write(to: tuned)
        return (base, tuned)
    }

    @Test func extractsTheChangedLayers() throws {
        let dir = try ScratchDirectory()
        let (base, tuned) = try checkpoints(dir, teChange: 0.001)
        let out = dir.file("x.safetensors")
        let result = try CLI.run(["extract", "--base", base, "--tuned", tuned, "--rank", "2", "--out", out, "--json", "--quiet"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try OpsCLI.json(result)
        #expect(summary["family"] as? String == "sd1" && summary["modules"] as? Int == 2)
        #expect(summary["text_encoder_extracted"] as? Bool == false)
        let lora = try SafeTensorsFile(path: out)
        let prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"
        #expect(Set(lora.names) == Set(["ff_net_0_proj", "attn2_to_k"].flatMap { m in
            ["lora_down.weight", "lora_up.weight", "alpha"].map { "\(prefix)\(m).\($0)" } }))
        #expect(try lora.tensor(named: "\(prefix)attn2_to_k.lora_down.weight").shape == [2, 32])
        #expect(try lora.tensor(named: "\(prefix)attn2_to_k.alpha").floats == [2])
        #expect(lora.metadata["ss_network_dim"] == "2" && lora.metadata["ss_base_model_version"] == "sd_v1")
        // The text encoder changed by 0.001 < 0.01: skipped, and reported.
        let skipped = try #require(summary["skipped"] as? [[String: String]])
        #expect(skipped.contains { $0["name"] == "lora_te_text_model_encoder_layers_0_self_attn_q_proj" && $0["reason"]!.contains("min-diff") })

        // With a lower --min-diff the text encoder comes along.
        let out2 = dir.file("y.safetensors")
        let again = try CLI.run(["extract", "--base", base, "--tuned", tuned, "--rank", "2", "--min-diff", "0.0001", "--out", out2, "--quiet"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try SafeTensorsFile(path: out2).names.contains("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"))
        #expect(again.stdout.contains("text encoders: extracted"))
    }

    @Test func badInputsFailWithOneLineAndWriteNothing() throws {
        let dir = try ScratchDirectory()
        let base = OpsCLI.model("sd1.safetensors"), out = dir.file("o.safetensors")
        try OpsCLI.expectFailure(try CLI.run(["extract", "--base", base, "--tuned", dir.file("nope.safetensors"), "--rank", "2", "--out", out]),
                                 mentioning: "nope.safetensors", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["extract", "--base", base, "--tuned", base, "--rank", "0", "--out", out]),
                                 mentioning: "--rank", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["extract", "--base", base, "--tuned", base, "--rank", "2", "--out", out]),
                                 mentioning: "no extractable layer differs", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["extract", "--base", base, "--tuned", OpsCLI.model("sdxl.safetensors"), "--rank", "2", "--out", out]),
                                 mentioning: "sdxl", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["extract", "--base", base, "--tuned", base, "--rank", "2", "--clamp-quantile", "1.5", "--out", out]),
                                 mentioning: "--clamp-quantile", dir: dir)
    }
}
