import Foundation
import Host
@testable import LoRA
import SafeTensors
import Tensor
import Testing

/// LoRA math against naive Double loops: scale, dyn, strength, rsLoRA, bypass.
struct LoRAModuleTests {
    // up [4, 3], down [3, 5], alpha 2 → ΔW = (2/3)·up·down.
    let up = seededTensor([4, 3], seed: 1)
    let down = seededTensor([3, 5], seed: 2)

    func naiveDelta(rank: Int, scale: Double) -> [Double] {
        let u = up.doubles, d = down.doubles
        var out = [Double](repeating: 0, count: 20)
        for i in 0..<4 { for j in 0..<5 { for r in 0..<rank { out[i * 5 + j] += u[i * 3 + r] * d[r * 5 + j] } } }
        return out.map { $0 * scale }
    }

    func kohya(alpha: Float? = 2, metadata: [String: String] = [:]) throws -> any AdapterModule {
        var tensors = [("lora_unet_x.lora_up.weight", up), ("lora_unet_x.lora_down.weight", down)]
        if let alpha { tensors.append(("lora_unet_x.alpha", Tensor(scalar: alpha))) }
        return try #require(try loadAdapter(tensors, metadata: metadata).modules.first)
    }

    @Test func scaleIsAlphaOverRank() throws {
        let m = try kohya()
        #expect(m.rank == 3 && m.alpha == 2)
        let d = try #require(try m.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
        #expect(zip(d.doubles, naiveDelta(rank: 3, scale: 2.0 / 3)).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func noAlphaMeansScaleOne() throws {
        let d = try #require(try kohya(alpha: nil).delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
        #expect(zip(d.doubles, naiveDelta(rank: 3, scale: 1)).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func strengthMultipliesTheDelta() throws {
        let d = try #require(try kohya().delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 0.3)).weight)
        #expect(zip(d.doubles, naiveDelta(rank: 3, scale: 0.3 * 2.0 / 3)).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    /// A1111's dyn keeps the first ranks and keeps the scale alpha / full rank.
    @Test func dynTruncatesRanksKeepingTheScale() throws {
        let m = try kohya()
        for dyn in [1, 2] {
            let d = try #require(try m.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1, dynRank: dyn)).weight)
            #expect(zip(d.doubles, naiveDelta(rank: dyn, scale: 2.0 / 3)).allSatisfy { abs($0 - $1) < 1e-6 }, "dyn \(dyn)")
        }
        let big = try #require(try m.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1, dynRank: 10)).weight)
        #expect(zip(big.doubles, naiveDelta(rank: 3, scale: 2.0 / 3)).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    /// rsLoRA: alpha/√r from PEFT's use_rslora, and from kohya's ss_network_args — except from
    /// LyCORIS, which stores alpha·√r already.
    @Test func rsLoRA() throws {
        let peft = try loadAdapter([("unet.x.lora_B.weight", up), ("unet.x.lora_A.weight", down)],
                                   metadata: ["lora_adapter_metadata": #"{"unet.lora_alpha": 6, "unet.r": 3, "unet.use_rslora": true}"#])
        let d = try #require(try peft.modules[0].delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
        #expect(zip(d.doubles, naiveDelta(rank: 3, scale: 6 / 3.0.squareRoot())).allSatisfy { abs($0 - $1) < 1e-5 })

        let args = #"{"algo": "lora", "rs_lora": "True"}"#
        let kohyaRS = try kohya(metadata: ["ss_network_module": "networks.lora", "ss_network_args": args])
        let k = try #require(try kohyaRS.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
        #expect(zip(k.doubles, naiveDelta(rank: 3, scale: 2 / 3.0.squareRoot())).allSatisfy { abs($0 - $1) < 1e-5 })

        let lycorisRS = try kohya(metadata: ["ss_network_module": "lycoris.kohya", "ss_network_args": args])
        let l = try #require(try lycorisRS.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
        #expect(zip(l.doubles, naiveDelta(rank: 3, scale: 2.0 / 3)).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    /// PEFT alphas from lora_adapter_metadata: alpha_pattern (PEFT's `(.*\.)?(pattern)$`) over lora_alpha.
    @Test func peftAlphaPattern() throws {
        let meta = #"{"unet.lora_alpha": 6, "unet.r": 3, "unet.alpha_pattern": {"attn2.to_k": 1.5}}"#
        let adapter = try loadAdapter([("unet.a.attn2.to_k.lora_B.weight", up), ("unet.a.attn2.to_k.lora_A.weight", down),
                                       ("unet.a.attn1.to_k.lora_B.weight", up), ("unet.a.attn1.to_k.lora_A.weight", down)],
                                      metadata: ["lora_adapter_metadata": meta])
        let byName = Dictionary(uniqueKeysWithValues: adapter.modules.map { ($0.name, $0) })
        for (name, scale) in [("unet.a.attn2.to_k", 0.5), ("unet.a.attn1.to_k", 2.0)] {
            let d = try #require(try byName[name]!.delta(weight: Tensor(zeros: [4, 5]), options: DeltaOptions(strength: 1)).weight)
            #expect(zip(d.doubles, naiveDelta(rank: 3, scale: scale)).allSatisfy { abs($0 - $1) < 1e-5 }, "\(name)")
        }
    }

    /// Bypass: forwardTerm(x) == x·ΔWᵀ (linear, with dyn and strength).
    @Test func bypassLinearMatchesDenseDelta() throws {
        let m = try kohya()
        let x = seededTensor([2, 3, 5], seed: 9)
        for options in [DeltaOptions(strength: 0.7), DeltaOptions(strength: 1.2, dynRank: 2)] {
            let term = try #require(try m.forwardTerm(input: x, layer: .linear, options: options))
            let dw = naiveDelta(rank: options.dynRank ?? 3, scale: 2.0 / 3 * Double(options.strength))
            // x [6, 5] · ΔWᵀ [5, 4]
            var dwT = [Double](repeating: 0, count: 20)
            for i in 0..<4 { for j in 0..<5 { dwT[j * 4 + i] = dw[i * 5 + j] } }
            let want = naiveMatmul(x.doubles, dwT, m: 6, k: 5, n: 4)
            #expect(term.shape == [2, 3, 4])
            #expect(zip(term.doubles, want).allSatisfy { abs($0 - $1) < 1e-5 })
        }
    }

    /// Bypass on a 3×3 convolution (LoCon), stride 2 padding 1: equals a naive convolution with ΔW.
    @Test func bypassConvMatchesDenseDelta() throws {
        let upC = seededTensor([4, 2, 1, 1], seed: 3), downC = seededTensor([2, 3, 3, 3], seed: 4)
        let adapter = try loadAdapter([("lora_unet_c.lora_up.weight", upC), ("lora_unet_c.lora_down.weight", downC),
                                       ("lora_unet_c.alpha", Tensor(scalar: 1))])
        let m = adapter.modules[0]
        let x = seededTensor([1, 3, 5, 6], seed: 5)
        let term = try #require(try m.forwardTerm(input: x, layer: .conv2d(stride: 2, padding: 1), options: DeltaOptions(strength: 0.8)))
        let dw = try #require(try m.delta(weight: Tensor(zeros: [4, 3, 3, 3]), options: DeltaOptions(strength: 0.8)).weight).doubles
        // naive conv2d, stride 2, padding 1
        let (h, w, oh, ow) = (5, 6, 3, 3)
        let xs = x.doubles
        var want = [Double](repeating: 0, count: 4 * oh * ow)
        for o in 0..<4 { for i in 0..<oh { for j in 0..<ow {
            var acc = 0.0
            for c in 0..<3 { for ki in 0..<3 { for kj in 0..<3 {
                let yi = i * 2 + ki - 1, xj = j * 2 + kj - 1
                if yi < 0 || yi >= h || xj < 0 || xj >= w { continue }
                acc += xs[(c * h + yi) * w + xj] * dw[((o * 3 + c) * 3 + ki) * 3 + kj]
            } } }
            want[(o * oh + i) * ow + j] = acc
        } } }
        #expect(term.shape == [1, 4, oh, ow])
        #expect(zip(term.doubles, want).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    /// Weight-dependent modules give no cheap form (the host uses their dense delta).
    @Test func doraHasNoForwardTerm() throws {
        let adapter = try loadAdapter([("lora_unet_x.lora_up.weight", up), ("lora_unet_x.lora_down.weight", down),
                                       ("lora_unet_x.dora_scale", Tensor(shape: [4, 1], values: [1, 2, 3, 4]))])
        let m = adapter.modules[0]
        #expect(m.dependsOnWeight && m.moduleType == "dora")
        #expect(try m.forwardTerm(input: seededTensor([2, 5], seed: 1), layer: .linear, options: DeltaOptions(strength: 1)) == nil)
    }
}
