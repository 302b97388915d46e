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
        // One line naming file, module and rule, with the way out.
        for (fixture, what) in [("lycoris_loha", "a loha module has no PEFT LoRA form"),
                                ("kohya_sd1_tucker", "a Tucker LoRA (lora_mid) module has no PEFT LoRA form"),
                                ("lycoris_loha_dora", "a loha+dora module has no PEFT LoRA form")] {
            let path = "\(loraFixtures)/\(fixture).safetensors"
            let error = try #require(throws: LoRAOperationError.self) {
                _ = try convert(path, to: .peft, family: .sd1, dir: dir, name: "x.safetensors")
            }
            let message = "\(error)"
            #expect(message.hasPrefix("\(path): module '"), "\(message)")
            #expect(!error.module.isEmpty && message.contains(what), "\(message)")
            if fixture == "lycoris_loha_dora" {
                #expect(message.contains("DoRA magnitudes depend on the base weight"), "\(message)")
            } else {
                #expect(message.contains("adapterhost resize --rank R") && message.contains("combine --mode svd"), "\(message)")
            }
            #expect(!message.contains("\n"))
        }
        // Per-input dora_scale ([1, in]) has no PEFT form.
        #expect {
            _ = try convert("\(loraFixtures)/lycoris_dora_in.safetensors", to: .peft, family: .sd1, dir: dir, name: "x.safetensors")
        } throws: { "\($0)".contains("per-input magnitudes (dora_scale [1, in, …]) has no PEFT form") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    /// The merged tiny-SD1 weights of an adapter file (F32 model), by model key.
    func merged(_ path: String) throws -> [String: [Double]] {
        let model = widenedToF32(try ModelWeights.load(path: "\(tinyModels)/sd1.safetensors"))
        let adapter = try loraRegistry().load(try SafeTensorsFile(path: path))
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.8)])
        #expect(plan.report.skipped.isEmpty && plan.report.applied == adapter.modules.count)
        try PatchEngine(model: model).apply(plan)
        return Dictionary(uniqueKeysWithValues: plan.touchedKeys.map { ($0, model.tensor($0)!.doubles) })
    }

    /// The bytes of every tensor of `path`, by module layer and role, for comparing files of
    /// different dialects.
    func tensorBytes(_ path: String, family: ModelFamily) throws -> [String: [UInt8]] {
        let file = try SafeTensorsFile(path: path), names = LoRANameSpace.standard(for: family)
        let roles = ["lora_down.weight": "down", "lora_A.weight": "down", "lora_up.weight": "up", "lora_B.weight": "up",
                     "dora_scale": "magnitude", "lora_magnitude_vector": "magnitude"]
        var out: [String: [UInt8]] = [:]
        for name in file.names {
            guard let (suffix, role) = roles.first(where: { name.hasSuffix("." + $0.key) }) else { continue }
            let module = String(name.dropLast(suffix.count + 1))
            let layer = try #require(names.layer(named: module), "\(module)")
            let t = try file.tensor(named: name)
            out["\(layer) \(role) \(t.dtype.rawValue)"] = t.withUnsafeBytes { Array($0) }
        }
        return out
    }

    /// DoRA: LyCORIS per-output `dora_scale` → PEFT `lora_magnitude_vector` → kohya, and PEFT
    /// DoRA → kohya → PEFT: factors and magnitudes the same bytes in every file, the shapes
    /// each dialect uses, `use_dora` in the PEFT config, and the merged weights equal.
    @Test(arguments: [("lycoris_dora_out", LoRAOutputFormat.peft), ("peft_sd1_dora", LoRAOutputFormat.kohya)])
    func doraRoundTripIsLossless(_ fixture: String, _ first: LoRAOutputFormat) throws {
        let dir = try OpsScratch()
        let original = "\(loraFixtures)/\(fixture).safetensors"
        let second: LoRAOutputFormat = first == .peft ? .kohya : .peft
        let a = try convert(original, to: first, family: .sd1, dir: dir, name: "a.safetensors")
        let b = try convert(a, to: second, family: .sd1, dir: dir, name: "b.safetensors")
        let peftPath = first == .peft ? a : b, kohyaPath = first == .peft ? b : a
        let peft = try SafeTensorsFile(path: peftPath), kohya = try SafeTensorsFile(path: kohyaPath)
        let magnitudes = peft.names.filter { $0.hasSuffix(".lora_magnitude_vector") }
        #expect(!magnitudes.isEmpty && magnitudes.count == kohya.names.filter { $0.hasSuffix(".dora_scale") }.count)
        for name in magnitudes {
            let m = try peft.tensor(named: name), up = try peft.tensor(named: name.replacingOccurrences(of: "lora_magnitude_vector", with: "lora_B.weight"))
            #expect(m.shape == (up.rank == 4 ? [1, up.shape[0], 1, 1] : [up.shape[0]]), "\(name) \(m.shape)")
        }
        for name in kohya.names where name.hasSuffix(".dora_scale") {
            let m = try kohya.tensor(named: name), up = try kohya.tensor(named: name.replacingOccurrences(of: "dora_scale", with: "lora_up.weight"))
            #expect(m.shape == (up.rank == 4 ? [up.shape[0], 1, 1, 1] : [up.shape[0], 1]), "\(name) \(m.shape)")
        }
        let config = try #require(peft.metadata["lora_adapter_metadata"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])
        #expect(json["unet.use_dora"] as? Bool == true && json["text_encoder.use_dora"] as? Bool == true)
        for file in [a, b] {
            let adapter = try loraRegistry().load(try SafeTensorsFile(path: file))
            #expect(adapter.unclaimedKeys.isEmpty && adapter.modules.allSatisfy { $0.moduleType == "dora" })
        }
        // The same bytes everywhere (alphas carried as before), and the same merged weights.
        let bytes0 = try tensorBytes(original, family: .sd1)
        #expect(try tensorBytes(a, family: .sd1) == bytes0 && tensorBytes(b, family: .sd1) == bytes0)
        let m0 = try merged(original), m1 = try merged(a), m2 = try merged(b)
        #expect(!m0.isEmpty && Set(m0.keys) == Set(m1.keys) && Set(m0.keys) == Set(m2.keys))
        for (key, values) in m0 {
            #expect(relativeDistance(m1[key]!, values) <= 1e-6, "\(key)")
            #expect(relativeDistance(m2[key]!, values) <= 1e-6, "\(key)")
        }
        // kohya → PEFT → kohya gives the kohya file back byte for byte (names and alphas too).
        if first == .peft {
            let o = try SafeTensorsFile(path: original), k = try SafeTensorsFile(path: b)
            #expect(Set(k.names) == Set(o.names))
            for name in o.names {
                let x = try o.tensor(named: name), y = try k.tensor(named: name)
                #expect(x.doubles == y.doubles && x.shape == y.shape, "\(name)")
            }
        }
    }
}
