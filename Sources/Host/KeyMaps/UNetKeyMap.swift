/// The block structure of a UNet, as far as key names depend on it.
///
/// ldm/sgm number blocks flatly (`input_blocks.N`, `output_blocks.N`); diffusers nests them
/// (`down_blocks.B.resnets.J`). Converting needs the number of resnets per level and which
/// levels have transformers (an up level with one puts its upsampler at `.2.conv`, else at
/// `.1.conv`). Nothing here depends on channel counts, so tiny test models map like real ones.
public struct UNetLayout: Hashable, Sendable {
    /// Resolution levels (down blocks): 4 for SD1/SD2, 3 for SDXL.
    public var levels: Int
    /// Resnets per down block (the up blocks have one more): 2 in every released SD model.
    public var layersPerBlock: Int
    /// Down levels that have transformer blocks (`down_blocks.B.attentions`).
    public var downAttentionLevels: Set<Int>
    /// Up levels that have transformer blocks (`up_blocks.B.attentions`).
    public var upAttentionLevels: Set<Int>

    /// A layout from its parts.
    public init(levels: Int, layersPerBlock: Int, downAttentionLevels: Set<Int>, upAttentionLevels: Set<Int>) {
        self.levels = levels
        self.layersPerBlock = layersPerBlock
        self.downAttentionLevels = downAttentionLevels
        self.upAttentionLevels = upAttentionLevels
    }

    /// The released models' layout: SD1/SD2 — 4 levels, cross-attention in the first three;
    /// SDXL — 3 levels, transformers in the last two (up levels mirror the down levels).
    public static func standard(for family: ModelFamily) -> UNetLayout {
        switch family {
        case .sd1, .sd2:
            return UNetLayout(levels: 4, layersPerBlock: 2, downAttentionLevels: [0, 1, 2], upAttentionLevels: [1, 2, 3])
        case .sdxl:
            return UNetLayout(levels: 3, layersPerBlock: 2, downAttentionLevels: [1, 2], upAttentionLevels: [0, 1])
        }
    }

    /// The layout the UNet keys of a model show (keys relative to the UNet, without the
    /// `model.diffusion_model.` / `unet.` prefix), or nil when there are no block keys.
    public init?<S: Sequence>(unetKeys keys: S, naming: ModelNaming) where S.Element == String {
        switch naming {
        case .diffusers: self.init(diffusersUNetKeys: keys)
        case .singleFile: self.init(sgmKeys: keys)
        }
    }

    private init?<S: Sequence>(diffusersUNetKeys keys: S) where S.Element == String {
        var downLevels = Set<Int>(), resnets = Set<Int>(), down = Set<Int>(), up = Set<Int>()
        for key in keys {
            let parts = key.split(separator: ".", maxSplits: 4)
            guard parts.count >= 4, let block = Int(parts[1]), let index = Int(parts[3]) else { continue }
            if parts[0] == "down_blocks" {
                downLevels.insert(block)
                if parts[2] == "resnets" && block == 0 { resnets.insert(index) }
                if parts[2] == "attentions" { down.insert(block) }
            } else if parts[0] == "up_blocks" && parts[2] == "attentions" {
                up.insert(block)
            }
        }
        guard !downLevels.isEmpty, !resnets.isEmpty else { return nil }
        self.init(levels: downLevels.count, layersPerBlock: resnets.count, downAttentionLevels: down,
                  upAttentionLevels: up)
    }

