import Foundation
import Testing
import Tensor
@testable import Host

/// Single-file ↔ diffusers key maps against diffusers' own conversion
/// (diffusers.loaders.single_file_utils, recorded in Fixtures/models/*.keymap.json).
@Suite("KeyMap: checkpoint key conversion")
struct KeyMapTests {
    @Test("every single-file key maps to exactly the peer's diffusers keys", arguments: ModelFixtures.families)
    func singleFileToDiffusers(fixture: (name: String, family: ModelFamily)) throws {
        let peer = try PeerKeyMap.load(fixture.name)
        let model = try ModelFixtures.model("\(fixture.name).safetensors")
        let map = CheckpointKeyMap(family: fixture.family,
                                   layout: ModelLayout(keys: model.keys, naming: .singleFile, family: fixture.family))
        var expected: [String: Set<KeyConversion>] = [:]
        for (single, diffusers, transform) in peer.triples {
            expected[single, default: []].insert(KeyConversion(key: diffusers, transform: transform))
        }
        #expect(Set(peer.unmappedSingleFile).isDisjoint(with: expected.keys))
        #expect(Set(expected.keys).union(peer.unmappedSingleFile) == Set(model.keys), "fixture covers the file")
        var mismatches: [String] = []
        for key in model.keys {
            let ours = Set(map.diffusersKeys(forSingleFile: key))
            if ours != expected[key, default: []] { mismatches.append("\(key): \(ours) vs \(expected[key, default: []])") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) keys differ: \(mismatches.prefix(5))")
        #expect(peer.pairs.count > 600)
    }

    @Test("every diffusers key maps back to the peer's single-file key", arguments: ModelFixtures.families)
    func diffusersToSingleFile(fixture: (name: String, family: ModelFamily)) throws {
        let peer = try PeerKeyMap.load(fixture.name)
        let model = try ModelFixtures.model(fixture.name)
        #expect(Set(model.keys) == Set(peer.triples.map(\.diffusers)), "folder keys are the peer's diffusers keys")
        let map = CheckpointKeyMap(family: fixture.family,
                                   layout: ModelLayout(keys: model.keys, naming: .diffusers, family: fixture.family))
        var mismatches: [String] = []
        for (single, diffusers, transform) in peer.triples {
            let ours = map.singleFileConversion(forDiffusers: diffusers)
            if ours != KeyConversion(key: single, transform: transform) {
                mismatches.append("\(diffusers): \(String(describing: ours)) vs \(single) \(transform)")
            }
            // The static, released-layout API agrees on these real-structure models.
            if CheckpointKeyMap.singleFileKey(forDiffusers: diffusers, family: fixture.family) != single {
                mismatches.append("static \(diffusers)")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) keys differ: \(mismatches.prefix(5))")
    }

    @Test("round trip: single → diffusers → single and diffusers → single → diffusers", arguments: ModelFixtures.families)
    func roundTrip(fixture: (name: String, family: ModelFamily)) throws {
        let single = try ModelFixtures.model("\(fixture.name).safetensors")
        let folder = try ModelFixtures.model(fixture.name)
        let map = CheckpointKeyMap(family: fixture.family)
        var failures: [String] = []
        var converted = 0
        for key in single.keys {
            for conversion in map.diffusersKeys(forSingleFile: key) {
                converted += 1
                if map.singleFileConversion(forDiffusers: conversion.key) != KeyConversion(key: key, transform: conversion.transform) {
                    failures.append(key)
                }
            }
        }
        for key in folder.keys {
            guard let back = map.singleFileKey(forDiffusers: key) else { failures.append("no single key for \(key)"); continue }
            if !map.diffusersKeys(forSingleFile: back).contains(where: { $0.key == key }) { failures.append(key) }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        #expect(converted == folder.keys.count, "the single file converts to exactly the folder's key count")
    }

    @Test("layouts derived from keys match the peer models' configs", arguments: ModelFixtures.families)
    func layouts(fixture: (name: String, family: ModelFamily)) throws {
        let peer = try PeerKeyMap.load(fixture.name)
        for name in [fixture.name, "\(fixture.name).safetensors"] {
            let model = try ModelFixtures.model(name)
            let layout = ModelLayout(keys: model.keys, naming: model.naming, family: model.family)
            #expect(layout.unet.levels == peer.layout.unetLevels, "\(name)")
            #expect(layout.unet.layersPerBlock == peer.layout.layersPerBlock, "\(name)")
            #expect(layout.unet == UNetLayout.standard(for: fixture.family), "\(name): real block structure")
            if let vae = peer.layout.vaeLevels { #expect(layout.vae.levels == vae, "\(name)") }
        }
    }

    @Test("the inpainting UNet's keys map like SD1's (the peer's pairs are identical)")
    func inpaintingKeys() throws {
        let peer = try PeerKeyMap.load("sd1")
        let model = try ModelFixtures.model("sd1_inpaint.safetensors")
        let unetPairs = peer.triples.filter { $0.diffusers.hasPrefix("unet.") }
        #expect(Set(model.keys) == Set(unetPairs.map(\.single)))
        let map = CheckpointKeyMap(family: .sd1)
        for (single, diffusers, _) in unetPairs {
            #expect(map.diffusersKey(forSingleFile: single) == diffusers)
        }
    }

    @Test("keys outside every component, or unknown inside one, have no counterpart")
    func unknownKeys() {
        let map = CheckpointKeyMap(family: .sdxl)
        for key in ["alphas_cumprod", "model_ema.decay", "conditioner.embedders.1.model.logit_scale",
                    "model.diffusion_model.input_blocks.1.0.in_layers.1.weight",   // SiLU: no such parameter
                    "model.diffusion_model.input_blocks.1.1.proj_in.weight",       // SDXL level 0 has no transformer
                    "first_stage_model.encoder.mid.attn_1.qq.weight", "unet.down_blocks.7.resnets.0.conv1.weight",
                    "unet.up_blocks.2.attentions.0.proj_in.weight"] {
            #expect(map.diffusersKeys(forSingleFile: key).isEmpty, "\(key)")
            #expect(map.singleFileConversion(forDiffusers: key) == nil, "\(key)")
        }
        // SD2's diffusers encoder has no projection: the single file's is dropped …
        #expect(CheckpointKeyMap.diffusersKeys(forSingleFile: "cond_stage_model.model.text_projection", family: .sd2).isEmpty)
        // … SDXL's bigG keeps it, transposed.
        #expect(CheckpointKeyMap.diffusersKeys(forSingleFile: "conditioner.embedders.1.model.text_projection", family: .sdxl)
                == [KeyConversion(key: "text_encoder_2.text_projection.weight", transform: .transpose)])
    }

    @Test("text encoders saved without `text_model.` (transformers ≥ 5.6) map to the same single-file keys")
    func flattenedTextEncoderKeys() {
        let sd1 = CheckpointKeyMap(family: .sd1), sdxl = CheckpointKeyMap(family: .sdxl)
        #expect(sd1.singleFileKey(forDiffusers: "text_encoder.encoder.layers.1.mlp.fc2.weight")
                == "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight")
        #expect(sdxl.singleFileConversion(forDiffusers: "text_encoder_2.encoder.layers.0.self_attn.v_proj.bias")
                == KeyConversion(key: "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias",
                                 transform: .fusedRows(index: 2, count: 3)))
        #expect(sdxl.singleFileKey(forDiffusers: "text_encoder_2.embeddings.position_embedding.weight")
                == "conditioner.embedders.1.model.positional_embedding")
        // Old single files without the level map onto the canonical diffusers key.
        #expect(sd1.diffusersKey(forSingleFile: "cond_stage_model.transformer.encoder.layers.0.layer_norm1.bias")
                == "text_encoder.text_model.encoder.layers.0.layer_norm1.bias")
    }

    @Test("block structure is derived from keys, not assumed: one resnet per level")
    func derivedLayout() {
        // A 2-level UNet with layers_per_block 1: input_blocks 1 (resnet+attn), 2 (op), 3 (resnet+attn).
        let sgm = ["input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.1.proj_in.weight",
                   "input_blocks.2.0.op.weight", "input_blocks.3.0.in_layers.2.weight", "input_blocks.3.1.proj_in.weight",
                   "output_blocks.0.0.in_layers.2.weight", "output_blocks.1.0.in_layers.2.weight",
                   "output_blocks.1.1.conv.weight", "output_blocks.2.0.in_layers.2.weight",
                   "output_blocks.2.1.proj_in.weight", "output_blocks.3.0.in_layers.2.weight",
                   "output_blocks.3.1.proj_in.weight"]
        let layout = UNetLayout(unetKeys: sgm, naming: .singleFile)
        #expect(layout == UNetLayout(levels: 2, layersPerBlock: 1, downAttentionLevels: [0, 1], upAttentionLevels: [1]))
        let map = CheckpointKeyMap(family: .sd1, layout: ModelLayout(unet: layout!, vae: .standard))
        let expected = [
            "input_blocks.2.0.op.weight": "unet.down_blocks.0.downsamplers.0.conv.weight",
            "input_blocks.3.1.proj_in.weight": "unet.down_blocks.1.attentions.0.proj_in.weight",
            "output_blocks.1.1.conv.weight": "unet.up_blocks.0.upsamplers.0.conv.weight",
            "output_blocks.3.0.in_layers.2.weight": "unet.up_blocks.1.resnets.1.conv1.weight",
        ]
        for (single, diffusers) in expected {
            #expect(map.diffusersKey(forSingleFile: "model.diffusion_model." + single) == diffusers)
            #expect(map.singleFileKey(forDiffusers: diffusers) == "model.diffusion_model." + single)
        }
        let diffusersLayout = UNetLayout(unetKeys: expected.values.map { String($0.dropFirst("unet.".count)) }
            + ["down_blocks.0.resnets.0.conv1.weight", "down_blocks.0.attentions.0.proj_in.weight",
               "up_blocks.1.attentions.0.proj_in.weight"], naming: .diffusers)
        #expect(diffusersLayout == layout)
    }
}

