import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// `LoRACombine`: concat is exact, svd is within 1.05× of the optimal rank-R error, linear is
/// kohya's formula; layers meet across dialects (kohya and PEFT names of one layer).
@Suite struct OperationsCombineTests {
    static let toQ = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    static let teQ = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    static let conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
    static let projOut = "lora_unet_up_blocks_1_attentions_0_proj_out"

    /// Input A (kohya, mixed alphas, a LoCon module) and input B (PEFT names, patterns).
    func inputs(_ dir: OpsScratch) throws -> (a: String, b: String) {
        let a = try writeOpsFile(dir, "a.safetensors",
            kohyaModule(Self.toQ, out: 32, in: 32, rank: 4, alpha: 2, seed: 1)
            + kohyaModule(Self.teQ, out: 24, in: 24, rank: 2, alpha: nil, seed: 3)
            + kohyaModule(Self.conv1, out: 16, in: 8, rank: 3, alpha: 1.5, seed: 5, kernel: 3))
        let config = """
            {"unet.r": 3, "unet.lora_alpha": 6, "unet.rank_pattern": {"down_blocks.0.resnets.0.conv1": 2, \
            "up_blocks.1.attentions.0.proj_out": 2}, "unet.alpha_pattern": {"up_blocks.1.attentions.0.proj_out": 1}}
            """
        let b = try writeOpsFile(dir, "b.safetensors", [
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", seededTensor([3, 32], seed: 11, scale: 0.5)),
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", seededTensor([32, 3], seed: 12, scale: 0.5)),
            ("unet.down_blocks.0.resnets.0.conv1.lora_A.weight", seededTensor([2, 8, 3, 3], seed: 13, scale: 0.5)),
            ("unet.down_blocks.0.resnets.0.conv1.lora_B.weight", seededTensor([16, 2, 1, 1], seed: 14, scale: 0.5)),
            ("unet.up_blocks.1.attentions.0.proj_out.lora_A.weight", seededTensor([2, 8, 1, 1], seed: 15, scale: 0.5)),
            ("unet.up_blocks.1.attentions.0.proj_out.lora_B.weight", seededTensor([8, 2, 1, 1], seed: 16, scale: 0.5)),
        ], metadata: ["lora_adapter_metadata": config])
        return (a, b)
    }

    /// Σ wᵢ·scaleᵢ·upᵢ·downᵢ per layer (kohya name), from the input tensors with naive loops.
    func expectedSum(_ a: String, _ b: String, wa: Double, wb: Double) throws -> [String: [Double]] {
        let fa = try SafeTensorsFile(path: a), fb = try SafeTensorsFile(path: b)
        func add(_ into: inout [String: [Double]], _ name: String, _ values: [Double]) {
            if let old = into[name] { into[name] = zip(old, values).map(+) } else { into[name] = values }
        }
        var out: [String: [Double]] = [:]
        for (name, scale) in [(Self.toQ, 2.0 / 4), (Self.teQ, 1.0), (Self.conv1, 1.5 / 3)] {
            add(&out, name, naiveDelta(up: try fa.tensor(named: "\(name).lora_up.weight"),
                                       down: try fa.tensor(named: "\(name).lora_down.weight"), scale: wa * scale))
        }
        for (path, name, scale) in [("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", Self.toQ, 6.0 / 3),
                                    ("unet.down_blocks.0.resnets.0.conv1", Self.conv1, 6.0 / 2),
                                    ("unet.up_blocks.1.attentions.0.proj_out", Self.projOut, 1.0 / 2)] {
            add(&out, name, naiveDelta(up: try fb.tensor(named: "\(path).lora_B.weight"),
                                       down: try fb.tensor(named: "\(path).lora_A.weight"), scale: wb * scale))
        }
        return out
    }

