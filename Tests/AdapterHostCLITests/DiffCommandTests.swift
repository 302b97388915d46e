import Foundation
import SafeTensors
import Tensor
import Testing

/// `adapterhost diff` end to end, on the tiny SD1 model (HostTests' fixture, read in place).
@Suite struct DiffCommandTests {
    static let tinySD1 = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("HostTests/Fixtures/models/sd1.safetensors").path

    /// The changed tensors: a UNet linear weight, a text-encoder bias, a VAE conv weight.
    static let changedKeys = [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.bias",
        "first_stage_model.decoder.conv_in.weight",
    ]

    /// base = the tiny model, tuned = the same with `changedKeys` scaled by 1.25.
    func makeCheckpoints(_ dir: ScratchDirectory) throws -> (base: String, tuned: String) {
        let base = dir.file("base.safetensors"), tuned = dir.file("tuned.safetensors")
        try FileManager.default.copyItem(atPath: Self.tinySD1, toPath: base)
        let file = try SafeTensorsFile(path: base)
        var writer = SafeTensorsWriter(metadata: file.metadata)
        for name in file.names {
            let t = try file.tensor(named: name)
            writer.add(name, tensor: Self.changedKeys.contains(name) ? t.to(.f32).scaled(by: 1.25).to(.f16) : t)
        }
        try writer.write(to: tuned)
        return (base, tuned)
    }

    @Test func writesOnlyTheChangedTensors() throws {
        let dir = try ScratchDirectory()
        let (base, tuned) = try makeCheckpoints(dir)
        let baseBytes = try Data(contentsOf: URL(fileURLWithPath: base))
        let tunedBytes = try Data(contentsOf: URL(fileURLWithPath: tuned))
        let out = dir.file("diff.safetensors")
        let result = try CLI.run(["diff", "--base", base, "--tuned", tuned, "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(summary["written_tensors"] as? Int == 3 && summary["compared_tensors"] as? Int == 965)
        #expect(summary["unreproducible_elements"] as? Int == 0 && summary["family"] as? String == "sd1")

        let diff = try SafeTensorsFile(path: out)
        #expect(Set(diff.names) == Set(Self.changedKeys))
        #expect(diff.metadata["adapterhost.method"] == "dreambooth")
        #expect(diff.metadata["adapterhost.base_sha256"] == summary["base_sha256"] as? String)
        // Each stored difference is tuned − base (in F32, or F16 when exact there).
        let a = try SafeTensorsFile(path: base), b = try SafeTensorsFile(path: tuned)
        for key in Self.changedKeys {
            let reference = (try b.tensor(named: key).to(.f32) - (try a.tensor(named: key).to(.f32)))
            #expect(try diff.tensor(named: key).to(.f32).floats == reference.floats, "\(key)")
        }
        // The inputs are untouched.
        #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == baseBytes)
        #expect(try Data(contentsOf: URL(fileURLWithPath: tuned)) == tunedBytes)
    }

    @Test func refusesToOverwriteTheBase() throws {
        let dir = try ScratchDirectory()
        let (base, tuned) = try makeCheckpoints(dir)
        let baseBytes = try Data(contentsOf: URL(fileURLWithPath: base))
        for out in [base, tuned] {
            let result = try CLI.run(["diff", "--base", base, "--tuned", tuned, "--out", out])
            #expect(result.status != 0)
            #expect(result.stderr.contains("refusing to overwrite"), "\(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == baseBytes)
        // No temporary file left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["base.safetensors", "tuned.safetensors"])
    }

    @Test func mismatchedKeysAreNamed() throws {
        let dir = try ScratchDirectory()
        let (base, _) = try makeCheckpoints(dir)
        let other = dir.file("other.safetensors")
        try SafeTensorsWriter.write(["just.one.weight": Tensor(zeros: [2, 2], dtype: .f16)], to: other)
        let result = try CLI.run(["diff", "--base", base, "--tuned", other, "--out", dir.file("d.safetensors")])
        #expect(result.status != 0)
        #expect(result.stderr.contains("alphas_cumprod") && result.stderr.contains("must have the same keys"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("d.safetensors")))
    }
}
