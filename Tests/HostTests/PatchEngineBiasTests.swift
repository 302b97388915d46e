import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Bias deltas (LyCORIS `diff_b`, PEFT `lora_B.bias`): bypass adds them as a constant per
/// output channel (also when a module changes only the bias); a bias delta on a layer that
/// has no bias in the model is reported (module applied in part, or skipped when the bias is
/// all it changes), never dropped silently; a DoRA module on an inpainting UNet's 9-channel
/// conv_in is skipped at plan time with its reason.
@Suite struct PatchEngineBiasTests {
    static let toQ = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    static let toK = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k"
    static let toOut = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0"
    static let conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"

    /// Modules that change only a bias: bypass gives exactly strength·Δb broadcast (no weight
    /// term), and merged mode changes only the biases, by the same amounts.
    @Test func biasOnlyModulesInBypassAndMerged() throws {
        let bOut = patchSeeded([4], seed: 1, scale: 0.5), bConv = patchSeeded([4], seed: 2, scale: 0.5)
        let adapter = try PatchFixtures.adapter([("\(Self.toOut).diff_b", bOut), ("\(Self.conv1).diff_b", bConv)])
        let model = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        let merged = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        let stack = [AdapterApplication(adapter: adapter, weight: 0.6)]
        let plan = try PatchPlan(model: model, stack: stack)
        #expect(plan.report.summary == "2 of 2 modules applied")
        try PatchEngine(model: merged).apply(try PatchPlan(model: merged, stack: stack))
        let bypass = BypassPatch(plan: plan)
        for (module, bias) in [(Self.toOut, bOut), (Self.conv1, bConv)] {
            let target = try #require(model.targetIndex.resolve(module))
            let biasKey = try #require(target.biasKey)
            let want = bias.doubles.map { 0.6 * $0 }
            // Merged: b + 0.6·Δb; the weight is unchanged.
            let mergedDelta = zip(merged.tensor(biasKey)!.doubles, model.tensor(biasKey)!.doubles).map { $0 - $1 }
            #expect(patchMaxAbsDiff(mergedDelta, want) <= 1e-6, "\(biasKey)")
            #expect(merged.tensor(target.weightKey)!.doubles == model.tensor(target.weightKey)!.doubles)
            // Bypass: the output shape of the layer, every position = 0.6·Δb[channel].
            let got: Tensor
            var expected: [Double] = []
            switch target.layer {
            case .linear:
                got = try #require(try bypass.contribution(for: target.weightKey, input: patchSeeded([2, 3, 4], seed: 3), layer: target.layer))
                #expect(got.shape == [2, 3, 4])
                for _ in 0..<6 { expected += want }
            case .conv2d:
                got = try #require(try bypass.contribution(for: target.weightKey, input: patchSeeded([1, 4, 5, 5], seed: 4), layer: target.layer))
                #expect(got.shape == [1, 4, 5, 5])
                for c in 0..<4 { expected += [Double](repeating: want[c], count: 25) }
            default:
                Issue.record("\(module): \(target.layer)")
                continue
            }
            #expect(patchMaxAbsDiff(got.doubles, expected) <= 1e-6, "\(module)")
        }
    }

    /// A `diff` + `diff_b` module on to_q (no bias in SD attention projections) is applied
    /// without its bias and reported in part; a `diff_b`-only module there is skipped.
    @Test func biasDeltaOnALayerWithoutBiasIsReported() throws {
        let diff = patchSeeded([4, 4], seed: 5, scale: 0.1)
        let adapter = try PatchFixtures.adapter([
            ("\(Self.toQ).diff", diff), ("\(Self.toQ).diff_b", patchSeeded([4], seed: 6)),
            ("\(Self.toK).diff_b", patchSeeded([4], seed: 7)),
            ("\(Self.toOut).diff_b", patchSeeded([4], seed: 8)),
        ])
        let model = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        let q = try #require(model.targetIndex.resolve(Self.toQ)), k = try #require(model.targetIndex.resolve(Self.toK))
        #expect(q.biasKey.flatMap { model.tensor($0) } == nil)
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
        let report = plan.report
        #expect(report.applied == 2 && report.total == 3)
        #expect(report.skipped.map(\.module) == [Self.toK])
        #expect(report.skipped.first?.reason == "changes only the bias, and the layer of \(k.weightKey) has no bias in this model")
        #expect(report.partial.map(\.module) == [Self.toQ])
        let reason = "bias delta dropped: the layer of \(q.weightKey) has no bias in this model"
        #expect(report.partial.first?.reason == reason)
        #expect(report.summary == "2 of 3 modules applied, 1 in part (handmade.safetensors: \(Self.toQ): \(reason))")
        // The weight part still applies.
        let before = model.tensor(q.weightKey)!.doubles
        try PatchEngine(model: model).apply(plan)
        let got = zip(model.tensor(q.weightKey)!.doubles, before).map { $0 - $1 }
        #expect(patchMaxAbsDiff(got, diff.doubles) <= 1e-6)
    }

