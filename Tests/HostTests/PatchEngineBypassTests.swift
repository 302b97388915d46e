import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Bypass mode equals merged mode: for every layer a stack touches, the summed contribution
/// `BypassPatch` gives for an input x equals x·ΔWᵀ (linear) or conv2d(x, ΔW) (convolution)
/// with ΔW = merged − original weight, computed here in Double with naive loops.
@Suite struct PatchEngineBypassTests {
    enum Stack: String, CaseIterable, CustomTestStringConvertible {
        /// Weight-independent: LoRA forward terms (incl. a strided 3×3 LoCon) and dense LoHa
        /// deltas — the same LoHa adapter twice, at two strengths.
        case independent
        /// A DoRA after the LoCon on the same layers: the whole chain's delta.
        case withDoRA
        /// The inpainting UNet's 9-channel conv_in with a 4-channel LoRA (zero-padded delta).
        case inpainting
        /// Bias deltas: PEFT `lora_B.bias` (LoRA forward term + s·lora_B.bias) and LyCORIS
        /// `diff`/`diff_b` (dense term + diff_b), linear and conv layers.
        case withBias
        /// PEFT `lora_B.bias` then a PEFT DoRA on the same layers: the chain's weight and bias.
        case biasInChain
        var testDescription: String { rawValue }
    }