/// Tensor-level conversion: the single file converted to diffusers holds exactly the diffusers
/// folder's tensors (bit for bit), and back.
@Suite("KeyMap: checkpoint tensor conversion")
struct KeyMapConversionTests {
    @Test("single file → diffusers equals the diffusers folder", arguments: ModelFixtures.families)
    func toDiffusers(fixture: (name: String, family: ModelFamily)) throws {
        let single = try ModelFixtures.model("\(fixture.name).safetensors")
        let folder = try ModelFixtures.model(fixture.name)
        let result = try CheckpointConversion.convert(single, to: .diffusers)
        let peer = try PeerKeyMap.load(fixture.name)
        #expect(Set(result.droppedKeys) == Set(peer.unmappedSingleFile))
        #expect(Set(result.model.keys) == Set(folder.keys))
        var differing: [String] = []
        for key in folder.keys {
            let ours = try #require(result.model.tensor(key)), theirs = try #require(folder.tensor(key))
            if ours.shape != theirs.shape || ours.dtype != theirs.dtype || ours.rowMajorBytes != theirs.rowMajorBytes {
                differing.append(key)
            }
        }
        #expect(differing.isEmpty, "\(differing.prefix(5))")
    }

    @Test("diffusers folder → single file equals the single file (minus keys diffusers lacks)", arguments: ModelFixtures.families)
    func toSingleFile(fixture: (name: String, family: ModelFamily)) throws {
        let single = try ModelFixtures.model("\(fixture.name).safetensors")
        let folder = try ModelFixtures.model(fixture.name)
        let result = try CheckpointConversion.convert(folder, to: .singleFile)
        #expect(result.droppedKeys.isEmpty)
        let peer = try PeerKeyMap.load(fixture.name)
        #expect(Set(result.model.keys) == Set(single.keys).subtracting(peer.unmappedSingleFile))
        var differing: [String] = []
        for key in result.model.keys {
            let ours = try #require(result.model.tensor(key)), theirs = try #require(single.tensor(key))
            if ours.shape != theirs.shape || ours.dtype != theirs.dtype || ours.rowMajorBytes != theirs.rowMajorBytes {
                differing.append(key)
            }
        }
        #expect(differing.isEmpty, "\(differing.prefix(5))")
    }

