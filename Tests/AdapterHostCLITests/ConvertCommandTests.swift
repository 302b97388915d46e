import Foundation
import SafeTensors
import Tensor
import Testing

/// `adapterhost convert` end to end: kohya → PEFT → kohya gives the file's tensors back.
@Suite struct ConvertCommandTests {
    @Test func roundTrip() throws {
        let dir = try ScratchDirectory()
        let input = OpsCLI.lora("kohya_sd1_locon.safetensors")
        let peft = dir.file("p.safetensors"), back = dir.file("k.safetensors")
        let toPEFT = try CLI.run(["convert", input, "--to", "peft", "--out", peft, "--json"])
        #expect(toPEFT.status == 0, "\(toPEFT.stderr)")
        let summary = try OpsCLI.json(toPEFT)
        #expect(summary["from"] as? String == "kohya" && summary["to"] as? String == "peft" && summary["modules"] as? Int == 19)
        let p = try SafeTensorsFile(path: peft)
        #expect(p.names.contains("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"))
        #expect(p.names.contains("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"))
        #expect(p.metadata["lora_adapter_metadata"]?.contains("\"unet.rank_pattern\"") == true)
        #expect(p.metadata["format"] == "pt")

        let toKohya = try CLI.run(["convert", peft, "--to", "kohya", "--out", back])
        #expect(toKohya.status == 0, "\(toKohya.stderr)")
        #expect(toKohya.stdout.contains("peft → kohya"))
        let o = try SafeTensorsFile(path: input), k = try SafeTensorsFile(path: back)
        #expect(Set(o.names) == Set(k.names))
        for name in o.names {
            #expect(try o.tensor(named: name).to(.f32).floats == k.tensor(named: name).to(.f32).floats, "\(name)")
        }
    }

    @Test func badInputsFailWithOneLineAndWriteNothing() throws {
        let dir = try ScratchDirectory()
        let input = OpsCLI.lora("kohya_sd1_locon.safetensors"), out = dir.file("o.safetensors")
        try OpsCLI.expectFailure(try CLI.run(["convert", input, "--to", "comfy", "--out", out]), mentioning: "--to must be", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["convert", OpsCLI.lora("lycoris_loha.safetensors"), "--to", "peft", "--out", out]),
                                 mentioning: "loha", dir: dir)
        try OpsCLI.expectFailure(try CLI.run(["convert", input, "--to", "peft", "--family", "sdxl", "--out", out]),
                                 mentioning: "made for sd1", dir: dir)
        let bogus = dir.file("bogus.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: bogus))
        try OpsCLI.expectFailure(try CLI.run(["convert", bogus, "--to", "peft", "--out", out]), mentioning: "bogus.safetensors", dir: dir,
                                 files: ["bogus.safetensors"])
    }
}
