import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Partial application: modules the model has no layer for, and deltas whose shape does not
/// fit, are reported ("k of n modules applied", each left-out module with its reason) and
/// the rest is applied; a whole adapter for another base-model family is an error before
/// any work.
@Suite struct PatchEngineReportTests {
    static let toQ = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    static let toK = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k"
    static let toOut = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0"
    static let midToV = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_v"
    static let teQ = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    /// SDXL's `add_embedding` (the size/crop conditioning MLP): SD1 has no such layer. The
    /// diffusers spelling, so the file as a whole does not look like an SDXL LoRA.
    static let sdxlOnly = "lora_unet_add_embedding_linear_1"

    /// A hand-built kohya file for the tiny SD1 model (attention width 4, mid 8, TE 32):
    /// three modules that fit, one for a layer SD1 lacks, a LoRA and a LoHa whose deltas
    /// ([4, 5] and [4, 3]) do not fit their [4, 4] weights, and one key nobody reads.
    static func handmade() throws -> (adapter: Adapter, factors: [String: (up: Tensor, down: Tensor)]) {
        var tensors: [(String, Tensor)] = []
        var factors: [String: (up: Tensor, down: Tensor)] = [:]
        func lora(_ name: String, out: Int, in inWidth: Int, seed: UInt64, alpha: Float = 1) {
            let down = patchSeeded([2, inWidth], seed: seed, scale: 0.5), up = patchSeeded([out, 2], seed: seed + 1, scale: 0.5)
            tensors += [("\(name).lora_down.weight", down), ("\(name).lora_up.weight", up), ("\(name).alpha", Tensor(scalar: alpha))]
            factors[name] = (up, down)
        }
        lora(toQ, out: 4, in: 4, seed: 10, alpha: 1)
        lora(midToV, out: 8, in: 8, seed: 20, alpha: 2)
        lora(teQ, out: 32, in: 32, seed: 30, alpha: 1)
        lora(sdxlOnly, out: 16, in: 16, seed: 40)
        lora(toK, out: 4, in: 5, seed: 50)
        tensors += [
            ("\(toOut).hada_w1_a", patchSeeded([4, 2], seed: 60)), ("\(toOut).hada_w1_b", patchSeeded([2, 3], seed: 61)),
            ("\(toOut).hada_w2_a", patchSeeded([4, 2], seed: 62)), ("\(toOut).hada_w2_b", patchSeeded([2, 3], seed: 63)),
            ("\(toOut).alpha", Tensor(scalar: 2)),
            ("lora_unet_notes.bogus", Tensor(scalar: 0)),
        ]
        return (try PatchFixtures.adapter(tensors), factors)
    }

    @Test func partialApplyIsReportedWithReasons() throws {
        let (adapter, factors) = try Self.handmade()
        #expect(adapter.baseModel == nil && adapter.modules.count == 6)
        let model = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        func weightKey(_ module: String) throws -> String { try #require(model.targetIndex.resolve(module)).weightKey }
        let kWeight = try weightKey(Self.toK), outWeight = try weightKey(Self.toOut)
        let qWeight = try weightKey(Self.toQ), vWeight = try weightKey(Self.midToV), teWeight = try weightKey(Self.teQ)
        #expect(teWeight == "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")
        #expect(model.tensor(kWeight)?.shape == [4, 4] && model.tensor(outWeight)?.shape == [4, 4])
        let before = Dictionary(uniqueKeysWithValues: model.keys.map { ($0, model.tensor($0)!) })

        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.5, unetWeight: 1)])
        let report = plan.report
        #expect(report.applied == 3 && report.total == 6)
        #expect(report.summary == "3 of 6 modules applied")
        // Every module is either applied or listed: none is dropped silently.
        #expect(report.applied + report.skipped.count == report.total)
        let reasons = Dictionary(uniqueKeysWithValues: report.skipped.map { ($0.module, $0.reason) })
        #expect(Set(reasons.keys) == [Self.sdxlOnly, Self.toK, Self.toOut])
        #expect(report.skipped.allSatisfy { $0.adapter == "handmade.safetensors" })
        #expect(reasons[Self.sdxlOnly] == "no layer of this sd1 model has that name")
        #expect(reasons[Self.toK] == "delta of shape [4, 5] does not fit \(kWeight) [4, 4]")
        #expect(reasons[Self.toOut] == "delta of shape [4, 3] does not fit \(outWeight) [4, 4]")
        #expect(report.unclaimedKeys.count == 1 && report.unclaimedKeys.first?.keys == ["lora_unet_notes.bogus"])

        // The rest applies (a misfit used to fail the whole patch when computed).
        let engine = PatchEngine(model: model)
        let returned = try engine.apply(plan)
        #expect(returned.summary == "3 of 6 modules applied")
        #expect(engine.patchedKeys == model.keys.filter([qWeight, vWeight, teWeight].contains))
        #expect(model.tensor(kWeight)!.storage === before[kWeight]!.storage)
        #expect(model.tensor(outWeight)!.storage === before[outWeight]!.storage)

        // Values: W + strength · alpha/rank · up·down (rank 2), in Double.
        for (key, name, strength, alpha, width) in [(qWeight, Self.toQ, 1.0, 1.0, 4), (vWeight, Self.midToV, 1.0, 2.0, 8),
                                                    (teWeight, Self.teQ, 0.5, 1.0, 32)] {
            let (up, down) = factors[name]!
            let delta = patchMatmul(up.doubles, down.doubles, m: width, k: 2, n: width)
            let want = zip(before[key]!.doubles, delta).map { $0 + strength * alpha / 2 * $1 }
            let got = model.tensor(key)!.doubles
            #expect(patchMaxAbsDiff(got, want) <= 4 * patchULP32(patchMaxAbs(want)), "\(key)")
            #expect(patchMaxAbsDiff(got, before[key]!.doubles) > 1e-3, "\(key) unchanged")
        }
    }

    /// A whole SDXL LoRA (kohya sgm names, SDXL metadata) on SD1: an error naming both
    /// families before any work — also when it is second in a stack — and the model is untouched.
    @Test func baseModelMismatchIsAnErrorBeforeAnyWork() throws {
        let sdxl = try PatchFixtures.adapter("kohya_sdxl_sgm")
        #expect(sdxl.baseModel == .sdxl)
        let model = try PatchFixtures.model("sd1")
        let before = model.keys.map { model.tensor($0)!.storage }
        let good = AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon"))
        for stack in [[AdapterApplication(adapter: sdxl)], [good, AdapterApplication(adapter: sdxl, weight: 0.5)]] {
            do {
                _ = try PatchPlan(model: model, stack: stack)
                Issue.record("planning an SDXL LoRA on SD1 must throw")
            } catch let error as PatchError {
                guard case let .baseModelMismatch(adapter, adapterFamily, modelPath, modelFamily) = error else {
                    Issue.record("unexpected \(error)")
                    continue
                }
                #expect(adapter == PatchFixtures.loraPath("kohya_sdxl_sgm") && adapterFamily == .sdxl)
                #expect(modelPath == model.path && modelFamily == .sd1)
                #expect(error.description.contains("made for sdxl") && error.description.contains("refusing"))
            }
        }
        for (key, storage) in zip(model.keys, before) {
            #expect(model.tensor(key)!.storage === storage, "\(key)")
        }
    }
}
