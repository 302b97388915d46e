import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// `LoRAConversion`: kohya → PEFT → kohya is lossless (factors bit for bit, names back as they
/// were, every module's scale carried — not diffusers' alpha = rank).
@Suite struct OperationsConvertTests {
    func convert(_ path: String, to format: LoRAOutputFormat, family: ModelFamily, dir: OpsScratch, name: String) throws -> String {
        let result = try LoRAConversion.convert(try LoRAOperationInput(path: path), to: format, names: .standard(for: family))
        let out = dir.file(name)
        try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out)
        return out
    }

    /// Unit deltas keyed by layer (so kohya and PEFT spellings of one layer compare).
    func deltasByLayer(_ path: String, family: ModelFamily) throws -> [LoRALayer: [Double]] {
        let names = LoRANameSpace.standard(for: family)
        var out: [LoRALayer: [Double]] = [:]
        for (name, delta) in try unitDeltas(path) {
            let layer = try #require(names.layer(named: name), "\(name) has no layer")
            out[layer] = delta.values
        }
        return out
    }

    func expectRoundTrip(_ fixture: String, family: ModelFamily, peftPrefixes: [String]) throws {
        let dir = try OpsScratch()
        let original = "\(loraFixtures)/\(fixture)"
        let peft = try convert(original, to: .peft, family: family, dir: dir, name: "peft.safetensors")
        let back = try convert(peft, to: .kohya, family: family, dir: dir, name: "kohya.safetensors")

        let p = try SafeTensorsFile(path: peft)
        // Bundled embeddings (bundle_emb.*) are carried over as they are.
        #expect(p.names.filter { !$0.hasPrefix("bundle_emb.") }.allSatisfy { name in peftPrefixes.contains { name.hasPrefix($0) } && (name.hasSuffix(".lora_A.weight") || name.hasSuffix(".lora_B.weight")) })
        let config = try #require(p.metadata["lora_adapter_metadata"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])
        #expect(json["unet.r"] is Int && json["unet.lora_alpha"] != nil && json["unet.target_modules"] is [String])
        #expect(try loraRegistry().load(p).format == "peft")

        // Back in kohya: the same names, the same factor bytes, the same alphas.
        let o = try SafeTensorsFile(path: original), k = try SafeTensorsFile(path: back)
        #expect(Set(k.names) == Set(o.names))
        for name in o.names {
            let a = try o.tensor(named: name), b = try k.tensor(named: name)
            if name.hasSuffix(".alpha") {
                #expect(a.doubles == b.doubles, "\(name)")
            } else {
                #expect(a.dtype == b.dtype && a.count == b.count, "\(name)")
                let same = a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
                #expect(same, "\(name) changed")
            }
        }
        // Every delta equal in all three files.
        let d0 = try deltasByLayer(original, family: family), d1 = try deltasByLayer(peft, family: family)
        let d2 = try deltasByLayer(back, family: family)
        #expect(Set(d0.keys) == Set(d1.keys) && Set(d0.keys) == Set(d2.keys))
        for (layer, values) in d0 {
            #expect(relativeDistance(d1[layer]!, values) < 1e-6, "\(layer) (peft)")
            #expect(relativeDistance(d2[layer]!, values) == 0, "\(layer) (kohya)")
        }
    }

    @Test func kohyaPEFTKohyaSD1() throws {
        try expectRoundTrip("kohya_sd1_locon.safetensors", family: .sd1, peftPrefixes: ["unet.", "text_encoder."])
    }

    @Test func kohyaPEFTKohyaSDXLKeepsTheSgmSpelling() throws {
        try expectRoundTrip("kohya_sdxl_sgm.safetensors", family: .sdxl, peftPrefixes: ["unet.", "text_encoder.", "text_encoder_2."])
    }

    @Test func alphaIsCarriedNotSetToRank() throws {
        // Modules with alpha ≠ rank (kohya_sd1_locon has alphas 0.5…3 at ranks 2 and 4): the PEFT
        // file must record them through lora_alpha/alpha_pattern.
        let dir = try OpsScratch()
        let peft = try convert("\(loraFixtures)/kohya_sd1_locon.safetensors", to: .peft, family: .sd1, dir: dir, name: "p.safetensors")
        let adapter = try loraRegistry().load(try SafeTensorsFile(path: peft))
        let original = try loraRegistry().load(try SafeTensorsFile(path: "\(loraFixtures)/kohya_sd1_locon.safetensors"))
        let alphas = Set(original.modules.compactMap(\.alpha))
        #expect(alphas.count > 1)
        #expect(Set(adapter.modules.compactMap(\.alpha)) == alphas)
    }

    @Test func rsLoRAPEFTToKohyaKeepsTheScale() throws {
        let dir = try OpsScratch()
        let input = "\(loraFixtures)/peft_sd1_rslora.safetensors"
        let kohya = try convert(input, to: .kohya, family: .sd1, dir: dir, name: "k.safetensors")
        let d0 = try deltasByLayer(input, family: .sd1), d1 = try deltasByLayer(kohya, family: .sd1)
        #expect(!d0.isEmpty && Set(d0.keys) == Set(d1.keys))
        for (layer, values) in d0 { #expect(relativeDistance(d1[layer]!, values) < 1e-6, "\(layer)") }
    }

    @Test func otherTypesAreRefusedByName() throws {
        let dir = try OpsScratch()
        #expect {
            _ = try convert("\(loraFixtures)/lycoris_loha.safetensors", to: .peft, family: .sd1, dir: dir, name: "x.safetensors")
        } throws: { "\($0)".contains("loha module") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
