import Foundation
import SafeTensors
import Tensor
import Testing

/// `adapterhost merge` end to end (the built binary): on the tiny SD1 model and peer-made
/// LoRAs from Tests/LoRATests/Fixtures with the peer's merged weights.
@Suite struct MergeCommandTests {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let models = tests.appendingPathComponent("HostTests/Fixtures/models").path
    static let loras = tests.appendingPathComponent("LoRATests/Fixtures").path

    static func lora(_ name: String) -> String { "\(loras)/\(name).safetensors" }

    /// BASE: a copy of a tiny model in the scratch directory, so its bytes and mtime are ours to watch.
    static func base(_ model: String, in dir: ScratchDirectory) throws -> String {
        let path = dir.file("\(model).safetensors")
        try FileManager.default.copyItem(atPath: "\(models)/\(model).safetensors", toPath: path)
        // An mtime in the past: a rewrite would move it.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_600_000_000)], ofItemAtPath: path)
        return path
    }

    /// A file's bytes and modification time.
    struct FileState: Equatable {
        let bytes: Data
        let mtime: Date
        init(_ path: String) throws {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            mtime = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date
        }
    }

    /// Spacing of F16 numbers at |x|.
    static func ulp16(_ x: Double) -> Double {
        let a = abs(x)
        guard a >= 0x1p-14 else { return 0x1p-24 }
        return Double(sign: .plus, exponent: Int(floor(log2(a))) - 10, significand: 1)
    }

    /// OUT has BASE's keys in BASE's order, with its shapes and dtypes; tensors not in
    /// `changed` are byte for byte BASE's. Returns OUT.
    static func checkLayout(out: String, base: String, changed: Set<String>) throws -> SafeTensorsFile {
        let merged = try SafeTensorsFile(path: out), original = try SafeTensorsFile(path: base)
        #expect(merged.names == original.names)
        for name in original.names {
            let a = try original.info(named: name), b = try merged.info(named: name)
            #expect(a.dtype == b.dtype && a.shape == b.shape, "\(name)")
            if !changed.contains(name) {
                let same = try original.tensor(named: name).withUnsafeBytes { x in
                    try merged.tensor(named: name).withUnsafeBytes { y in x.elementsEqual(y) }
                }
                #expect(same, "\(name) is not in the adapter but changed")
            }
        }
        return merged
    }

    /// Each changed tensor equals `want(key, base value, peer's merged value)` within one F16
    /// ulp (OUT stores F16: F32 sums rounded once).
    static func checkValues(_ merged: SafeTensorsFile, base: String, expected: SafeTensorsFile,
                            want: (String, Double, Double) -> Double) throws {
        let original = try SafeTensorsFile(path: base)
        for key in expected.names {
            let got = try merged.tensor(named: key)
            #expect(got.dtype == .f16, "\(key)")
            let w = try original.tensor(named: key).doubles, e = try expected.tensor(named: key).doubles
            let g = got.doubles
            var worst = 0.0
            for i in 0..<g.count {
                let target = want(key, w[i], e[i])
                let excess = abs(g[i] - target) - ulp16(max(abs(g[i]), abs(target)))
                worst = max(worst, excess)
            }
            #expect(worst <= 1e-7, "\(key): beyond one F16 ulp by \(worst)")
            #expect(g != w, "\(key) unchanged")
        }
    }

    @Test func mergesLikeThePeerAtWeightOne() throws {
        let dir = try ScratchDirectory()
        let base = try Self.base("sd1", in: dir)
        let before = try FileState(base)
        let out = dir.file("merged.safetensors")
        let result = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sd1_noalpha"), "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "19 of 19 modules applied → \(out)\n")
        #expect(result.stderr.isEmpty, "\(result.stderr)")

        // The peer's merge: diffusers load_lora_weights + fuse_lora (F32), weight 1.
        let expected = try SafeTensorsFile(path: "\(Self.loras)/kohya_sd1_noalpha.expected.safetensors")
        #expect(expected.names.count == 19)
        let merged = try Self.checkLayout(out: out, base: base, changed: Set(expected.names))
        try Self.checkValues(merged, base: base, expected: expected) { _, _, e in e }
        #expect(merged.metadata["adapterhost.merged_adapters"] == "kohya_sd1_noalpha.safetensors:1.0:1.0")
        #expect(merged.metadata["generator"] == "tools/gen_model_fixtures.py")

