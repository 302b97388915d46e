import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// `LoRAExtraction`: kohya's layer choice, per-layer error within 1.05× of the optimal rank-R
/// error (optimal from LAPACK's full SVD), kohya's clamp, text-encoder min-diff rule, metadata.
@Suite struct OperationsExtractTests {
    static let ff = "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight"
    static let toQ = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    static let toK = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"
    static let projIn = "unet.down_blocks.1.attentions.0.proj_in.weight"
    static let conv1 = "unet.down_blocks.1.resnets.0.conv1.weight"
    static let temb = "unet.down_blocks.1.resnets.0.time_emb_proj.weight"
    static let convIn = "unet.conv_in.weight"
    static let teQ = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"
    static let teFC1 = "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"

    static let shapes: [(String, [Int])] = [
        (ff, [320, 1280]), (toQ, [64, 64]), (toK, [64, 64]), (projIn, [64, 64, 1, 1]), (conv1, [16, 8, 3, 3]),
        (temb, [16, 32]), (convIn, [16, 4, 3, 3]), (teQ, [32, 32]), (teFC1, [64, 32]),
    ]

    /// A fine-tune-like change: a decaying low-rank part plus small noise.
    static func change(_ shape: [Int], seed: UInt64, size: Float) -> Tensor {
        let rows = shape[0], cols = shape.dropFirst().reduce(1, *), r = min(24, rows, cols)
        let a = seededTensor([rows, r], seed: seed), b = seededTensor([r, cols], seed: seed &+ 1)
        let decay = Tensor(shape: [1, r], values: (0..<r).map { Float(pow(0.8, Double($0))) })
        let lowRank = (a * decay).matmul(b)
        return (lowRank + seededTensor([rows, cols], seed: seed &+ 2, scale: 0.02)).scaled(by: Double(size)).reshaped(shape)
    }

    /// base (random) and tuned = base + change on every layer but `toK` (unchanged); the text
    /// encoder's change is `teSize` (max |Δ| ≈ that).
    static func models(teSize: Float) -> (ModelWeights, ModelWeights) {
        var base: [String: Tensor] = [:], tuned: [String: Tensor] = [:]
        for (i, (key, shape)) in shapes.enumerated() {
            let b = seededTensor(shape, seed: UInt64(100 + i), scale: 0.1)
            base[key] = b
            if key == toK { tuned[key] = b; continue }
            let size: Float = key.hasPrefix("text_encoder") ? teSize : 0.05
            tuned[key] = b + change(shape, seed: UInt64(200 + 10 * i), size: size)
        }
        let keys = shapes.map(\.0)
        return (ModelWeights(path: "base", keys: keys, tensors: base, naming: .diffusers, family: .sd1),
                ModelWeights(path: "tuned", keys: keys, tensors: tuned, naming: .diffusers, family: .sd1))
    }

