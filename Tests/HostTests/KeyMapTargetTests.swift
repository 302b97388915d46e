import Foundation
import Testing
import Tensor
@testable import Host

/// TargetIndex against the names the peers give each layer (LyCORIS's kohya network and
/// standalone wrapper, PEFT; sgm spellings from diffusers' own key pairing), in both the
/// single-file and the diffusers model of each family.
@Suite("KeyMap: adapter target index")
struct KeyMapTargetTests {
    /// The peer's names for one fixture entry, rebuilt by the rules the generator checked
    /// against the peers' actual output (see tools/gen_model_fixtures.py, build_targets).
    static func names(for entry: PeerTargets.Entry, family: ModelFamily, peer: [String: (String, KeyTransform)])
        -> [(dialect: String, name: String)] {
        let component = String(entry.m.prefix { $0 != "." })
        let path = String(entry.m.dropFirst(component.count + 1))
        let underscored = { (s: String) in String(s.map { $0 == "." ? "_" : $0 }) }
        var out: [(String, String)] = []
        for dialect in entry.n {
            switch dialect {
            case "kohya":
                let prefix: String
                switch component {
                case "unet": prefix = "lora_unet_"
                case "text_encoder": prefix = family == .sdxl ? "lora_te1_" : "lora_te_"
                default: prefix = "lora_te2_"
                }
                out.append((dialect, prefix + underscored(path)))
            case "lycoris": out.append((dialect, "lycoris_" + underscored(path)))
            case "peft": out.append((dialect, entry.m))
            case "peft-flat":
                out.append((dialect, component + "." + path.replacingOccurrences(of: "text_model.", with: "")))
            default: Issue.record("unknown dialect \(dialect)")
            }
        }
        if component == "unet", let (single, _) = peer[entry.m + ".weight"] {
            let sgm = String(single.dropFirst("model.diffusion_model.".count).dropLast(".weight".count))
            out.append(("kohya-sgm", "lora_unet_" + underscored(sgm)))   // sd-scripts SDXL spelling
            out.append(("ldm", "diffusion_model." + sgm))                  // ComfyUI's plain form
            out.append(("peft-bare", path))                                // diffusers LoRA without `unet.`
        }
        return out
    }

    @Test("every peer name resolves to the right tensor, rows and layer kind", arguments: ModelFixtures.families)
    func peerNames(fixture: (name: String, family: ModelFamily)) throws {
        let targets = try PeerTargets.load(fixture.name)
        let keymap = try PeerKeyMap.load(fixture.name)
        var peer: [String: (String, KeyTransform)] = [:]
        for (single, diffusers, transform) in keymap.triples { peer[diffusers] = (single, transform) }

        for (modelName, naming) in [(fixture.name, ModelNaming.diffusers), ("\(fixture.name).safetensors", .singleFile)] {
            let model = try ModelFixtures.model(modelName)
            let index = model.targetIndex
            #expect(index.conflictingNames.isEmpty, "\(index.conflictingNames.prefix(5))")
            var failures: [String] = []
            var checked = 0
            var dialects = Set<String>()
            for entry in targets.targets {
                let expected: Target?
                let part: ModelPart = entry.m.hasPrefix("unet.") ? .unet
                    : entry.m.hasPrefix("text_encoder_2.") ? .textEncoder(1) : .textEncoder(0)
                if naming == .diffusers {
                    let bias = model.tensor(entry.m + ".bias") != nil ? entry.m + ".bias" : nil
                    expected = Target(weightKey: entry.m + ".weight", biasKey: bias, rows: nil, part: part,
                                      layer: PeerTargets.layer(entry.k))
                } else if case .some(.none) = entry.ks {
                    expected = nil   // stored transposed in the single file: no target
                } else {
                    let (single, transform) = try #require(peer[entry.m + ".weight"])
                    var rows: Range<Int>?
                    if case let .fusedRows(i, count) = transform {
                        let blocks = try #require(model.tensor(single)).shape[0] / count
                        rows = i * blocks..<(i + 1) * blocks
                    }
                    let bias = peer[entry.m + ".bias"]?.0
                    let layer = PeerTargets.layer((entry.ks ?? nil) ?? entry.k)
                    expected = Target(weightKey: single, biasKey: bias, rows: rows, part: part, layer: layer)
                }
                for (dialect, name) in Self.names(for: entry, family: fixture.family, peer: peer) {
                    dialects.insert(dialect)
                    checked += 1
                    let found = index.resolve(name)
                    if found != expected {
                        failures.append("\(modelName) \(dialect) \(name): \(String(describing: found)) ≠ \(String(describing: expected))")
                    }
                }
            }
            #expect(failures.isEmpty, "\(failures.count) failures: \(failures.prefix(4))")
            #expect(dialects.isSuperset(of: ["kohya", "kohya-sgm", "lycoris", "peft", "ldm", "peft-bare"]), "\(dialects)")
            #expect(checked > 1000, "\(checked) names checked")
        }
    }