        // BASE untouched; OUT written atomically (no temporary file left).
        #expect(try FileState(base) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["merged.safetensors", "sd1.safetensors"])
    }

    /// `FILE:0.5:1.0`: text-encoder modules at 0.5, UNet modules at 1 — W + 0.5·(E − W) on
    /// the TE tensors, E on the UNet's; the summary as JSON.
    @Test func separateTextEncoderAndUNetWeightsWithJSON() throws {
        let dir = try ScratchDirectory()
        let base = try Self.base("sd1", in: dir)
        let before = try FileState(base)
        let out = dir.file("merged.safetensors")
        let result = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sd1_noalpha") + ":0.5:1.0", "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(summary["applied"] as? Int == 19 && summary["total"] as? Int == 19)
        #expect(summary["out"] as? String == out)
        #expect((summary["skipped"] as? [Any])?.isEmpty == true)
        #expect((summary["unclaimed_keys"] as? [Any])?.isEmpty == true)

        let expected = try SafeTensorsFile(path: "\(Self.loras)/kohya_sd1_noalpha.expected.safetensors")
        let merged = try Self.checkLayout(out: out, base: base, changed: Set(expected.names))
        let teKeys = expected.names.filter { $0.hasPrefix("cond_stage_model.") }
        #expect(teKeys.count == 4 && expected.names.count - teKeys.count == 15)
        try Self.checkValues(merged, base: base, expected: expected) { key, w, e in
            key.hasPrefix("cond_stage_model.") ? w + 0.5 * (e - w) : e
        }
        #expect(merged.metadata["adapterhost.merged_adapters"] == "kohya_sd1_noalpha.safetensors:0.5:1.0")
        #expect(try FileState(base) == before)
    }

    @Test func refusesToOverwriteTheBase() throws {
        let dir = try ScratchDirectory()
        let base = try Self.base("sd1", in: dir)
        let before = try FileState(base)
        let result = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sd1_noalpha"), "--out", base])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1 && lines.first?.contains("refusing to overwrite") == true, "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        #expect(try FileState(base) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["sd1.safetensors"])
    }

    /// The UNet-only inpainting checkpoint: the text-encoder modules are listed as skipped
    /// with their reason; conv_in's extra input channels (4–8) are BASE's bytes.
    @Test func partialMergeListsWhatWasLeftOut() throws {
        let dir = try ScratchDirectory()
        let base = try Self.base("sd1_inpaint", in: dir)
        let out = dir.file("merged.safetensors")
        let json = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sd1_noalpha"), "--out", out, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(summary["applied"] as? Int == 15 && summary["total"] as? Int == 19)
        let skipped = try #require(summary["skipped"] as? [[String: String]])
        #expect(skipped.count == 4)
        for entry in skipped {
            #expect(entry["adapter"] == Self.lora("kohya_sd1_noalpha"))
            #expect(entry["module"]?.hasPrefix("lora_te_text_model_encoder_layers_") == true)
            #expect(entry["reason"] == "no layer of this sd1 model has that name")
        }
        let original = try SafeTensorsFile(path: base), merged = try SafeTensorsFile(path: out)
        #expect(merged.names == original.names)
        let key = "model.diffusion_model.input_blocks.0.0.weight"
        let w = try original.tensor(named: key).floats.map(\.bitPattern), m = try merged.tensor(named: key).floats.map(\.bitPattern)
        let plane = 9 * 9   // [4, 9, 3, 3]: 9 input channels of 3×3
        for o in 0..<4 {
            #expect(m[(o * plane)..<(o * plane + 36)] != w[(o * plane)..<(o * plane + 36)], "output \(o): channels 0-3 unchanged")
            #expect(m[(o * plane + 36)..<((o + 1) * plane)] == w[(o * plane + 36)..<((o + 1) * plane)], "output \(o): channels 4-8 changed")
        }

        let text = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sd1_noalpha"), "--out", out])
        #expect(text.status == 0)
        let lines = text.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "15 of 19 modules applied → \(out)")
        #expect(lines.filter { $0.hasPrefix("  skipped ") && $0.hasSuffix(": no layer of this sd1 model has that name") }.count == 4)
    }

    /// An SDXL LoRA on SD1: exit 1, one line naming both families, nothing written.
    @Test func baseModelMismatchWritesNothing() throws {
        let dir = try ScratchDirectory()
        let base = try Self.base("sd1", in: dir)
        let out = dir.file("merged.safetensors")
        let result = try CLI.run(["merge", base, "--adapter", Self.lora("kohya_sdxl_sgm"), "--out", out])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1 && lines.first?.contains("made for sdxl") == true && lines.first?.contains("is sd1") == true,
                "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["sd1.safetensors"])
    }
}