    func combine(_ paths: [(String, Double)], _ options: LoRACombine.Options, family: ModelFamily = .sd1,
                 dir: OpsScratch, name: String = "out.safetensors") throws -> (String, LoRACombine.Result) {
        let inputs = try paths.map { LoRACombine.Input(file: try LoRAOperationInput(path: $0.0), weight: $0.1) }
        let result = try LoRACombine.combine(inputs, options: options, names: .standard(for: family), title: "out")
        let out = dir.file(name)
        try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out)
        return (out, result)
    }

    @Test func concatIsExactAcrossDialects() throws {
        let dir = try OpsScratch()
        let (a, b) = try inputs(dir)
        let (out, result) = try combine([(a, 0.7), (b, -1.3)], LoRACombine.Options(mode: .concat), dir: dir)
        let expected = try expectedSum(a, b, wa: 0.7, wb: -1.3)
        let deltas = try unitDeltas(out)
        #expect(Set(deltas.keys) == Set(expected.keys))
        for (name, values) in expected {
            let got = try #require(deltas[name], "\(name) missing")
            #expect(relativeDistance(got.values, values) < 1e-5, "\(name)")
        }
        // Ranks add up; alpha = rank (scale 1); a module only one input has is kept.
        let file = try SafeTensorsFile(path: out)
        #expect(try file.tensor(named: "\(Self.toQ).lora_down.weight").shape == [7, 32])
        #expect(try file.tensor(named: "\(Self.toQ).alpha").floats == [7])
        #expect(try file.tensor(named: "\(Self.conv1).lora_down.weight").shape == [5, 8, 3, 3])
        #expect(try file.tensor(named: "\(Self.conv1).lora_up.weight").shape == [16, 5, 1, 1])
        #expect(try file.tensor(named: "\(Self.projOut).lora_down.weight").shape == [2, 8, 1, 1])
        #expect(result.layers.count == 4)
        #expect(file.metadata["ss_network_dim"] == "Dynamic" && file.metadata["ss_network_module"] == "networks.lora")
        #expect(file.metadata["modelspec.merged_from"] == "a, b")
    }

    @Test func concatRefusesOtherTypesAndSaysWhy() throws {
        let dir = try OpsScratch()
        let (a, _) = try inputs(dir)
        let loha = "\(loraFixtures)/lycoris_loha.safetensors"
        #expect {
            _ = try combine([(a, 1), (loha, 1)], LoRACombine.Options(mode: .concat), dir: dir)
        } throws: { error in
            "\(error)".contains("--mode svd") && "\(error)".contains("loha")
        }
        #expect(throws: LoRAOperationError.self) {
            _ = try combine([(a, 1)], LoRACombine.Options(mode: .concat, rank: 4), dir: dir)
        }
        #expect(throws: LoRAOperationError.self) {
            _ = try combine([(a, 1)], LoRACombine.Options(mode: .svd), dir: dir)
        }
    }

    @Test func svdIsNearOptimalAndCombinesTypes() throws {
        let dir = try OpsScratch()
        let big = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_2"
        let small = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k"
        let a = try writeOpsFile(dir, "a.safetensors",
            kohyaModule(big, out: 320, in: 1280, rank: 16, alpha: 8, seed: 21)
            + kohyaModule(small, out: 32, in: 32, rank: 4, alpha: 4, seed: 23))
        let b = try writeOpsFile(dir, "b.safetensors",
            kohyaModule(big, out: 320, in: 1280, rank: 16, alpha: 16, seed: 31)
            + kohyaModule(small, out: 32, in: 32, rank: 4, alpha: 2, seed: 33))
        // A LoHa module on the big layer: Δ = (w1a·w1b) ⊙ (w2a·w2b) · alpha/rank.
        let w1a = seededTensor([320, 4], seed: 41, scale: 0.3), w1b = seededTensor([4, 1280], seed: 42, scale: 0.3)
        let w2a = seededTensor([320, 4], seed: 43, scale: 0.3), w2b = seededTensor([4, 1280], seed: 44, scale: 0.3)
        let c = try writeOpsFile(dir, "c.safetensors", [
            ("\(big).hada_w1_a", w1a), ("\(big).hada_w1_b", w1b), ("\(big).hada_w2_a", w2a), ("\(big).hada_w2_b", w2b),
            ("\(big).alpha", Tensor(shape: [], values: [2])),
        ])
        var options = LoRACombine.Options(mode: .svd, rank: 8)
        options.convRank = 2
        let (out, result) = try combine([(a, 1.0), (b, -0.5), (c, 2.0)], options, dir: dir)

        let fa = try SafeTensorsFile(path: a), fb = try SafeTensorsFile(path: b)
        func kohya(_ f: SafeTensorsFile, _ name: String, _ scale: Double) throws -> [Double] {
            naiveDelta(up: try f.tensor(named: "\(name).lora_up.weight"), down: try f.tensor(named: "\(name).lora_down.weight"), scale: scale)
        }
        let h1 = naiveMatmul(w1a.doubles, w1b.doubles, m: 320, k: 4, n: 1280)
        let h2 = naiveMatmul(w2a.doubles, w2b.doubles, m: 320, k: 4, n: 1280)
        let loha = zip(h1, h2).map { $0 * $1 * (2.0 / 4) * 2.0 }
        let sums: [String: (values: [Double], shape: [Int])] = [
            big: (zip(try kohya(fa, big, 8.0 / 16), try kohya(fb, big, -0.5)).map(+).enumerated().map { $0.element + loha[$0.offset] }, [320, 1280]),
            small: (zip(try kohya(fa, small, 1.0), try kohya(fb, small, -0.25)).map(+), [32, 32]),
        ]
        let deltas = try unitDeltas(out)
        for (name, sum) in sums {
            let got = try #require(deltas[name])
            #expect(got.shape == sum.shape)
            let matrix = Tensor(shape: sum.shape, doubles: sum.values)
            let optimal = try optimalError(matrix, rank: 8)
            let error = zip(got.values, sum.values).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            // F32 factors: rounding adds ~1e-7 of the norm on top of the truncation.
            let norm = sum.values.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(error <= 1.05 * optimal + 1e-5 * norm, "\(name): error \(error) vs optimal \(optimal)")
            #expect(error >= optimal * (1 - 1e-4), "\(name): below the optimum is impossible")
        }
        #expect(result.layers.allSatisfy { $0.rank == 8 })
        #expect(try SafeTensorsFile(path: out).tensor(named: "\(big).alpha").floats == [8])
    }

    @Test func linearIsKohyasFormula() throws {
        let dir = try OpsScratch()
        let a = try writeOpsFile(dir, "a.safetensors", kohyaModule(Self.toQ, out: 16, in: 12, rank: 4, alpha: 4, seed: 51))
        let b = try writeOpsFile(dir, "b.safetensors", kohyaModule(Self.toQ, out: 16, in: 12, rank: 4, alpha: 1, seed: 53))
        let (out, _) = try combine([(a, 1.0), (b, -0.5)], LoRACombine.Options(mode: .linear), dir: dir)
        let fa = try SafeTensorsFile(path: a), fb = try SafeTensorsFile(path: b), fo = try SafeTensorsFile(path: out)
        // s₀ = √(4/4)·1 = 1, s₁ = √(1/4)·(−0.5) = −0.25; up gets |s|, down gets s.
        let up = zip(try fa.tensor(named: "\(Self.toQ).lora_up.weight").doubles, try fb.tensor(named: "\(Self.toQ).lora_up.weight").doubles)
            .map { $0 * 1 + $1 * 0.25 }
        let down = zip(try fa.tensor(named: "\(Self.toQ).lora_down.weight").doubles, try fb.tensor(named: "\(Self.toQ).lora_down.weight").doubles)
            .map { $0 * 1 - $1 * 0.25 }
        #expect(maxAbsDiff(try fo.tensor(named: "\(Self.toQ).lora_up.weight"), Tensor(shape: [16, 4], doubles: up)) < 1e-6)
        #expect(maxAbsDiff(try fo.tensor(named: "\(Self.toQ).lora_down.weight"), Tensor(shape: [4, 12], doubles: down)) < 1e-6)
        #expect(try fo.tensor(named: "\(Self.toQ).alpha").floats == [4])
        // Documented as inexact: the product of sums is not the sum of products.
        let exact = zip(try naiveDelta(up: fa.tensor(named: "\(Self.toQ).lora_up.weight"), down: fa.tensor(named: "\(Self.toQ).lora_down.weight"), scale: 1),
                        try naiveDelta(up: fb.tensor(named: "\(Self.toQ).lora_up.weight"), down: fb.tensor(named: "\(Self.toQ).lora_down.weight"), scale: -0.125)).map(+)
        #expect(relativeDistance(try unitDeltas(out)[Self.toQ]!.values, exact) > 1e-3)
    }
}
