import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// `LoRAResize`: kohya's rank rules (fixture values from kohya's formulas in torch), the scale
/// kept, and the result the best approximation at the new rank.
@Suite struct OperationsResizeTests {
    struct RuleCase: Decodable, CustomTestStringConvertible, Sendable {
        let vector: String
        let method: String?
        let target: Double?
        let limit: Int
        let scale: Float
        let newRank: Int
        let newAlpha: Float
        let froRetained: Float
        let sumRetained: Float
        let maxRatio: Float
        var testDescription: String { "\(vector) \(method ?? "fixed") \(target.map { "\($0)" } ?? "") limit \(limit)" }
    }

    struct RuleFixture: Decodable {
        let vectors: [String: [Float]]
        let cases: [RuleCase]
    }

    static let fixture: RuleFixture = {
        let data = try! Data(contentsOf: URL(fileURLWithPath: "\(opsFixtures)/resize_rules.json"))
        return try! JSONDecoder().decode(RuleFixture.self, from: data)
    }()

    @Test func rankRulesMatchKohya() throws {
        #expect(Self.fixture.cases.count > 100)
        for c in Self.fixture.cases {
            let s = Self.fixture.vectors[c.vector]!
            let rule: LoRAResize.RankRule
            switch c.method {
            case "sv_ratio": rule = .svRatio(c.target!)
            case "sv_fro": rule = .svFro(c.target!)
            case "sv_cumulative": rule = .svCumulative(c.target!)
            default: rule = .fixed(c.limit)
            }
            let got = LoRAResize.select(singularValues: s, rule: rule, cap: c.limit, scale: c.scale)
            #expect(got.newRank == c.newRank, "\(c.testDescription)")
            #expect(got.newAlpha == c.newAlpha, "\(c.testDescription)")
            #expect(abs(got.froRetained - c.froRetained) <= 1e-6 * max(1, c.froRetained), "\(c.testDescription)")
            #expect(abs(got.sumRetained - c.sumRetained) <= 1e-6, "\(c.testDescription)")
            #expect(abs(got.maxRatio - c.maxRatio) <= 1e-5 * c.maxRatio, "\(c.testDescription)")
        }
    }

    /// A module with known singular values: up = U·diag(s), down = Vt (orthonormal U, V).
    func knownSpectrum(_ s: [Double], out: Int, in inFeatures: Int, seed: UInt64) throws -> (up: Tensor, down: Tensor) {
        let u = try qr(seededTensor([out, s.count], seed: seed)).q
        let v = try qr(seededTensor([inFeatures, s.count], seed: seed &+ 1)).q
        let up = u * Tensor(shape: [1, s.count], doubles: s).to(.f32)
        return (up.contiguous(), v.transposed().contiguous())
    }

    func resize(_ path: String, _ options: LoRAResize.Options, dir: OpsScratch, name: String = "resized.safetensors") throws -> (String, LoRAResize.Result) {
        let result = try LoRAResize.resize(try LoRAOperationInput(path: path), options: options, names: .standard(for: .sd1))
        let out = dir.file(name)
        try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out)
        return (out, result)
    }

    @Test func fixedRankKeepsTheScaleAndIsOptimal() throws {
        let dir = try OpsScratch()
        let name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        let conv = "lora_unet_down_blocks_0_resnets_0_conv1"
        let input = try writeOpsFile(dir, "in.safetensors",
            kohyaModule(name, out: 48, in: 40, rank: 8, alpha: 4, seed: 61)
            + kohyaModule(conv, out: 16, in: 8, rank: 6, alpha: 3, seed: 63, kernel: 3),
            metadata: ["ss_network_dim": "8", "ss_training_comment": "hi", "sshs_model_hash": "stale"])
        var options = LoRAResize.Options(rule: .fixed(3))
        options.convRank = 2
        let (out, result) = try resize(input, options, dir: dir)
        let file = try SafeTensorsFile(path: out)
        // alpha = scale · new rank: 4/8·3 and 3/6·2.
        #expect(try file.tensor(named: "\(name).alpha").floats == [1.5])
        #expect(try file.tensor(named: "\(conv).alpha").floats == [1])
        #expect(try file.tensor(named: "\(conv).lora_down.weight").shape == [2, 8, 3, 3])
        #expect(file.metadata["ss_training_comment"] == "dimension is resized from 8 to 3 (conv: 2); hi")
        #expect(file.metadata["sshs_model_hash"] != "stale")
        let original = try unitDeltas(input), resized = try unitDeltas(out)
        for (module, rank) in [(name, 3), (conv, 2)] {
            let before = original[module]!, after = resized[module]!
            let matrix = Tensor(shape: [before.shape[0], before.values.count / before.shape[0]], doubles: before.values)
            let optimal = try optimalError(matrix, rank: rank)
            let error = zip(after.values, before.values).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            #expect(error <= optimal * (1 + 1e-4) + 1e-6, "\(module): \(error) vs \(optimal)")
            let report = try #require(result.layers.first { $0.name == module })
            let s = try svd(matrix).s.doubles
            let fro = (s.prefix(rank).reduce(0) { $0 + $1 * $1 } / s.reduce(0) { $0 + $1 * $1 }).squareRoot()
            #expect(abs(report.froRetained - fro) < 1e-5)
        }
    }

    @Test func dynamicFroFollowsTheSpectrum() throws {
        let dir = try OpsScratch()
        let name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
        let (up, down) = try knownSpectrum([8, 4, 2, 1, 0.5], out: 24, in: 20, seed: 71)
        let input = try writeOpsFile(dir, "in.safetensors", [
            ("\(name).lora_up.weight", up), ("\(name).lora_down.weight", down), ("\(name).alpha", Tensor(shape: [], values: [10])),
        ])
        // S² = 64, 16, 4, 1, 0.25 (total 85.25): cumulative share 0.751, 0.938, …; sv_fro 0.9
        // looks for 0.81 → index 1 → rank 2, fro retained √(80/85.25).
        let (out, result) = try resize(input, LoRAResize.Options(rule: .svFro(0.9)), dir: dir)
        #expect(result.layers[0].newRank == 2)
        #expect(abs(result.layers[0].froRetained - (80 / 85.25).squareRoot()) < 1e-6)
        let file = try SafeTensorsFile(path: out)
        #expect(try file.tensor(named: "\(name).alpha").floats == [4]) // 10/5 · 2
        #expect(file.metadata["ss_network_dim"] == "Dynamic" && file.metadata["ss_network_alpha"] == "Dynamic")
        // sv_ratio 3: values above 8/3 → 8, 4 → rank 2; capped by maxRank 1.
        var capped = LoRAResize.Options(rule: .svRatio(3))
        capped.maxRank = 1
        #expect(try resize(input, capped, dir: dir, name: "capped.safetensors").1.layers[0].newRank == 1)
    }
}
