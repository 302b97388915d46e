import Foundation
import Host
import SafeTensors
import Testing
import Tensor
@testable import Runtime

/// `Fixtures/textencoder/encoder_ids.json` (tools/gen_text_encoder_fixtures.py): token ids and
/// what transformers' CLIPTextModel(WithProjection) computes for the tiny fixture encoders.
private struct EncoderIDFixture: Decodable {
    struct Encoder: Decodable {
        let name: String
        let family: String
        let folder: String
        let width: Int
        let layers: Int
        let heads: Int
        let activation: String
        let eos_positions: [Int]
        let projection: Bool
        /// [sequence, position, tensor name].
        let ti: [[TIEntry]]
        let kept: [String]
        let ti_output: String
    }
    enum TIEntry: Decodable {
        case int(Int), text(String)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .text(try c.decode(String.self)) }
        }
        var int: Int { if case .int(let i) = self { return i } else { return -1 } }
        var text: String { if case .text(let s) = self { return s } else { return "" } }
    }
    let ids: [[Int32]]
    let encoders: [Encoder]
}

enum TextEncoderFixtures {
    /// Decoded `Fixtures/textencoder/<name>` JSON.
    static func json<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let data = try Data(contentsOf: base.appendingPathComponent("textencoder/\(name)"))
        return try JSONDecoder().decode(T.self, from: data)
    }

    /// The layer each stored reference output is.
    static func layer(_ key: String) -> TextEncoderLayer {
        switch key {
        case "last", "ti_last": return .last
        case "penultimate", "ti_penultimate": return .penultimate
        case "penultimate_norm": return .penultimateNormalized
        default: fatalError("unknown reference \(key)")
        }
    }
}