    /// DoRA renormalises W + ΔW; a 4-channel delta on the inpainting conv_in [4, 9, 3, 3]
    /// cannot (A1111 fails on it too): skipped at plan time, the rest of the file applies.
    @Test func doraOnInpaintingConvInIsSkippedAtPlanTime() throws {
        let name = "lora_unet_conv_in"
        let adapter = try PatchFixtures.adapter([
            ("\(name).lora_down.weight", patchSeeded([2, 4, 3, 3], seed: 9)), ("\(name).lora_up.weight", patchSeeded([4, 2, 1, 1], seed: 10)),
            ("\(name).alpha", Tensor(scalar: 1)), ("\(name).dora_scale", patchSeeded([4, 1, 1, 1], seed: 11, scale: 0.1, offset: 1)),
            ("\(Self.toOut).diff_b", patchSeeded([4], seed: 12)),
        ])
        let model = try PatchFixtures.model("sd1_inpaint")
        let target = try #require(model.targetIndex.resolve(name))
        #expect(model.tensor(target.weightKey)?.shape == [4, 9, 3, 3])
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
        #expect(plan.report.applied == 1 && plan.report.total == 2)
        #expect(plan.report.skipped.map(\.module) == [name])
        #expect(plan.report.skipped.first?.reason == "a dora module renormalises the whole weight, and its delta [4, 4, 3, 3] "
            + "covers only 4 of the 9 input channels of the inpainting layer \(target.weightKey) [4, 9, 3, 3]")
        #expect(!plan.touches(target.weightKey))
        try PatchEngine(model: model).apply(plan)
        // Plain LoRA on the same layer still applies (zero-padded), as before.
        let lora = try PatchFixtures.adapter([
            ("\(name).lora_down.weight", patchSeeded([2, 4, 3, 3], seed: 9)), ("\(name).lora_up.weight", patchSeeded([4, 2, 1, 1], seed: 10)),
        ])
        #expect(try PatchPlan(model: model, stack: [AdapterApplication(adapter: lora)]).report.skipped.isEmpty)
    }
}

/// `PatchPlan.applyChain` folds each module's scale and strength into the pass that adds its
/// delta; the result must be bit-identical to materialising s·ΔW, then strength·(s·ΔW), and
/// adding that (what the host did before), on the F16 model (rounded once at the end) and F32.
@Suite struct PatchEngineFusedAccumulateTests {
    @Test(arguments: ["sd1", "sd1 F32"])
    func fusedScaleAndStrengthAreBitIdenticalToScalingFirst(_ variant: String) throws {
        let stored = try PatchFixtures.model("sd1")
        let model = variant == "sd1" ? stored : PatchFixtures.widened(stored)
        let loha = try PatchFixtures.adapter("lycoris_loha")
        let stack = [AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon"), weight: 0.7, unetWeight: 1.3),
                     AdapterApplication(adapter: loha, weight: 0.55),
                     AdapterApplication(adapter: try PatchFixtures.adapter("peft_sd1_bias"), weight: 1)]
        let plan = try PatchPlan(model: model, stack: stack)
        var compared = 0, scaledTwice = 0
        for key in plan.weightKeys {
            let original = model.tensor(key)!
            var reference = original.to(.f32).doubles.map { Float($0) }
            for p in plan.modulesByWeightKey[key]! {
                let linear = try #require(p.module as? any LinearAdapterModule)
                let unit = try #require(try linear.unitDelta(dynRank: nil).weight)
                let delta = unit.scaled(by: Double(p.options.strength)).to(.f32)
                #expect(delta.count == reference.count)
                if p.options.strength != 1, linear.factoredUnitDeltaScale != 1 { scaledTwice += 1 }
                for (i, d) in delta.doubles.enumerated() { reference[i] += Float(d) }
            }
            let want = Tensor(shape: original.shape, values: reference).to(original.dtype)
            let got = try #require(try plan.patchedTensor(for: key))
            #expect(patchBytes(got) == patchBytes(want), "\(key)")
            compared += 1
        }
        // Biases (peft_sd1_bias's lora_B.bias, scaled by alpha/r, then by the strength).
        var biases = 0
        for key in plan.touchedKeys where plan.modulesByWeightKey[key] == nil {
            let weightKey = try #require(plan.weightKeyForBias[key])
            let original = model.tensor(key)!
            var reference = original.to(.f32).doubles.map { Float($0) }
            for p in plan.modulesByWeightKey[weightKey]! where p.module.changesBias {
                let linear = try #require(p.module as? any LinearAdapterModule)
                let unit = try #require(try linear.unitDelta(dynRank: nil).bias)
                for (i, d) in unit.scaled(by: Double(p.options.strength)).to(.f32).doubles.enumerated() { reference[i] += Float(d) }
            }
            let want = Tensor(shape: original.shape, values: reference).to(original.dtype)
            #expect(patchBytes(try #require(try plan.patchedTensor(for: key))) == patchBytes(want), "\(key)")
            biases += 1
        }
        #expect(biases >= 8)
        print("[patch-engine] fused accumulate: \(biases) biases, \(compared) weights bit-identical, \(scaledTwice) with scale and strength both ≠ 1")
        #expect(compared >= 15 && scaledTwice >= 10)
    }
}

private extension LinearAdapterModule {
    var factoredUnitDeltaScale: Double { (try? factoredUnitDelta(dynRank: nil).weightScale) ?? 1 }
}
