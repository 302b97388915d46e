import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// How deltas meet their targets: an inpainting UNet's extra input channels (zero-padded, as
/// A1111), and A1111's `dyn` rank truncation (`rebuild_conventional`).
@Suite struct PatchEngineFittingTests {
    /// kohya_sd1_noalpha's `lora_unet_conv_in` ([4, 4, 3, 3] delta, scale 1) on the inpainting
    /// UNet's [4, 9, 3, 3] conv_in: channels 0–3 get the delta, 4–8 stay bit for bit.
    @Test func inpaintingConvInIsPaddedWithZeros() throws {
        let loraFile = try SafeTensorsFile(path: PatchFixtures.loraPath("kohya_sd1_noalpha"))
        let adapter = try PatchFixtures.adapter("kohya_sd1_noalpha")
        let model = try PatchFixtures.model("sd1_inpaint")
        #expect(model.isInpainting && model.family == .sd1)
        let key = "model.diffusion_model.input_blocks.0.0.weight"
        let original = try #require(model.tensor(key))
        #expect(original.shape == [4, 9, 3, 3] && original.dtype == .f32)

        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
        // The UNet-only checkpoint has no text encoder: the 4 TE modules are reported, not applied.
        #expect(plan.report.summary == "15 of 19 modules applied")
        #expect(plan.report.skipped.count == 4)
        #expect(plan.report.skipped.allSatisfy {
            $0.module.hasPrefix("lora_te_") && $0.reason == "no layer of this sd1 model has that name"
        })
        #expect(plan.touches(key))
        try PatchEngine(model: model).apply(plan)

        // Δ[o, c, k] = Σ_r up[o, r]·down[r, c, k] (no alpha: scale 1), in Double.
        let down = try loraFile.tensor(named: "lora_unet_conv_in.lora_down.weight")
        let up = try loraFile.tensor(named: "lora_unet_conv_in.lora_up.weight")
        #expect(down.shape == [2, 4, 3, 3] && up.shape == [4, 2, 1, 1])
        let delta = patchMatmul(up.doubles, down.doubles, m: 4, k: 2, n: 4 * 9)   // [o, c·9 + k]
        let before = original.doubles, after = try #require(model.tensor(key)).doubles
        let beforeBits = original.floats.map(\.bitPattern), afterBits = try #require(model.tensor(key)).floats.map(\.bitPattern)
        var worst = 0.0, changed = 0
        for o in 0..<4 {
            for c in 0..<9 {
                for k in 0..<9 {
                    let i = (o * 9 + c) * 9 + k
                    if c < 4 {
                        let want = before[i] + delta[(o * 4 + c) * 9 + k]
                        worst = max(worst, abs(after[i] - want))
                        if afterBits[i] != beforeBits[i] { changed += 1 }
                    } else {
                        #expect(afterBits[i] == beforeBits[i], "channel \(c) of output \(o) changed")
                    }
                }
            }
        }
        #expect(worst <= 2 * patchULP32(patchMaxAbs(after)), "channels 0-3 differ from W + Δ by \(worst)")
        #expect(changed == 4 * 4 * 9)
    }

    /// OpenCLIP's fused attention (SD2): q/k/v modules own a third of `in_proj_weight` and of
    /// `in_proj_bias`. A LyCORIS full module on k (diff + diff_b) and a LoRA on q change only
    /// their rows of the weight and of the bias; v's rows stay bit for bit.
    @Test func fusedRowsGetTheirWeightAndBiasDeltas() throws {
        let q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        let k = "lora_te_text_model_encoder_layers_0_self_attn_k_proj"
        let diff = patchSeeded([32, 32], seed: 700, scale: 0.05), diffBias = patchSeeded([32], seed: 701, scale: 0.05)
        let up = patchSeeded([32, 2], seed: 702, scale: 0.3), down = patchSeeded([2, 32], seed: 703, scale: 0.3)
        let adapter = try PatchFixtures.adapter([
            ("\(k).diff", diff), ("\(k).diff_b", diffBias),
            ("\(q).lora_down.weight", down), ("\(q).lora_up.weight", up), ("\(q).alpha", Tensor(scalar: 2)),
        ])
        let model = try PatchFixtures.model("sd2")
        let weightKey = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
        let biasKey = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"
        let w0 = try #require(model.tensor(weightKey)), b0 = try #require(model.tensor(biasKey))
        #expect(w0.shape == [96, 32] && w0.dtype == .f32 && b0.shape == [96])
        #expect(model.targetIndex.resolve(k)?.rows == 32..<64 && model.targetIndex.resolve(k)?.biasKey == biasKey)

        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.5)])
        #expect(plan.report.summary == "2 of 2 modules applied")
        #expect(plan.touchedKeys == [weightKey, biasKey] || plan.touchedKeys == [biasKey, weightKey])
        try PatchEngine(model: model).apply(plan)

        let w = w0.doubles, b = b0.doubles
        let loraDelta = patchMatmul(up.doubles, down.doubles, m: 32, k: 2, n: 32)   // scale alpha/rank = 1
        var wantW = w, wantB = b
        for i in 0..<(32 * 32) {
            wantW[i] += 0.5 * loraDelta[i]
            wantW[32 * 32 + i] += 0.5 * diff.doubles[i]
        }
        for i in 0..<32 { wantB[32 + i] += 0.5 * diffBias.doubles[i] }
        let gotW = model.tensor(weightKey)!, gotB = model.tensor(biasKey)!
        #expect(patchMaxAbsDiff(gotW.doubles, wantW) <= 2 * patchULP32(patchMaxAbs(wantW)))
        #expect(patchMaxAbsDiff(gotB.doubles, wantB) <= 2 * patchULP32(patchMaxAbs(wantB)))
        #expect(Array(gotW.floats[(64 * 32)...]).map(\.bitPattern) == Array(w0.floats[(64 * 32)...]).map(\.bitPattern))
        #expect(Array(gotB.floats[0..<32]).map(\.bitPattern) == Array(b0.floats[0..<32]).map(\.bitPattern))
        #expect(Array(gotB.floats[64...]).map(\.bitPattern) == Array(b0.floats[64...]).map(\.bitPattern))
    }

    /// `dyn` keeps the first N ranks with the scale still alpha / full rank:
    /// W + s·up[:, :N]·down[:N] (A1111's `rebuild_conventional`, `calc_scale`).
    @Test func dynTruncatesRanksAsA1111() throws {
        let name = "kohya_sd1_locon"
        let file = try SafeTensorsFile(path: PatchFixtures.loraPath(name))
        let adapter = try PatchFixtures.adapter(name)
        let stored = try PatchFixtures.model("sd1")

        func merged(_ dyn: Int?) throws -> (ModelWeights, PatchPlan) {
            let model = PatchFixtures.widened(stored)
            let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 1, dynRank: dyn)])
            try PatchEngine(model: model).apply(plan)
            return (model, plan)
        }
        let (dyn1, plan) = try merged(1)
        let (full, _) = try merged(nil)
        let (dynLarge, _) = try merged(16)
        let original = PatchFixtures.widened(stored)
        #expect(plan.report.summary == "19 of 19 modules applied")

        var checked = 0
        for (weightKey, planned) in plan.modulesByWeightKey {
            let p = try #require(planned.first)
            #expect(planned.count == 1 && p.options == DeltaOptions(strength: 1, dynRank: 1))
            let up = try file.tensor(named: "\(p.module.name).lora_up.weight")
            let down = try file.tensor(named: "\(p.module.name).lora_down.weight")
            let alpha = try file.tensor(named: "\(p.module.name).alpha").doubles[0]
            let rank = down.shape[0], out = up.shape[0], inner = down.count / rank
            #expect(rank >= 2, "\(p.module.name): rank 1 cannot show truncation")
            // Rank 0 only: up[:, 0] ⊗ down[0].
            let u = up.doubles, d = down.doubles
            var delta = [Double](repeating: 0, count: out * inner)
            for o in 0..<out { for j in 0..<inner { delta[o * inner + j] = u[o * rank] * d[j] } }
            let w = original.tensor(weightKey)!.doubles
            let want = zip(w, delta).map { $0 + alpha / Double(rank) * $1 }
            let got = dyn1.tensor(weightKey)!.doubles
            #expect(patchMaxAbsDiff(got, want) <= 2 * patchULP32(patchMaxAbs(want)), "\(weightKey)")
            // It changes the result, and a dyn at or above the rank is no truncation at all.
            #expect(patchMaxAbsDiff(got, full.tensor(weightKey)!.doubles) > 1e-4, "\(weightKey): dyn changed nothing")
            #expect(patchBytes(dynLarge.tensor(weightKey)!) == patchBytes(full.tensor(weightKey)!), "\(weightKey)")
            checked += 1
        }
        #expect(checked == 19)
    }

    /// As in A1111, `dyn` does not apply to Tucker (`lora_mid`) modules: they are unchanged by
    /// it, while the file's plain modules are truncated.
    @Test func dynLeavesTuckerModulesWhole() throws {
        let name = "kohya_sd1_tucker"
        let file = try SafeTensorsFile(path: PatchFixtures.loraPath(name))
        let adapter = try PatchFixtures.adapter(name)
        let stored = try PatchFixtures.model("sd1")
        func merged(_ dyn: Int?) throws -> (ModelWeights, PatchPlan) {
            let model = PatchFixtures.widened(stored)
            let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, dynRank: dyn)])
            try PatchEngine(model: model).apply(plan)
            return (model, plan)
        }
        let (dyn1, plan) = try merged(1)
        let (full, _) = try merged(nil)
        var tucker = 0, plain = 0
        for (weightKey, planned) in plan.modulesByWeightKey {
            let module = planned[0].module
            let same = patchBytes(dyn1.tensor(weightKey)!) == patchBytes(full.tensor(weightKey)!)
            if file.names.contains("\(module.name).lora_mid.weight") {
                #expect(same, "\(weightKey): Tucker module truncated")
                tucker += 1
            } else if (try file.tensor(named: "\(module.name).lora_down.weight")).shape[0] > 1 {
                #expect(!same, "\(weightKey): plain module not truncated")
                plain += 1
            }
        }
        #expect(tucker > 0)
        print("[patch-engine] dyn on kohya_sd1_tucker: \(tucker) Tucker modules whole, \(plain) plain modules truncated")
    }
}