    @Test("OpenCLIP q/k/v resolve to thirds of the fused in_proj (SD2 and SDXL's second encoder)")
    func openCLIPRows() throws {
        let sd2 = try ModelFixtures.model("sd2.safetensors").targetIndex
        let k = try #require(sd2.resolve("lora_te_text_model_encoder_layers_1_self_attn_k_proj"))
        #expect(k == Target(weightKey: "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight",
                            biasKey: "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias",
                            rows: 32..<64, part: .textEncoder(0), layer: .linear))
        #expect(sd2.resolve("text_encoder.text_model.encoder.layers.1.self_attn.v_proj")?.rows == 64..<96)
        #expect(sd2.resolve("lora_te_text_model_encoder_layers_0_mlp_fc1")?.weightKey
                == "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight")
        #expect(sd2.resolve("lora_te_text_model_encoder_layers_0_self_attn_out_proj")?.weightKey
                == "cond_stage_model.model.transformer.resblocks.0.attn.out_proj.weight")
        let sdxl = try ModelFixtures.model("sdxl.safetensors").targetIndex
        let q = try #require(sdxl.resolve("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"))
        #expect(q.weightKey == "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
        #expect(q.rows == 0..<16 && q.part == .textEncoder(1))
        #expect(sdxl.resolve("lora_te1_text_model_encoder_layers_0_self_attn_q_proj")?.rows == nil)
    }

    @Test("layer kinds follow the model's actual tensors")
    func layerKinds() throws {
        let sd1 = try ModelFixtures.model("sd1.safetensors").targetIndex
        let sd1Folder = try ModelFixtures.model("sd1").targetIndex
        let sd2 = try ModelFixtures.model("sd2.safetensors").targetIndex
        // proj_in: 1×1 conv in SD1, linear in SD2 (use_linear_projection).
        #expect(sd1.resolve("lora_unet_down_blocks_0_attentions_0_proj_in")?.layer == .conv2d(stride: 1, padding: 0))
        #expect(sd2.resolve("lora_unet_down_blocks_0_attentions_0_proj_in")?.layer == .linear)
        // Downsampler stride 2 pad 1, resnet 3×3 pad 1, shortcut 1×1 pad 0, conv_in pad 1.
        #expect(sd1.resolve("lora_unet_input_blocks_3_0_op")?.layer == .conv2d(stride: 2, padding: 1))
        #expect(sd1.resolve("lora_unet_down_blocks_1_resnets_0_conv2")?.layer == .conv2d(stride: 1, padding: 1))
        #expect(sd1.resolve("lora_unet_up_blocks_0_resnets_0_conv_shortcut")?.layer == .conv2d(stride: 1, padding: 0))
        #expect(sd1.resolve("lora_unet_conv_in")?.weightKey == "model.diffusion_model.input_blocks.0.0.weight")
        #expect(sd1.resolve("lora_unet_conv_in")?.layer == .conv2d(stride: 1, padding: 1))
        // Norms and embeddings.
        #expect(sd1.resolve("lycoris_down_blocks_0_attentions_0_norm")?.layer == .norm)
        #expect(sd1.resolve("lora_te_text_model_embeddings_token_embedding")?.layer == .embedding)
        let position = try #require(sd2.resolve("text_encoder.text_model.embeddings.position_embedding"))
        #expect(position.weightKey == "cond_stage_model.model.positional_embedding" && position.layer == .embedding)
        // VAE: ldm 1×1 conv attention vs diffusers linear; encoder downsample stride 2, pad 0.
        let q = try #require(sd1.resolve("vae.encoder.mid_block.attentions.0.to_q"))
        #expect(q == Target(weightKey: "first_stage_model.encoder.mid.attn_1.q.weight",
                            biasKey: "first_stage_model.encoder.mid.attn_1.q.bias", part: .vae,
                            layer: .conv2d(stride: 1, padding: 0)))
        #expect(sd1.resolve("first_stage_model.encoder.mid.attn_1.q") == q)
        #expect(sd1Folder.resolve("vae.encoder.mid_block.attentions.0.to_q")?.layer == .linear)
        #expect(sd1Folder.resolve("first_stage_model.encoder.mid.attn_1.q")?.weightKey
                == "vae.encoder.mid_block.attentions.0.to_q.weight")
        #expect(sd1.resolve("vae.encoder.down_blocks.0.downsamplers.0.conv")?.layer == .conv2d(stride: 2, padding: 0))
        #expect(sd1.resolve("vae.decoder.up_blocks.0.upsamplers.0.conv")?.weightKey
                == "first_stage_model.decoder.up.3.upsample.conv.weight")
    }

    @Test("both UNet spellings for every family, and the inpainting UNet")
    func unetSpellings() throws {
        // SDXL named the SD1/SD2 way, SD1 named the sgm way.
        let sdxl = try ModelFixtures.model("sdxl").targetIndex
        #expect(sdxl.resolve("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k")?.weightKey
                == "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight")
        #expect(sdxl.resolve("lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj")?.weightKey
                == "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight")
        #expect(sdxl.resolve("lora_unet_output_blocks_2_2_conv")?.weightKey == "unet.up_blocks.0.upsamplers.0.conv.weight")
        #expect(sdxl.resolve("lora_unet_label_emb_0_0")?.weightKey == "unet.add_embedding.linear_1.weight")
        let inpaint = try ModelFixtures.model("sd1_inpaint.safetensors").targetIndex
        let conv = try #require(inpaint.resolve("lora_unet_conv_in"))
        #expect(conv.weightKey == "model.diffusion_model.input_blocks.0.0.weight")
        #expect(inpaint.resolve("lora_unet_output_blocks_2_1_conv")?.weightKey
                == "model.diffusion_model.output_blocks.2.1.conv.weight")
        #expect(inpaint.resolve("lora_unet_up_blocks_1_upsamplers_0_conv")?.weightKey
                == "model.diffusion_model.output_blocks.5.2.conv.weight")
        #expect(inpaint.resolve("lora_te_text_model_encoder_layers_0_mlp_fc1") == nil, "UNet-only file")
        #expect(inpaint.allTargets.allSatisfy { $0.part == .unet })
    }

    @Test("unknown names resolve to nil")
    func unknownNames() throws {
        let sd1 = try ModelFixtures.model("sd1.safetensors").targetIndex
        let sdxl = try ModelFixtures.model("sdxl.safetensors").targetIndex
        for name in ["", "lora_unet_down_blocks_9_attentions_0_proj_in", "lora_unet_down_blocks_0_attentions_0_proj_on",
                     "lora_te2_text_model_encoder_layers_0_mlp_fc1", "lora_te_text_model_encoder_layers_5_mlp_fc1",
                     "unet.down_blocks.0.attentions.0.proj_in.weight", "lora_unet_down_blocks_0_attentions_0_proj_in_",
                     "text_encoder_2.text_model.encoder.layers.0.mlp.fc1", "lycoris_input_blocks_0_0_x"] {
            #expect(sd1.resolve(name) == nil, "\(name)")
        }
        // Two encoders: bare lycoris and `lora_te_` names do not say which one.
        #expect(sdxl.resolve("lora_te_text_model_encoder_layers_0_mlp_fc1") == nil)
        #expect(sdxl.resolve("lycoris_text_model_encoder_layers_0_mlp_fc1") == nil)
        #expect(sdxl.resolve("lycoris_te1_text_model_encoder_layers_0_mlp_fc1")?.part == .textEncoder(0))
        // The single file stores text_projection transposed: not a target there, one in diffusers.
        #expect(sdxl.resolve("text_encoder_2.text_projection") == nil)
        #expect(try ModelFixtures.model("sdxl").targetIndex.resolve("text_encoder_2.text_projection")?.layer == .linear)
        // PEFT wrapper prefix.
        #expect(sd1.resolve("base_model.model.down_blocks.0.attentions.0.proj_in")?.weightKey
                == "model.diffusion_model.input_blocks.1.1.proj_in.weight")
    }

    @Test("counts: one target per weight (three per fused in_proj), same in both namings", arguments: ModelFixtures.families)
    func counts(fixture: (name: String, family: ModelFamily)) throws {
        let single = try ModelFixtures.model("\(fixture.name).safetensors").targetIndex
        let folder = try ModelFixtures.model(fixture.name)
        let weights = folder.keys.filter { $0.hasSuffix(".weight") && folder.tensor($0)!.rank >= 1 }
        #expect(folder.targetIndex.count == weights.count)
        let transposed = fixture.family == .sdxl ? 1 : 0   // text_projection
        #expect(single.count == weights.count - transposed)
        #expect(Set(single.allTargets).count == single.count)
        #expect(single.nameCount > 5 * single.count)
    }

    @Test("a diffusers text encoder saved without `text_model.` resolves the classic names")
    func flattenedTextEncoder() throws {
        let folder = try ModelFixtures.model("sd1")
        var keys: [String] = [], tensors: [String: Tensor] = [:]
        for key in folder.keys {
            let flat = key.replacingOccurrences(of: "text_encoder.text_model.", with: "text_encoder.")
            keys.append(flat)
            tensors[flat] = folder.tensor(key)
        }
        let model = ModelWeights(path: "flat", keys: keys, tensors: tensors, naming: .diffusers, family: .sd1)
        let index = model.targetIndex
        for name in ["lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_te_encoder_layers_0_self_attn_q_proj",
                     "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
                     "text_encoder.encoder.layers.0.self_attn.q_proj",
                     "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj"] {
            #expect(index.resolve(name)?.weightKey == "text_encoder.encoder.layers.0.self_attn.q_proj.weight", "\(name)")
        }
        #expect(index.resolve("lora_te_text_model_encoder_layers_1_mlp_fc2")?.biasKey
                == "text_encoder.encoder.layers.1.mlp.fc2.bias")
    }
}

@Suite("KeyMap: target index edge cases")
struct KeyMapTargetEdgeTests {
    @Test("a UNet layer no rule knows still answers to its sgm names and its key")
    func unknownUNetLayer() throws {
        let base = try ModelFixtures.model("sd1_inpaint.safetensors")
        var keys = base.keys, tensors: [String: Tensor] = [:]
        for key in keys { tensors[key] = base.tensor(key) }
        let extra = "model.diffusion_model.extra_blocks.0.proj.weight"
        keys.append(extra)
        tensors[extra] = Tensor(zeros: [4, 8])
        let model = ModelWeights(path: "extra", keys: keys, tensors: tensors, naming: .singleFile, family: .sd1)
        let index = model.targetIndex
        let expected = Target(weightKey: extra, biasKey: nil, part: .unet, layer: .linear)
        for name in ["lora_unet_extra_blocks_0_proj", "lycoris_extra_blocks_0_proj", "diffusion_model.extra_blocks.0.proj",
                     "model.diffusion_model.extra_blocks.0.proj"] {
            #expect(index.resolve(name) == expected, "\(name)")
        }
        #expect(index.count == base.targetIndex.count + 1)
        #expect(index.conflictingNames.isEmpty)
    }
}
