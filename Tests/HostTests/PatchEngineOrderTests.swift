import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Stack order (`PatchPlan`'s order semantics): a weight-dependent module (DoRA, IA3) sees
/// the weight as the adapters before it left it — sequential application — so order matters;
/// weight-independent deltas commute up to F32 rounding.
@Suite struct PatchEngineOrderTests {
    /// attn2.to_k of the tiny SD1 UNet: a [4, 32] weight (context width 32).
    static let layer = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    static let out = 4, width = 32

    struct LoRAFactors {
        let up: Tensor, down: Tensor, alpha: Float
        var scale: Double { Double(alpha) / Double(down.shape[0]) }
        /// s · up·down in Double, row-major [out, in].
        var delta: [Double] {
            patchMatmul(up.doubles, down.doubles, m: up.shape[0], k: down.shape[0], n: down.shape[1]).map { $0 * scale }
        }
        var tensors: [(String, Tensor)] {
            [("\(layer).lora_down.weight", down), ("\(layer).lora_up.weight", up), ("\(layer).alpha", Tensor(scalar: alpha))]
        }
    }

    static func factors(seed: UInt64, alpha: Float) -> LoRAFactors {
        LoRAFactors(up: patchSeeded([out, 2], seed: seed, scale: 0.3), down: patchSeeded([2, width], seed: seed + 1, scale: 0.3),
                    alpha: alpha)
    }

    static let loraA = factors(seed: 100, alpha: 1)
    static let loraB = factors(seed: 200, alpha: 2)
    static let doraInner = factors(seed: 300, alpha: 1)
    /// DoRA magnitudes per output row (kohya `dora_scale` [out, 1]).
    static let magnitude = patchSeeded([out, 1], seed: 400, scale: 0.2, offset: 1)
    /// IA3 factors per output row.
    static let ia3 = patchSeeded([out], seed: 500, scale: 0.5)

    static func plainLoRA(_ f: LoRAFactors, _ path: String) throws -> Adapter {
        try PatchFixtures.adapter(f.tensors, path: path)
    }

    static func dora() throws -> Adapter {
        let adapter = try PatchFixtures.adapter(doraInner.tensors + [("\(layer).dora_scale", magnitude)], path: "dora.safetensors")
        #expect(adapter.modules.map(\.moduleType) == ["dora"] && adapter.modules[0].dependsOnWeight)
        return adapter
    }

    static func ia3Adapter() throws -> Adapter {
        let adapter = try PatchFixtures.adapter([("\(layer).weight", ia3), ("\(layer).on_input", Tensor(scalar: 0))],
                                                path: "ia3.safetensors")
        #expect(adapter.modules.map(\.moduleType) == ["ia3"] && adapter.modules[0].dependsOnWeight)
        return adapter
    }

    /// A fresh F32 model (so nothing is rounded between steps), its to_k key and values.
    static func model() throws -> (ModelWeights, String, [Double]) {
        let model = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        let key = try #require(model.targetIndex.resolve(layer)).weightKey
        let w = try #require(model.tensor(key))
        #expect(w.shape == [out, width] && w.dtype == .f32)
        return (model, key, w.doubles)
    }

    /// The merged to_k after applying `stack` as one plan.
    static func merged(_ stack: [AdapterApplication]) throws -> Tensor {
        let (model, key, _) = try model()
        let plan = try PatchPlan(model: model, stack: stack)
        #expect(plan.report.applied == stack.count && plan.modulesByWeightKey[key]?.count == stack.count)
        try PatchEngine(model: model).apply(plan)
        return model.tensor(key)!
    }

    /// DoRA (A1111): M = W + s·ΔW, W' = W + strength·(m·M/‖M‖_row − W), in Double.
    static func doraReference(_ w: [Double], strength: Double) -> [Double] {
        let merged = zip(w, doraInner.delta).map(+)
        let m = magnitude.doubles
        var result = w
        for o in 0..<out {
            let row = merged[(o * width)..<((o + 1) * width)]
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for j in 0..<width {
                let i = o * width + j
                result[i] = w[i] + strength * (m[o] * merged[i] / norm - w[i])
            }
        }
        return result
    }

    /// IA3 per output row: W' = W + strength·W⊙w.
    static func ia3Reference(_ w: [Double], strength: Double) -> [Double] {
        let f = ia3.doubles
        return w.enumerated().map { i, x in x + strength * x * f[i / width] }
    }

    @Test func doraAfterLoRASeesTheChangedWeight() throws {
        let (_, key, w0) = try Self.model()
        let lora = AdapterApplication(adapter: try Self.plainLoRA(Self.loraA, "a.safetensors"))
        let dora = AdapterApplication(adapter: try Self.dora(), weight: 0.6)

        let loraThenDoRA = try Self.merged([lora, dora])
        let doraThenLoRA = try Self.merged([dora, lora])

        // One plan equals two sequential applications (the second planned on the changed model).
        let (sequential, _, _) = try Self.model()
        let engine = PatchEngine(model: sequential)
        try engine.apply(try PatchPlan(model: sequential, stack: [lora]))
        try engine.apply(try PatchPlan(model: sequential, stack: [dora]))
        #expect(patchBytes(sequential.tensor(key)!) == patchBytes(loraThenDoRA))

        // Independent values: W₁ = W₀ + Δ_LoRA, then DoRA on W₁; and the reverse order.
        let w1 = zip(w0, Self.loraA.delta).map(+)
        let wantForward = Self.doraReference(w1, strength: 0.6)
        let wantReverse = zip(Self.doraReference(w0, strength: 0.6), Self.loraA.delta).map(+)
        let tolerance = 1e-5 * patchMaxAbs(wantForward)
        #expect(patchMaxAbsDiff(loraThenDoRA.doubles, wantForward) <= tolerance)
        #expect(patchMaxAbsDiff(doraThenLoRA.doubles, wantReverse) <= tolerance)
        // The orders differ by far more than rounding.
        let gap = patchMaxAbsDiff(loraThenDoRA.doubles, doraThenLoRA.doubles)
        #expect(gap > 1e-3, "orders differ by only \(gap)")
        print("[patch-engine] LoRA→DoRA vs DoRA→LoRA differ by \(gap) (max |W| \(patchMaxAbs(wantForward)))")
    }

    @Test func ia3AfterLoRAScalesTheChangedWeight() throws {
        let (_, _, w0) = try Self.model()
        let lora = AdapterApplication(adapter: try Self.plainLoRA(Self.loraA, "a.safetensors"))
        let ia3 = AdapterApplication(adapter: try Self.ia3Adapter(), weight: 0.8)
        let forward = try Self.merged([lora, ia3]), reverse = try Self.merged([ia3, lora])
        let w1 = zip(w0, Self.loraA.delta).map(+)
        let wantForward = Self.ia3Reference(w1, strength: 0.8)
        let wantReverse = zip(Self.ia3Reference(w0, strength: 0.8), Self.loraA.delta).map(+)
        let tolerance = 1e-5 * patchMaxAbs(wantForward)
        #expect(patchMaxAbsDiff(forward.doubles, wantForward) <= tolerance)
        #expect(patchMaxAbsDiff(reverse.doubles, wantReverse) <= tolerance)
        #expect(patchMaxAbsDiff(forward.doubles, reverse.doubles) > 1e-3)
    }

    /// Two plain LoRAs commute — up to F32 rounding: the engine adds each delta into an F32
    /// copy in stack order, (W + Δa) + Δb vs (W + Δb) + Δa, and F32 addition is not
    /// associative, so elements may differ in the last bits (each result is within one
    /// rounding per step of the exact sum). Stored in F16, both orders round to the same
    /// F16 value except at rare rounding boundaries (≤ 1 F16 ulp).
    @Test func plainLoRAsCommuteUpToRounding() throws {
        let (_, _, w0) = try Self.model()
        let a = AdapterApplication(adapter: try Self.plainLoRA(Self.loraA, "a.safetensors"))
        let b = AdapterApplication(adapter: try Self.plainLoRA(Self.loraB, "b.safetensors"), weight: 0.7)
        let ab = try Self.merged([a, b]).doubles, ba = try Self.merged([b, a]).doubles
        let exact = zip(zip(w0, Self.loraA.delta), Self.loraB.delta).map { $0.0 + $0.1 + 0.7 * $1 }
        var differing = 0
        for i in 0..<ab.count {
            // Two roundings per order, each at most half an ulp of the partial or final sum.
            let partials = [abs(w0[i]), abs(w0[i] + Self.loraA.delta[i]), abs(w0[i] + 0.7 * Self.loraB.delta[i]), abs(exact[i])]
            let ulp = patchULP32(partials.max()!)
            #expect(abs(ab[i] - ba[i]) <= 2 * ulp, "element \(i)")
            #expect(abs(ab[i] - exact[i]) <= 2 * ulp && abs(ba[i] - exact[i]) <= 2 * ulp, "element \(i)")
            if ab[i] != ba[i] { differing += 1 }
        }
        #expect(patchMaxAbsDiff(ab, w0) > 1e-3)

        // On the F16 model as stored.
        let key = try #require(try PatchFixtures.model("sd1").targetIndex.resolve(Self.layer)).weightKey
        func mergedF16(_ stack: [AdapterApplication]) throws -> [Double] {
            let model = try PatchFixtures.model("sd1")
            try PatchEngine(model: model).apply(try PatchPlan(model: model, stack: stack))
            #expect(model.tensor(key)!.dtype == .f16)
            return model.tensor(key)!.doubles
        }
        let ab16 = try mergedF16([a, b]), ba16 = try mergedF16([b, a])
        var differing16 = 0
        for i in 0..<ab16.count {
            #expect(abs(ab16[i] - ba16[i]) <= patchULP16(max(abs(ab16[i]), abs(ba16[i]))), "F16 element \(i)")
            if ab16[i] != ba16[i] { differing16 += 1 }
        }
        print("[patch-engine] A,B vs B,A: \(differing) of \(ab.count) F32 elements differ in the last bits, \(differing16) F16 elements")
    }
}