    @Test("OpenCLIP fused q/k/v: zero-copy row views of the mapped file; fused again bit for bit")
    func fusedRows() throws {
        let model = try ModelFixtures.model("sd2.safetensors")
        let key = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"
        let fused = try #require(model.tensor(key))
        #expect(fused.shape == [96, 32] && fused.dtype == .f32 && fused.storage.isMapped)
        let parts = try CheckpointConversion.splitRows(fused)
        #expect(parts.map(\.shape) == [[32, 32], [32, 32], [32, 32]])
        #expect(parts.allSatisfy { $0.storage === fused.storage }, "views, not copies")
        // The k block is rows 32..<64 of the file: compare with the diffusers folder's k_proj.
        let folder = try ModelFixtures.model("sd2")
        let k = try #require(folder.tensor("text_encoder.text_model.encoder.layers.1.self_attn.k_proj.weight"))
        #expect(parts[1].rowMajorBytes == k.rowMajorBytes)
        #expect(parts[0].rowMajorBytes != k.rowMajorBytes)
        #expect(try CheckpointConversion.fuseRows(parts).rowMajorBytes == fused.rowMajorBytes)
        #expect(throws: CheckpointConversionError.self) { try CheckpointConversion.splitRows(fused, count: 5) }
    }

    @Test("VAE attention: ldm 1×1 conv [C,C,1,1] ↔ diffusers linear [C,C]")
    func vaeAttentionReshape() throws {
        let single = try ModelFixtures.model("sd1.safetensors"), folder = try ModelFixtures.model("sd1")
        let conv = try #require(single.tensor("first_stage_model.decoder.mid.attn_1.proj_out.weight"))
        let linear = try #require(folder.tensor("vae.decoder.mid_block.attentions.0.to_out.0.weight"))
        #expect(conv.shape == [8, 8, 1, 1] && linear.shape == [8, 8])
        let down = try CheckpointConversion.toDiffusers(conv, .conv1x1)
        #expect(down.shape == [8, 8] && down.rowMajorBytes == linear.rowMajorBytes)
        let up = try CheckpointConversion.toSingleFile(linear, .conv1x1)
        #expect(up.shape == [8, 8, 1, 1] && up.rowMajorBytes == conv.rowMajorBytes)
    }
}