    func extract(_ options: LoRAExtraction.Options, teSize: Float = 0.05) throws -> (String, LoRAExtraction.Result, OpsScratch) {
        let (base, tuned) = Self.models(teSize: teSize)
        let result = try LoRAExtraction.extract(base: base, tuned: tuned, options: options, title: "x")
        let dir = try OpsScratch()
        let out = dir.file("x.safetensors")
        try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out)
        return (out, result, dir)
    }

    static func kohya(_ key: String) -> String {
        let stem = key.dropLast(".weight".count)
        if stem.hasPrefix("unet.") { return "lora_unet_" + stem.dropFirst(5).replacingOccurrences(of: ".", with: "_") }
        return "lora_te_" + stem.dropFirst("text_encoder.".count).replacingOccurrences(of: ".", with: "_")
    }

    @Test func layersRanksAndErrorBound() throws {
        var options = LoRAExtraction.Options(rank: 8)
        options.convRank = 4
        options.clampQuantile = nil
        let (out, result, scratch) = try extract(options)
        defer { withExtendedLifetime(scratch) {} }
        let (base, tuned) = Self.models(teSize: 0.05)
        let file = try SafeTensorsFile(path: out)
        let expectedRanks: [String: Int] = [Self.ff: 8, Self.toQ: 8, Self.projIn: 8, Self.conv1: 4, Self.temb: 8, Self.teQ: 8, Self.teFC1: 8]
        // conv_in is no kohya target; to_k did not change.
        #expect(Set(result.layers.map(\.name)) == Set(expectedRanks.keys.map(Self.kohya)))
        #expect(result.skipped.map(\.name) == [Self.kohya(Self.toK)])
        #expect(result.textEncoderExtracted)
        let deltas = try unitDeltas(out)
        for (key, rank) in expectedRanks {
            let name = Self.kohya(key)
            #expect(try file.tensor(named: "\(name).alpha").floats == [Float(rank)], "\(name)")
            #expect(try file.tensor(named: "\(name).lora_down.weight").shape[0] == rank)
            let shape = base.tensor(key)!.shape
            let delta = (tuned.tensor(key)! - base.tensor(key)!).reshaped([shape[0], shape.dropFirst().reduce(1, *)])
            let got = try #require(deltas[name])
            let error = zip(got.values, delta.doubles).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let optimal = try optimalError(delta, rank: rank)
            #expect(error <= 1.05 * optimal + 1e-5 * delta.frobeniusNorm(), "\(name): \(error) vs optimal \(optimal)")
        }
        #expect(try file.tensor(named: "\(Self.kohya(Self.conv1)).lora_down.weight").shape == [4, 8, 3, 3])
        #expect(try file.tensor(named: "\(Self.kohya(Self.projIn)).lora_up.weight").shape == [64, 8, 1, 1])
        #expect(file.metadata["ss_network_module"] == "networks.lora" && file.metadata["ss_network_dim"] == "8")
        #expect(file.metadata["ss_network_alpha"] == "8.0" && file.metadata["ss_base_model_version"] == "sd_v1")
        #expect(file.metadata["ss_network_args"] == #"{"conv_alpha": "4.0", "conv_dim": "4"}"#)
        #expect(file.metadata["modelspec.architecture"] == "stable-diffusion-v1/lora")
        #expect(file.metadata["sshs_model_hash"]?.count == 64)
    }

    @Test func clampIsKohyas() throws {
        var options = LoRAExtraction.Options(rank: 8)
        options.clampQuantile = nil
        let (free, _, scratchFree) = try extract(options)
        defer { withExtendedLifetime(scratchFree) {} }
        options.clampQuantile = 0.9
        let (clamped, _, scratchClamped) = try extract(options)
        defer { withExtendedLifetime(scratchClamped) {} }
        let f = try SafeTensorsFile(path: free), c = try SafeTensorsFile(path: clamped)
        let name = Self.kohya(Self.ff)
        let up = try f.tensor(named: "\(name).lora_up.weight"), down = try f.tensor(named: "\(name).lora_down.weight")
        // h: the quantile of the signed values of [up; down] (not of their magnitudes).
        var values = up.floats.map(Double.init) + down.floats.map(Double.init)
        values.sort()
        let rank = 0.9 * Double(values.count - 1), lo = Int(rank.rounded(.down))
        let h = values[lo] + (rank - Double(lo)) * (values[min(lo + 1, values.count - 1)] - values[lo])
        #expect(maxAbsDiff(try c.tensor(named: "\(name).lora_up.weight"), up.clamped(min: -h, max: h)) < 1e-6)
        #expect(maxAbsDiff(try c.tensor(named: "\(name).lora_down.weight"), down.clamped(min: -h, max: h)) < 1e-6)
        #expect(up.floats.contains { abs(Double($0)) > h + 1e-6 }, "the clamp must bite for this test to mean anything")
    }

    @Test func unchangedTextEncoderIsSkippedAndReported() throws {
        var options = LoRAExtraction.Options(rank: 4)
        options.convRank = nil
        let (out, result, scratch) = try extract(options, teSize: 0.001)
        defer { withExtendedLifetime(scratch) {} }
        #expect(!result.textEncoderExtracted)
        let te = try #require(result.textEncoderMaxDiff)
        #expect(te > 0 && te <= 0.01)
        #expect(Set(result.skipped.map(\.name)).isSuperset(of: [Self.kohya(Self.teQ), Self.kohya(Self.teFC1)]))
        let names = try SafeTensorsFile(path: out).names
        #expect(!names.contains { $0.hasPrefix("lora_te_") })
        // Without --conv-rank the 3×3 resnet convolutions are not extracted; time_emb_proj neither.
        #expect(!names.contains { $0.contains("resnets") })
        options.minDiff = 0.0001
        #expect(try extract(options, teSize: 0.001).1.textEncoderExtracted)
    }
}