    static func applications(_ stack: Stack) throws -> (model: String, [AdapterApplication]) {
        switch stack {
        case .independent:
            let loha = try PatchFixtures.adapter("lycoris_loha")
            return ("sd1", [AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon"), weight: 0.7, unetWeight: 1),
                            AdapterApplication(adapter: loha, weight: 0.5),
                            AdapterApplication(adapter: loha, weight: 1, unetWeight: 0.25)])
        case .withDoRA:
            return ("sd1", [AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon")),
                            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_dora_out"), weight: 0.8)])
        case .inpainting:
            return ("sd1_inpaint", [AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_noalpha"), weight: 0.9)])
        case .withBias:
            return ("sd1", [AdapterApplication(adapter: try PatchFixtures.adapter("peft_sd1_bias"), weight: 0.6, unetWeight: 0.8),
                            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_full"), weight: 0.5)])
        case .biasInChain:
            return ("sd1", [AdapterApplication(adapter: try PatchFixtures.adapter("peft_sd1_bias"), weight: 0.7),
                            AdapterApplication(adapter: try PatchFixtures.adapter("peft_sd1_dora"), weight: 0.9)])
        }
    }

    @Test(arguments: Stack.allCases)
    func bypassEqualsMerged(_ stack: Stack) throws {
        let (modelName, apps) = try Self.applications(stack)
        let stored = try PatchFixtures.model(modelName)
        let model = modelName == "sd1" ? PatchFixtures.widened(stored) : stored
        let merged = PatchFixtures.widened(stored)
        let plan = try PatchPlan(model: model, stack: apps)
        try PatchEngine(model: merged).apply(try PatchPlan(model: merged, stack: apps))
        let bypass = BypassPatch(plan: plan)

        var linear = 0, conv = 0, strided = 0, biasLayers = 0, worst = 0.0
        for (index, key) in plan.weightKeys.enumerated() {
            let target = plan.modulesByWeightKey[key]![0].target
            #expect(bypass.hasTerms(for: key))
            let original = model.tensor(key)!
            let delta = zip(merged.tensor(key)!.doubles, original.doubles).map { $0 - $1 }
            // The merged weight is rounded to F32 once per element: the reference carries
            // that rounding, up to half an ulp of the merged value per weight element.
            let roundingPerWeight = patchULP32(patchMaxAbs(merged.tensor(key)!.doubles)) / 2
            // The bias delta merged mode applied (zero when the layer's bias is untouched).
            var biasDelta = [Double](repeating: 0, count: original.shape[0])
            if let b = target.biasKey, plan.touches(b) {
                biasDelta = zip(merged.tensor(b)!.doubles, model.tensor(b)!.doubles).map { $0 - $1 }
                biasLayers += 1
            }
            let got: Tensor, want: [Double], inputSum: Double, input: Tensor
            switch target.layer {
            case .linear:
                let outWidth = original.shape[0], inWidth = original.shape[1]
                let x = patchSeeded([2, 3, inWidth], seed: 1000 + UInt64(index))
                got = try #require(try bypass.contribution(for: key, input: x, layer: target.layer))
                input = x
                #expect(got.shape == [2, 3, outWidth])
                want = Self.linearReference(x.doubles, rows: 6, delta: delta, out: outWidth, in: inWidth)
                    .enumerated().map { $0.element + biasDelta[$0.offset % outWidth] }
                inputSum = Double(inWidth)
                linear += 1
            case let .conv2d(stride, padding):
                let x = patchSeeded([1, original.shape[1], 6, 6], seed: 2000 + UInt64(index))
                got = try #require(try bypass.contribution(for: key, input: x, layer: target.layer))
                input = x
                let convOut = Self.convReference(x.doubles, channels: original.shape[1], size: 6, weight: delta,
                                              shape: original.shape, stride: stride, padding: padding)
                let plane = convOut.count / original.shape[0]
                want = convOut.enumerated().map { $0.element + biasDelta[$0.offset / plane] }
                inputSum = Double(original.count / original.shape[0])
                conv += 1
                if stride > 1 { strided += 1 }
            case .norm, .embedding:
                Issue.record("\(key): a \(target.layer) layer in a LoRA stack")
                continue
            }
            #expect(got.count == want.count, "\(key)")
            let diff = patchMaxAbsDiff(got.doubles, want)
            let tolerance = 1e-5 * patchMaxAbs(want) + inputSum * roundingPerWeight
            #expect(diff <= tolerance, "\(key) (\(target.layer)): bypass differs from merged by \(diff), tolerance \(tolerance)")
            #expect(patchMaxAbs(want) > 1e-4, "\(key): no contribution to compare")
            worst = max(worst, diff / patchMaxAbs(want))

            // The in-place form (what the runtime's layers call) adds the same contribution to
            // an existing output (LoRA: one GEMM with beta = 1).
            let start = patchSeeded(got.shape, seed: 3000 + UInt64(index)).doubles
            let out = Tensor(shape: got.shape, values: start.map(Float.init))
            #expect(try bypass.addContribution(for: key, input: input, layer: target.layer, into: out))
            let added = zip(out.doubles, start).map { $0 - $1 }
            let inPlaceDiff = patchMaxAbsDiff(added, want)
            let sumRounding = patchULP32(patchMaxAbs(out.doubles))
            #expect(inPlaceDiff <= tolerance + sumRounding, "\(key): in-place bypass differs by \(inPlaceDiff)")
        }
        #expect(linear > 0 && conv > 0)
        if stack == .independent || stack == .withDoRA { #expect(strided > 0) }
        if stack == .withBias || stack == .biasInChain { #expect(biasLayers >= 4) }
        print("[patch-engine] bypass vs merged (\(stack)): \(linear) linear, \(conv) conv layers, worst relative \(worst)")
    }

    /// x [rows, in] · ΔWᵀ.
    static func linearReference(_ x: [Double], rows: Int, delta: [Double], out: Int, in inWidth: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * out)
        for r in 0..<rows { for o in 0..<out { for i in 0..<inWidth { y[r * out + o] += x[r * inWidth + i] * delta[o * inWidth + i] } } }
        return y
    }

    /// conv2d(x [1, C, size, size], W [O, C, kh, kw]) with zero padding, in Double.
    static func convReference(_ x: [Double], channels: Int, size: Int, weight: [Double], shape: [Int],
                              stride: Int, padding: Int) -> [Double] {
        let out = shape[0], kh = shape[2], kw = shape[3]
        let oh = (size + 2 * padding - kh) / stride + 1, ow = (size + 2 * padding - kw) / stride + 1
        var y = [Double](repeating: 0, count: out * oh * ow)
        for o in 0..<out {
            for py in 0..<oh {
                for px in 0..<ow {
                    var sum = 0.0
                    for c in 0..<channels {
                        for ky in 0..<kh {
                            for kx in 0..<kw {
                                let iy = py * stride + ky - padding, ix = px * stride + kx - padding
                                guard iy >= 0, iy < size, ix >= 0, ix < size else { continue }
                                sum += weight[((o * channels + c) * kh + ky) * kw + kx] * x[(c * size + iy) * size + ix]
                            }
                        }
                    }
                    y[(o * oh + py) * ow + px] = sum
                }
            }
        }
        return y
    }
}
