import Host
import Tensor

/// The adapter-targetable layers of a released model of each family, as a model with
/// placeholder tensors (diffusers keys; linear `[1, 1]`, convolutions `[1, 1, k, k]`), so the
/// host's ``TargetIndex`` can translate module names without a checkpoint on disk.
///
/// Only names and layer kinds matter here, never widths. Structure (diffusers configs of the
/// released models): SD1/SD2 — 4 levels × 2 resnets (3 per up level), cross-attention on down
/// levels 0-2 and up levels 1-3, one transformer block each, SD1's proj_in/proj_out 1×1
/// convolutions and SD2's linear; SDXL — 3 levels, transformers on down levels 1-2 (depth 2, 10),
/// mid (10), up levels 0-1 (10, 2), linear projections, `add_embedding`. Text encoders: CLIP-L
/// (12 layers), SD2's OpenCLIP-H (24 listed: single files have 24, diffusers folders 23),
/// SDXL's bigG (32, with `text_projection`).
enum StandardLayout {
    /// The placeholder model for `family`.
    static func model(for family: ModelFamily) -> ModelWeights {
        var keys: [String] = []
        var tensors: [String: Tensor] = [:]
        func add(_ key: String, _ shape: [Int]) {
            keys.append(key + ".weight")
            tensors[key + ".weight"] = Tensor(zeros: shape)
        }
        func linear(_ key: String) { add(key, [1, 1]) }
        func conv(_ key: String, _ k: Int) { add(key, [1, 1, k, k]) }

        let linearProjection = family != .sd1
        let levels = family == .sdxl ? 3 : 4
        let downDepth: [Int: Int] = family == .sdxl ? [1: 2, 2: 10] : [0: 1, 1: 1, 2: 1]
        let upDepth: [Int: Int] = family == .sdxl ? [0: 10, 1: 2] : [1: 1, 2: 1, 3: 1]
        let midDepth = family == .sdxl ? 10 : 1
        // Levels whose first resnet changes the channel count (320→640, 640→1280).
        let widening: Set<Int> = [1, 2]

        func resnet(_ p: String, shortcut: Bool) {
            conv("unet.\(p).conv1", 3); linear("unet.\(p).time_emb_proj"); conv("unet.\(p).conv2", 3)
            if shortcut { conv("unet.\(p).conv_shortcut", 1) }
        }
        func transformer(_ p: String, depth: Int) {
            if linearProjection { linear("unet.\(p).proj_in") } else { conv("unet.\(p).proj_in", 1) }
            for t in 0..<depth {
                let b = "unet.\(p).transformer_blocks.\(t)"
                for attention in ["attn1", "attn2"] {
                    for projection in ["to_q", "to_k", "to_v", "to_out.0"] { linear("\(b).\(attention).\(projection)") }
                }
                linear("\(b).ff.net.0.proj"); linear("\(b).ff.net.2")
            }
            if linearProjection { linear("unet.\(p).proj_out") } else { conv("unet.\(p).proj_out", 1) }
        }

        conv("unet.conv_in", 3)
        linear("unet.time_embedding.linear_1"); linear("unet.time_embedding.linear_2")
        if family == .sdxl { linear("unet.add_embedding.linear_1"); linear("unet.add_embedding.linear_2") }
        for level in 0..<levels {
            for j in 0..<2 {
                resnet("down_blocks.\(level).resnets.\(j)", shortcut: j == 0 && widening.contains(level))
                if let depth = downDepth[level] { transformer("down_blocks.\(level).attentions.\(j)", depth: depth) }
            }
            if level < levels - 1 { conv("unet.down_blocks.\(level).downsamplers.0.conv", 3) }
        }
        resnet("mid_block.resnets.0", shortcut: false)
        transformer("mid_block.attentions.0", depth: midDepth)
        resnet("mid_block.resnets.1", shortcut: false)
        for level in 0..<levels {
            for j in 0..<3 {
                // Up resnets read the skip connection concatenated: every one has a shortcut.
                resnet("up_blocks.\(level).resnets.\(j)", shortcut: true)
                if let depth = upDepth[level] { transformer("up_blocks.\(level).attentions.\(j)", depth: depth) }
            }
            if level < levels - 1 { conv("unet.up_blocks.\(level).upsamplers.0.conv", 3) }
        }
        conv("unet.conv_out", 3)

        func textEncoder(_ component: String, layers: Int, projection: Bool) {
            for n in 0..<layers {
                let l = "\(component).text_model.encoder.layers.\(n)"
                for projection in ["q_proj", "k_proj", "v_proj", "out_proj"] { linear("\(l).self_attn.\(projection)") }
                linear("\(l).mlp.fc1"); linear("\(l).mlp.fc2")
            }
            if projection { linear("\(component).text_projection") }
        }
        switch family {
        case .sd1: textEncoder("text_encoder", layers: 12, projection: false)
        case .sd2: textEncoder("text_encoder", layers: 24, projection: false)
        case .sdxl:
            textEncoder("text_encoder", layers: 12, projection: false)
            textEncoder("text_encoder_2", layers: 32, projection: true)
        }
        return ModelWeights(path: "<standard \(family.rawValue) layout>", keys: keys, tensors: tensors,
                            naming: .diffusers, family: family)
    }
}