@Suite("Text encoder vs transformers' CLIPTextModel")
struct TextEncoderTests {
    /// Every kept output of every tiny encoder, loaded from the diffusers folder and from the
    /// single file (SD2/SDXL-bigG: open_clip keys with fused in_proj), within 1e-4 relative.
    @Test("hidden states, pooled and projected outputs match transformers (diffusers folders and single files)",
          arguments: ["diffusers", "single"])
    func conformance(loading: String) throws {
        let fixture = try TextEncoderFixtures.json("encoder_ids.json", as: EncoderIDFixture.self)
        let expected = try NetworkFixtures.tensors("textencoder/encoder_ids.safetensors")
        var models: [String: ModelWeights] = [:]
        for spec in fixture.encoders {
            let name = loading == "diffusers" ? spec.family : spec.family + ".safetensors"
            let model = try models[name] ?? NetworkFixtures.model(name)
            models[name] = model
            let part = ModelPart.textEncoder(spec.folder == "text_encoder" ? 0 : 1)
            // A single file carries no config: the head count must be given; the activation
            // comes from the family's default (quick GELU for CLIP-L, GELU for OpenCLIP).
            let encoder = try TextEncoder(weights: model, part: part, headCount: loading == "single" ? spec.heads : nil)
            #expect(encoder.configuration.width == spec.width && encoder.configuration.layerCount == spec.layers)
            #expect(encoder.configuration.headCount == spec.heads)
            #expect(encoder.configuration.activation == (spec.activation == "gelu" ? .gelu : .quickGELU),
                    "\(spec.name) \(loading): activation")
            #expect((encoder.configuration.projectionWidth != nil) == spec.projection)

            for key in spec.kept {
                let output = try encoder.encode(tokens: fixture.ids, layer: TextEncoderFixtures.layer(key))
                let want = try #require(expected["\(spec.name).\(key)"])
                let error = NetworkFixtures.relativeError(output.hidden, want)
                #expect(error < 1e-4, "\(spec.name) \(loading) \(key): relative error \(error)")
            }
            let pooled = try encoder.encode(tokens: fixture.ids, layer: .penultimate, pooledPositions: spec.eos_positions)
            let wantPooled = try #require(expected["\(spec.name).pooled"])
            let pooledError = NetworkFixtures.relativeError(try #require(pooled.pooled), wantPooled)
            #expect(pooledError < 1e-4, "\(spec.name) \(loading) pooled: \(pooledError)")
            if spec.projection {
                let projected = try #require(pooled.projected, "\(spec.name): no projection output")
                let error = NetworkFixtures.relativeError(projected, try #require(expected["\(spec.name).text_embeds"]))
                #expect(error < 1e-4, "\(spec.name) \(loading) text_embeds: \(error)")
            } else {
                #expect(pooled.projected == nil)
            }

            // Textual inversion: vectors over the token embeddings (the last one cut at the end).
            let injections = try spec.ti.map { entry in
                EmbeddingInjection(sequence: entry[0].int, position: entry[1].int,
                                   vectors: try #require(expected["\(spec.name).\(entry[2].text)"]))
            }
            let ti = try encoder.encode(tokens: fixture.ids, injections: injections,
                                        layer: TextEncoderFixtures.layer(spec.ti_output))
            let error = NetworkFixtures.relativeError(ti.hidden, try #require(expected["\(spec.name).\(spec.ti_output)"]))
            #expect(error < 1e-4, "\(spec.name) \(loading) textual inversion: \(error)")
        }
    }

    @Test("clip skip n reads hidden_states[-n] through the final norm; the embeddings are hidden_states[-(L+1)]")
    func clipSkipLayers() throws {
        let model = try NetworkFixtures.model("sd1")
        let encoder = try TextEncoder(weights: model, part: .textEncoder(0))
        let ids: [[Int32]] = [[0, 5, 9, 1] + [Int32](repeating: 1, count: 4)]
        let skip2 = try encoder.encode(tokens: ids, layer: .clipSkip(2)).hidden
        let penultimateNorm = try encoder.encode(tokens: ids, layer: .penultimateNormalized).hidden
        #expect(skip2.floats == penultimateNorm.floats)
        let last = try encoder.encode(tokens: ids, layer: .clipSkip(1)).hidden
        #expect(NetworkFixtures.relativeError(last, skip2) > 1e-2, "different layers must differ")
        // hidden_states[-(L+1)] = token + position embeddings (checked against the tables).
        let embeddings = try encoder.encode(tokens: ids, layer: TextEncoderLayer(fromEnd: 3, appliesFinalNorm: false)).hidden
        let tokenTable = try #require(model.tensor("text_encoder.text_model.embeddings.token_embedding.weight")).floats
        let positionTable = try #require(model.tensor("text_encoder.text_model.embeddings.position_embedding.weight")).floats
        var want = [Float]()
        for (p, id) in ids[0].enumerated() {
            for j in 0..<32 { want.append(tokenTable[Int(id) * 32 + j] + positionTable[p * 32 + j]) }
        }
        #expect(embeddings.floats == want)
        #expect(throws: TextEncoderError.self) { try encoder.encode(tokens: ids, layer: .clipSkip(4)) }
    }

    @Test("inputs that do not fit are errors naming the rule")
    func badInputs() throws {
        let encoder = try TextEncoder(weights: NetworkFixtures.model("sd1"), part: .textEncoder(0))
        #expect(throws: TextEncoderError.self) { try encoder.encode(tokens: [[0, 64]]) }   // vocabulary is 64
        #expect(throws: TextEncoderError.self) { try encoder.encode(tokens: [[0, 1], [0]]) }
        #expect(throws: TextEncoderError.self) { try encoder.encode(tokens: [[Int32](repeating: 1, count: 78)]) }
        #expect(throws: TextEncoderError.self) {
            try encoder.encode(tokens: [[0, 1]], injections: [EmbeddingInjection(sequence: 0, position: 1, vectors: Tensor(zeros: [1, 16]))])
        }
        #expect(throws: (any Error).self) { try TextEncoder(weights: NetworkFixtures.model("sd2"), part: .textEncoder(1)) }
    }

    @Test("pooled positions: first end-of-text token, else the largest id (argmax)")
    func pooledPositions() {
        #expect(TextEncoder.pooledPositions([[49406, 320, 49407, 49407], [49406, 320, 49407, 0, 0], [49406, 5, 7]]) == [2, 2, 0])
        #expect(TextEncoder.pooledPositions([[0, 5, 1, 1]], endOfText: 1) == [2])
    }
}

/// A weight-independent test module: ΔW = strength · `delta` (dense path in bypass mode).
final class FixedDeltaModule: AdapterModule {
    let name: String
    let delta: Tensor
    var moduleType: String { "fixed" }
    init(name: String, delta: Tensor) {
        self.name = name
        self.delta = delta
    }
    func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        ModuleDelta(weight: delta.scaled(by: Double(options.strength)))
    }
}

@Suite("Text encoder with adapters")
struct TextEncoderAdapterTests {
    /// Bypass terms (per q/k/v row block of OpenCLIP's fused in_proj, and plain layers) give
    /// what merging the same deltas into the weights gives.
    @Test("bypass equals merged, on fused OpenCLIP q/k/v rows and plain layers", arguments: ["sd2.safetensors", "sd1", "sdxl.safetensors"])
    func bypassEqualsMerged(modelName: String) throws {
        let model = NetworkFixtures.widened(try NetworkFixtures.model(modelName))
        let part = ModelPart.textEncoder(modelName.hasPrefix("sdxl") ? 1 : 0)
        let prefix = modelName.hasPrefix("sdxl") ? "lora_te2_" : "lora_te_"
        let width = modelName.hasPrefix("sdxl") ? 16 : 32
        let layers: [(String, [Int])] = [("text_model_encoder_layers_0_self_attn_k_proj", [width, width]),
                                         ("text_model_encoder_layers_1_self_attn_q_proj", [width, width]),
                                         ("text_model_encoder_layers_1_self_attn_v_proj", [width, width]),
                                         ("text_model_encoder_layers_0_mlp_fc1", [2 * width, width])]
        let modules = layers.enumerated().map { i, layer in
            FixedDeltaModule(name: prefix + layer.0, delta: NetworkFixtures.random(layer.1, seed: UInt64(10 + i), scale: 0.2))
        }
        let adapter = Adapter(path: "<fixed>", methodIDs: ["fixed"], format: "test", baseModel: nil, metadata: [:],
                              modules: modules)
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.7)])
        #expect(plan.report.applied == modules.count, "\(plan.report.skipped)")

        let encoder = try TextEncoder(weights: model, part: part, headCount: 4)
        let ids: [[Int32]] = [[0, 5, 17, 33, 2, 40, 1, 1, 1], [0, 40, 2, 9, 63, 1, 0, 0, 0]]
        let base = try encoder.encode(tokens: ids, layer: .last).hidden
        let bypass = try encoder.encode(tokens: ids, layer: .last, hooks: GenerationHooks(bypass: BypassPatch(plan: plan))).hidden
        try PatchEngine(model: model).apply(plan)
        let merged = try encoder.encode(tokens: ids, layer: .last).hidden   // weights are read at each call
        #expect(NetworkFixtures.relativeError(bypass, merged) < 1e-5)
        #expect(NetworkFixtures.relativeError(base, merged) > 1e-2, "the adapter must change the output")
    }
}