@Suite("KeyMap: rule tables")
struct KeyMapRuleTableTests {
    @Test("no pattern starts its first segment with '#' (the tables index rules by that segment)")
    func headsAreLiteral() {
        var rules: [KeyRule] = UNetKeyMap.rules(for: .standard(for: .sdxl)) + VAEKeyMap.rules(for: .standard)
            + TextEncoderKeyMap.clip + TextEncoderKeyMap.openCLIP(withProjection: true)
        rules += rules.flatMap(\.inner)
        #expect(rules.count > 100)
        for rule in rules {
            for pattern in [rule.single] + rule.diffusers {
                #expect(!KeyRuleTable.head(pattern[...]).contains("#"), "\(pattern)")
            }
        }
    }

    @Test("longest match wins: a level's upsampler slot beats its transformer slot")
    func longestMatch() {
        let rules = [KeyRule("output_blocks.5.1.", "up_blocks.1.attentions.2."),
                     KeyRule("output_blocks.5.1.conv.", "up_blocks.1.upsamplers.0.conv.")]
        #expect(KeyRuleEngine.rename("output_blocks.5.1.conv.weight", rules: rules, direction: .toDiffusers)
                == [KeyConversion(key: "up_blocks.1.upsamplers.0.conv.weight", transform: .identity)])
        #expect(KeyRuleEngine.rename("output_blocks.5.1.norm.bias", rules: rules, direction: .toDiffusers)
                == [KeyConversion(key: "up_blocks.1.attentions.2.norm.bias", transform: .identity)])
        // '#' carries numbers across; whole-key patterns do not match longer keys.
        let numbered = [KeyRule("a.#.b.#.", "x.#.y.#."), KeyRule("w", "z.weight")]
        #expect(KeyRuleEngine.rename("a.12.b.3.c", rules: numbered, direction: .toDiffusers).map(\.key) == ["x.12.y.3.c"])
        #expect(KeyRuleEngine.rename("x.7.y.0.d", rules: numbered, direction: .toSingleFile).map(\.key) == ["a.7.b.0.d"])
        #expect(KeyRuleEngine.rename("a.b.1.c", rules: numbered, direction: .toDiffusers).isEmpty)
        #expect(KeyRuleEngine.rename("wx", rules: numbered, direction: .toDiffusers).isEmpty)
    }
}
