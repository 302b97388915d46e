import Foundation
import Host
@testable import LoRA
import SafeTensors
import Tensor
import Testing

/// Key grammar, dialects, base-model detection, bundled embeddings and malformed files.
struct LoRAFileTests {
    let up = seededTensor([4, 2], seed: 11)
    let down = seededTensor([2, 6], seed: 12)

    @Test func moduleNamesAreNormalisedToTheLayerPath() {
        let cases: [(String, String, KeyGrammar.Role)] = [
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight",
             "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", .up),
            ("unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight",
             "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", .down),
            ("text_encoder.text_model.encoder.layers.3.self_attn.to_k_lora.down.weight",
             "text_encoder.text_model.encoder.layers.3.self_attn.k_proj", .down),
            ("unet.up_blocks.1.attentions.0.proj_in.lora.down.weight", "unet.up_blocks.1.attentions.0.proj_in", .down),
            ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight",
             "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", .up),
            ("unet.x.to_out.0.lora_A.default.weight", "unet.x.to_out.0", .down),
            ("base_model.model.down_blocks.0.resnets.0.conv1.lora_B.weight", "down_blocks.0.resnets.0.conv1", .up),
            ("base_model.model.text_model.encoder.layers.0.mlp.fc1.lora_A.weight", "text_encoder.text_model.encoder.layers.0.mlp.fc1", .down),
            ("lora_unet_input_blocks_4_1_proj_in.lora_mid.weight", "lora_unet_input_blocks_4_1_proj_in", .mid),
            ("unet.a.lora_magnitude_vector", "unet.a", .magnitude),
            ("lycoris_a_b.hada_w1_a", "lycoris_a_b", .hadaW1A),
            ("lora_te_x.dora_scale", "lora_te_x", .doraScale),
            ("lora_unet_x.a1.weight", "lora_unet_x", .gloraA1),
            ("lora_unet_x.weight", "lora_unet_x", .ia3Weight),
        ]
        for (key, module, role) in cases {
            let parsed = KeyGrammar.parse([key])
            #expect(parsed.modules.first?.name == module, "\(key)")
            #expect(parsed.modules.first?.keys[role] == key, "\(key)")
        }
        #expect(KeyGrammar.parse(["bundle_emb.my.tok.string_to_param.*", "bundle_emb.x.clip_g"]).embeddings.map(\.name) == ["my.tok", "x"])
    }

    @Test func formatDetection() throws {
        func format(_ keys: [String], _ meta: [String: String] = [:]) -> String { FileTraits.detectFormat(keys: keys, metadata: meta) }
        #expect(format(["lora_unet_a.lora_down.weight"]) == "kohya")
        #expect(format(["lora_unet_a.lora_down.weight"], ["ss_network_module": "lycoris.kohya"]) == "lycoris")
        #expect(format(["lora_unet_a.hada_w1_a"]) == "lycoris")
        #expect(format(["lycoris_a.lora_down.weight"]) == "lycoris")
        #expect(format(["unet.a.lora_A.weight"]) == "peft")
        #expect(format(["unet.a.processor.to_q_lora.down.weight"]) == "diffusers")
        #expect(format(["text_encoder.a.q_proj.lora_linear_layer.down.weight"]) == "diffusers")
    }

    func family(_ tensors: [(String, Tensor)], _ meta: [String: String] = [:]) throws -> ModelFamily? {
        try loadAdapter(tensors, metadata: meta).baseModel
    }

    @Test func baseModelDetection() throws {
        let linear = [("lora_unet_a.lora_up.weight", up), ("lora_unet_a.lora_down.weight", down)]
        #expect(try family(linear, ["ss_base_model_version": "sdxl_base_v1-0"]) == .sdxl)
        #expect(try family(linear, ["ss_base_model_version": "sd_v1"]) == .sd1)
        #expect(try family(linear, ["ss_v2": "True"]) == .sd2)
        #expect(try family(linear, ["modelspec.architecture": "stable-diffusion-xl-v1-base/lora"]) == .sdxl)
        #expect(try family(linear, ["modelspec.architecture": "stable-diffusion-v2-768-v/lora"]) == .sd2)
        #expect(try family(linear) == nil)
        #expect(try family([("lora_te2_x.lora_up.weight", up), ("lora_te2_x.lora_down.weight", down)]) == .sdxl)
        // diffusers' kohya export writes lora_te1_ for SD1 as well: not evidence on its own.
        #expect(try family([("lora_te1_x.lora_up.weight", up), ("lora_te1_x.lora_down.weight", down)]) == nil)
        #expect(try family([("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", up),
                            ("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", down)]) == .sdxl)
        // Cross-attention context width: only real widths count (the tiny models' 32 does not).
        for (width, want) in [(768, ModelFamily.sd1), (1024, .sd2), (2048, .sdxl), (32, nil) as (Int, ModelFamily?)] {
            let name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
            let d = seededTensor([2, width], seed: 3)
            #expect(try family([("\(name).lora_up.weight", up), ("\(name).lora_down.weight", d)]) == want, "\(width)")
        }
    }

    @Test func bundledEmbeddings() throws {
        let adapter = try loadAdapter([
            ("lora_unet_a.lora_up.weight", up), ("lora_unet_a.lora_down.weight", down),
            ("bundle_emb.tok.string_to_param.*", seededTensor([3, 768], seed: 1)),
            ("bundle_emb.xl.clip_l", seededTensor([2, 768], seed: 2)),
            ("bundle_emb.xl.clip_g", seededTensor([2, 1280], seed: 3)),
        ])
        #expect(adapter.unclaimedKeys.isEmpty)
        let byName = Dictionary(uniqueKeysWithValues: adapter.embeddings.map { ($0.name, $0) })
        #expect(byName["tok"]?.vectorsByWidth[768]?.shape == [3, 768])
        #expect(Set(byName["xl"]!.vectorsByWidth.keys) == [768, 1280])
        #expect(byName["xl"]?.vectorsByWidth[1280]?.shape == [2, 1280])
        #expect(adapter.modules.count == 1)
    }

    /// A file of embeddings alone is a LoRA-method file too (kohya writes them that way).
    @Test func keysNoMethodKnowsAreReported() throws {
        let adapter = try loadAdapter([("lora_unet_a.lora_up.weight", up), ("lora_unet_a.lora_down.weight", down),
                                       ("lora_unet_a.something_else", up), ("orphan.alpha", Tensor(scalar: 1))])
        #expect(Set(adapter.unclaimedKeys) == ["lora_unet_a.something_else", "orphan.alpha"])
    }

    // MARK: Malformed files: a typed error naming file, module and rule — never a crash.

    func loadError(_ tensors: [(String, Tensor)], _ meta: [String: String] = [:]) -> LoRAFormatError? {
        do {
            _ = try loadAdapter(tensors, metadata: meta, path: "bad.safetensors")
            return nil
        } catch let error as LoRAFormatError {
            return error
        } catch {
            Issue.record("unexpected error type: \(error)")
            return nil
        }
    }

    @Test func missingUpForDown() throws {
        let e = try #require(loadError([("lora_unet_a.lora_down.weight", down), ("lora_unet_a.alpha", Tensor(scalar: 1))]))
        #expect(e.file == "bad.safetensors" && e.module == "lora_unet_a")
        guard case .missingTensor = e.rule else { Issue.record("rule \(e.rule)"); return }
        #expect(e.description.contains("bad.safetensors") && e.description.contains("lora_unet_a") && e.description.contains("up"))
    }

    @Test func rankMismatch() throws {
        let e = try #require(loadError([("lora_unet_a.lora_up.weight", seededTensor([4, 3], seed: 1)),
                                        ("lora_unet_a.lora_down.weight", down)]))
        guard case .rankMismatch = e.rule else { Issue.record("rule \(e.rule)"); return }
        #expect(e.module == "lora_unet_a")
    }

    @Test func nonScalarAlpha() throws {
        let e = try #require(loadError([("lora_unet_a.lora_up.weight", up), ("lora_unet_a.lora_down.weight", down),
                                        ("lora_unet_a.alpha", Tensor(shape: [2], values: [1, 2]))]))
        #expect(e.rule == .notScalar(suffix: "alpha", shape: [2]))
    }

    @Test func otherMalformedModules() throws {
        // LoHa without its second pair's b factor.
        let loha = try #require(loadError([("m.hada_w1_a", up), ("m.hada_w1_b", down), ("m.hada_w2_a", up)]))
        #expect(loha.rule == .missingTensor(suffix: "hada_w2_b", moduleType: "loha"))
        // LoKr w1_a without w1_b.
        let lokr = try #require(loadError([("m.lokr_w1_a", up), ("m.lokr_w2", down)]))
        guard case .missingTensor = lokr.rule else { Issue.record("rule \(lokr.rule)"); return }
        // Tucker mid whose ranks do not join up and down.
        let mid = try #require(loadError([("m.lora_up.weight", seededTensor([4, 2, 1, 1], seed: 1)),
                                          ("m.lora_down.weight", seededTensor([2, 3, 1, 1], seed: 2)),
                                          ("m.lora_mid.weight", seededTensor([3, 2, 3, 3], seed: 3))]))
        guard case .rankMismatch = mid.rule else { Issue.record("rule \(mid.rule)"); return }
        // OFT blocks that are not square.
        let oft = try #require(loadError([("m.oft_blocks", seededTensor([2, 3, 4], seed: 1))]))
        guard case .badShape = oft.rule else { Issue.record("rule \(oft.rule)"); return }
        // Unreadable PEFT metadata.
        let meta = try #require(loadError([("unet.a.lora_A.weight", down), ("unet.a.lora_B.weight", up)],
                                          ["lora_adapter_metadata": "{not json"]))
        guard case .badMetadata = meta.rule else { Issue.record("rule \(meta.rule)"); return }
        // Non-finite alpha.
        let nan = try #require(loadError([("m.lora_up.weight", up), ("m.lora_down.weight", down),
                                          ("m.alpha", Tensor(scalar: .nan))]))
        guard case .badValue = nan.rule else { Issue.record("rule \(nan.rule)"); return }
    }

    /// A delta that cannot fit its target fails the plan's module (host error), not the process.
    @Test func misfitAtMergeIsAnError() throws {
        let adapter = try loadAdapter([("m.lora_up.weight", up), ("m.lora_down.weight", down),
                                       ("m.dora_scale", Tensor(shape: [4, 1], values: [1, 2, 3, 4]))])
        #expect(throws: (any Error).self) {
            _ = try adapter.modules[0].delta(weight: Tensor(zeros: [5, 6]), options: DeltaOptions(strength: 1))
        }
    }
}
