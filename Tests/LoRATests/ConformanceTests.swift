import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Every fixture of tools/gen_lora_fixtures.py: a LoRA-family file written by a peer (kohya
/// naming via LyCORIS's kohya network, PEFT/diffusers, LyCORIS), loaded through the registry,
/// planned onto the tiny SD1/SDXL single-file model and merged; every tensor the file changes
/// must equal the peer's merge (or A1111's formula in float64 where the peer is wrong):
/// relative 1e-5 on the F32 SD1 model, absolute 2e-3 on the F16 SDXL model.
struct LoRAConformanceTests {
    struct Case: Decodable, CustomTestStringConvertible, Sendable {
        let name: String
        let model: String
        let file: String
        let expected: String
        let expectedFrom: String
        let teStrength: Float
        let unetStrength: Float
        let format: String?
        let baseModel: String?
        let methods: [String]?
        let modules: Int?
        let changedKeys: Int
        let embeddings: [String: [String: String]]?
        var testDescription: String { name }
    }

    static let cases: [Case] = {
        struct Manifest: Decodable { let cases: [Case] }
        let data = try! Data(contentsOf: URL(fileURLWithPath: "\(loraFixtures)/manifest.json"))
        return try! JSONDecoder().decode(Manifest.self, from: data).cases
    }()

    @Test(arguments: cases)
    func mergedWeightsMatchThePeers(_ c: Case) throws {
        let source = try SafeTensorsFile(path: "\(loraFixtures)/\(c.file)")
        let adapter = try loraRegistry().load(source)
        #expect(adapter.unclaimedKeys.isEmpty, "unclaimed: \(adapter.unclaimedKeys.prefix(5))")
        if let format = c.format { #expect(adapter.format == format) }
        if let family = c.baseModel { #expect(adapter.baseModel?.rawValue == family) }
        if let methods = c.methods { #expect(Set(adapter.methodIDs) == Set(methods)) }
        if let count = c.modules { #expect(adapter.modules.count == count) }

        // Twice: on the fixture model as stored (F16: results stored in F16, absolute 2e-3) and
        // on the same values widened to F32 (results kept in F32, relative 1e-5).
        let stored = try ModelWeights.load(path: "\(tinyModels)/\(c.model).safetensors")
        for model in [stored, widenedToF32(stored)] {
            let plan = try PatchPlan(model: model, stack: [
                AdapterApplication(adapter: adapter, weight: c.teStrength, unetWeight: c.unetStrength)])
            #expect(plan.report.skipped.isEmpty, "skipped: \(plan.report.skipped.prefix(3))")
            #expect(plan.report.applied == adapter.modules.count)
            try PatchEngine(model: model).apply(plan)

            let expected = try SafeTensorsFile(path: "\(loraFixtures)/\(c.expected)")
            #expect(Set(plan.touchedKeys) == Set(expected.names), "touched vs expected keys differ")
            #expect(expected.names.count == c.changedKeys)
            let isF16 = model.tensor(expected.names[0])!.dtype == .f16
            var worst = 0.0
            for key in expected.names {
                let want = try expected.tensor(named: key)
                guard let got = model.tensor(key) else {
                    Issue.record("\(c.name): model has no tensor \(key)")
                    continue
                }
                let diff = maxAbsDiff(got, want), scale = max(maxAbs(want), 1e-30)
                let tolerance = isF16 ? 2e-3 : 1e-5 * scale
                worst = max(worst, isF16 ? diff : diff / scale)
                #expect(diff <= tolerance, "\(c.name) (\(got.dtype.rawValue)): \(key) differs by \(diff) (tolerance \(tolerance))")
            }
            print("[lora-conformance] \(c.name) \(isF16 ? "F16 abs" : "F32 rel") worst \(worst) over \(expected.names.count) tensors vs \(c.expectedFrom)")
        }

        if let embeddings = c.embeddings {
            #expect(Set(adapter.embeddings.map(\.name)) == Set(embeddings.keys))
            for embedding in adapter.embeddings {
                let widths = try #require(embeddings[embedding.name])
                #expect(Set(embedding.vectorsByWidth.keys.map(String.init)) == Set(widths.keys))
                for (width, key) in widths {
                    let got = try #require(embedding.vectorsByWidth[Int(width)!])
                    #expect(maxAbsDiff(got, try source.tensor(named: key)) == 0)
                }
            }
        } else {
            #expect(adapter.embeddings.isEmpty)
        }
    }

    /// The host applies TE and UNet weights separately: re-merging kohya_sd1_locon at other
    /// strengths scales each part's delta by its own weight (TE 0.7 → 0.25, UNet 1.0 → 1.5).
    @Test func textEncoderAndUNetWeightsAreSeparate() throws {
        let c = try #require(Self.cases.first { $0.name == "kohya_sd1_locon" })
        let adapter = try loraRegistry().load(try SafeTensorsFile(path: "\(loraFixtures)/\(c.file)"))
        let original = widenedToF32(try ModelWeights.load(path: "\(tinyModels)/sd1.safetensors"))
        let model = widenedToF32(try ModelWeights.load(path: "\(tinyModels)/sd1.safetensors"))
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.25, unetWeight: 1.5)])
        try PatchEngine(model: model).apply(plan)
        let expected = try SafeTensorsFile(path: "\(loraFixtures)/\(c.expected)")
        var sawTE = false, sawUNet = false
        for key in expected.names {
            let base = original.tensor(key)!, want1 = try expected.tensor(named: key)
            let isTE = key.hasPrefix("cond_stage_model.")
            let factor = isTE ? 0.25 / Double(c.teStrength) : 1.5 / Double(c.unetStrength)
            let want = base.to(.f32) + (want1 - base.to(.f32)).scaled(by: factor)
            #expect(maxAbsDiff(model.tensor(key)!, want) <= 2e-5 * maxAbs(want), "\(key)")
            if isTE { sawTE = true } else { sawUNet = true }
        }
        #expect(sawTE && sawUNet)
    }

    /// A LyCORIS file that mixes module types is split per module by the registry.
    @Test func mixedLyCORISFileIsSplitPerModule() throws {
        let source = try SafeTensorsFile(path: "\(loraFixtures)/lycoris_mixed.safetensors")
        let detection = try loraRegistry().detect(source)
        #expect(Set(detection.methodIDs) == ["lora", "loha", "lokr", "oft", "glora", "full"])
        #expect(detection.unclaimedKeys.isEmpty)
        let adapter = try loraRegistry().load(source)
        let types = Set(adapter.modules.map(\.moduleType))
        #expect(types.isSuperset(of: ["loha", "lokr", "oft", "glora", "full"]))
    }

    /// Restoring after a merge gives back the original tensors bit for bit.
    @Test func restoreUndoesTheMerge() throws {
        let adapter = try loraRegistry().load(try SafeTensorsFile(path: "\(loraFixtures)/lycoris_oft.safetensors"))
        let model = try ModelWeights.load(path: "\(tinyModels)/sd1.safetensors")
        let before = model.keys.map { model.tensor($0)! }
        let engine = PatchEngine(model: model)
        try engine.apply(try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)]))
        #expect(!engine.patchedKeys.isEmpty)
        engine.restore()
        for (key, t) in zip(model.keys, before) where t.dtype.isFloatingPoint {
            #expect(maxAbsDiff(model.tensor(key)!, t) == 0, "\(key)")
        }
    }
}
