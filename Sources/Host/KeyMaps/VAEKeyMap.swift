/// The block structure of the VAE, as far as key names depend on it: ldm numbers the decoder's
/// up levels from the bottom (`decoder.up.3` is the first one run), diffusers from the top
/// (`decoder.up_blocks.0`), so converting needs the number of levels.
public struct VAELayout: Hashable, Sendable {
    /// Resolution levels: 4 in every released SD VAE.
    public var levels: Int

    /// A layout with `levels` levels.
    public init(levels: Int) { self.levels = levels }

    /// The released SD VAEs' layout.
    public static let standard = VAELayout(levels: 4)

    /// The layout VAE keys show (relative to `first_stage_model.` / `vae.`), or nil when there
    /// are no level keys.
    public init?<S: Sequence>(vaeKeys keys: S) where S.Element == String {
        var levels = Set<Int>()
        for key in keys {
            let parts = key.split(separator: ".", maxSplits: 3)
            guard parts.count >= 3, parts[0] == "encoder" || parts[0] == "decoder" else { continue }
            if parts[1] == "down" || parts[1] == "up" || parts[1] == "down_blocks" || parts[1] == "up_blocks",
               let level = Int(parts[2]) {
                levels.insert(level)
            }
        }
        guard let last = levels.max() else { return nil }
        self.init(levels: last + 1)
    }
}

/// ldm ↔ diffusers renaming of VAE keys (relative to `first_stage_model.` / `vae.`).
enum VAEKeyMap {
    /// Resnet parameters keep their names except the shortcut.
    static let resnet: [KeyRule] = [
        KeyRule("nin_shortcut.", "conv_shortcut."),
    ]

    /// The mid-block attention: ldm uses 1×1 convolutions for q/k/v/proj_out, diffusers linears.
    static let attention: [KeyRule] = [
        KeyRule("norm.", "group_norm."),
        KeyRule("q.", "to_q.", weightTransform: .conv1x1),
        KeyRule("k.", "to_k.", weightTransform: .conv1x1),
        KeyRule("v.", "to_v.", weightTransform: .conv1x1),
        KeyRule("proj_out.", "to_out.0.", weightTransform: .conv1x1),
    ]

    static let fixed: [KeyRule] = [
        KeyRule("encoder.conv_in.", "encoder.conv_in."),
        KeyRule("encoder.conv_out.", "encoder.conv_out."),
        KeyRule("encoder.norm_out.", "encoder.conv_norm_out."),
        KeyRule("decoder.conv_in.", "decoder.conv_in."),
        KeyRule("decoder.conv_out.", "decoder.conv_out."),
        KeyRule("decoder.norm_out.", "decoder.conv_norm_out."),
        KeyRule("quant_conv.", "quant_conv."),
        KeyRule("post_quant_conv.", "post_quant_conv."),
        KeyRule("encoder.down.#.block.#.", "encoder.down_blocks.#.resnets.#.", inner: resnet),
        KeyRule("encoder.down.#.downsample.conv.", "encoder.down_blocks.#.downsamplers.0.conv."),
        KeyRule("encoder.mid.block_1.", "encoder.mid_block.resnets.0.", inner: resnet),
        KeyRule("encoder.mid.block_2.", "encoder.mid_block.resnets.1.", inner: resnet),
        KeyRule("encoder.mid.attn_1.", "encoder.mid_block.attentions.0.", inner: attention, innerRequired: true),
        KeyRule("decoder.mid.block_1.", "decoder.mid_block.resnets.0.", inner: resnet),
        KeyRule("decoder.mid.block_2.", "decoder.mid_block.resnets.1.", inner: resnet),
        KeyRule("decoder.mid.attn_1.", "decoder.mid_block.attentions.0.", inner: attention, innerRequired: true),
    ]

    /// The templates for `layout`: the decoder's levels in reverse order.
    static func rules(for layout: VAELayout) -> [KeyRule] {
        var rules = fixed
        for level in 0..<layout.levels {
            let ldm = layout.levels - 1 - level
            rules.append(KeyRule("decoder.up.\(ldm).block.#.", "decoder.up_blocks.\(level).resnets.#.", inner: resnet))
            rules.append(KeyRule("decoder.up.\(ldm).upsample.conv.", "decoder.up_blocks.\(level).upsamplers.0.conv."))
        }
        return rules
    }
}