    private init?<S: Sequence>(sgmKeys keys: S) where S.Element == String {
        // input_blocks.0 is conv_in; then per level L resnet slots and one downsampler
        // (`input_blocks.N.0.op`), except the last level. The first `op` gives L.
        var inputBlocks = Set<Int>(), opBlocks = Set<Int>(), inputAttention = Set<Int>()
        var outputAttention = Set<Int>()
        for key in keys {
            let parts = key.split(separator: ".", maxSplits: 4)
            guard parts.count >= 4, let block = Int(parts[1]) else { continue }
            if parts[0] == "input_blocks" {
                inputBlocks.insert(block)
                if parts[2] == "0" && parts[3] == "op" { opBlocks.insert(block) }
                if parts[2] == "1" { inputAttention.insert(block) }
            } else if parts[0] == "output_blocks" && parts[2] == "1" && parts[3] != "conv" {
                outputAttention.insert(block)
            }
        }
        guard let lastInput = inputBlocks.max(), lastInput >= 1 else { return nil }
        let perLevel = opBlocks.min() ?? (lastInput + 1)   // L + 1
        let layers = perLevel - 1
        guard layers >= 1 else { return nil }
        let levels = (lastInput + 1) / perLevel
        let down = Set(inputAttention.map { ($0 - 1) / perLevel })
        let up = Set(outputAttention.map { $0 / perLevel })
        self.init(levels: levels, layersPerBlock: layers, downAttentionLevels: down, upAttentionLevels: up)
    }
}

/// ldm/sgm ↔ diffusers renaming of UNet keys (relative to `model.diffusion_model.` / `unet.`).
enum UNetKeyMap {
    /// Resnet parameters: ldm `ResBlock` ↔ diffusers `ResnetBlock2D`.
    static let resnet: [KeyRule] = [
        KeyRule("in_layers.0.", "norm1."),
        KeyRule("in_layers.2.", "conv1."),
        KeyRule("emb_layers.1.", "time_emb_proj."),
        KeyRule("out_layers.0.", "norm2."),
        KeyRule("out_layers.3.", "conv2."),
        KeyRule("skip_connection.", "conv_shortcut."),
    ]

    /// Layers outside the block lists.
    static let fixed: [KeyRule] = [
        KeyRule("input_blocks.0.0.", "conv_in."),
        KeyRule("time_embed.0.", "time_embedding.linear_1."),
        KeyRule("time_embed.2.", "time_embedding.linear_2."),
        KeyRule("label_emb.0.0.", "add_embedding.linear_1."),   // SDXL (addition_embed_type text_time)
        KeyRule("label_emb.0.2.", "add_embedding.linear_2."),
        KeyRule("out.0.", "conv_norm_out."),
        KeyRule("out.2.", "conv_out."),
        KeyRule("middle_block.0.", "mid_block.resnets.0.", inner: resnet, innerRequired: true),
        KeyRule("middle_block.1.", "mid_block.attentions.0."),
        KeyRule("middle_block.2.", "mid_block.resnets.1.", inner: resnet, innerRequired: true),
    ]

    /// The block templates for `layout`: every flat sgm block slot with its diffusers block.
    /// Transformer blocks keep their inner names (`transformer_blocks.0.attn1.to_q` on both sides).
    static func rules(for layout: UNetLayout) -> [KeyRule] {
        var rules = fixed
        let slots = layout.layersPerBlock + 1
        for level in 0..<layout.levels {
            for j in 0..<layout.layersPerBlock {
                let input = 1 + level * slots + j
                rules.append(KeyRule("input_blocks.\(input).0.", "down_blocks.\(level).resnets.\(j).",
                                     inner: resnet, innerRequired: true))
                if layout.downAttentionLevels.contains(level) {
                    rules.append(KeyRule("input_blocks.\(input).1.", "down_blocks.\(level).attentions.\(j)."))
                }
            }
            if level < layout.levels - 1 {
                rules.append(KeyRule("input_blocks.\(1 + level * slots + layout.layersPerBlock).0.op.",
                                     "down_blocks.\(level).downsamplers.0.conv."))
            }
            let hasAttention = layout.upAttentionLevels.contains(level)
            for j in 0..<slots {
                let output = level * slots + j
                rules.append(KeyRule("output_blocks.\(output).0.", "up_blocks.\(level).resnets.\(j).",
                                     inner: resnet, innerRequired: true))
                if hasAttention {
                    rules.append(KeyRule("output_blocks.\(output).1.", "up_blocks.\(level).attentions.\(j)."))
                }
            }
            if level < layout.levels - 1 {
                // The upsampler follows the resnet (and the transformer, when the level has one).
                rules.append(KeyRule("output_blocks.\(level * slots + layout.layersPerBlock).\(hasAttention ? 2 : 1).conv.",
                                     "up_blocks.\(level).upsamplers.0.conv."))
            }
        }
        return rules
    }
}
