/// A key of the other naming, and how the tensor changes on the way.
public struct KeyConversion: Hashable, Sendable, CustomStringConvertible {
    /// The key in the other naming.
    public let key: String
    /// From the single-file tensor to the diffusers tensor.
    public let transform: KeyTransform

    /// A key with its transform.
    public init(key: String, transform: KeyTransform) {
        self.key = key
        self.transform = transform
    }

    public var description: String { transform == .identity ? key : "\(key) (\(transform))" }
}

/// The structure key names depend on: the UNet's and the VAE's block layout.
public struct ModelLayout: Hashable, Sendable {
    /// The UNet's block layout.
    public var unet: UNetLayout
    /// The VAE's level count.
    public var vae: VAELayout

    /// A layout from its parts.
    public init(unet: UNetLayout, vae: VAELayout) {
        self.unet = unet
        self.vae = vae
    }

    /// The released models' layout for `family`.
    public static func standard(for family: ModelFamily) -> ModelLayout {
        ModelLayout(unet: .standard(for: family), vae: .standard)
    }

    /// The layout `keys` (a whole model's keys in `naming`) show; the family's standard
    /// layout for a part without keys.
    public init<C: Collection>(keys: C, naming: ModelNaming, family: ModelFamily) where C.Element == String {
        let unetPrefix = naming == .singleFile ? CheckpointKeyMap.singleFileUNetPrefix : "unet."
        let vaePrefix = naming == .singleFile ? "first_stage_model." : "vae."
        let unetKeys = keys.lazy.filter { $0.hasPrefix(unetPrefix) }.map { String($0.dropFirst(unetPrefix.count)) }
        let vaeKeys = keys.lazy.filter { $0.hasPrefix(vaePrefix) }.map { String($0.dropFirst(vaePrefix.count)) }
        self.init(unet: UNetLayout(unetKeys: unetKeys, naming: naming) ?? .standard(for: family),
                  vae: VAELayout(vaeKeys: vaeKeys) ?? .standard)
    }
}

/// One model component: its key prefix in each naming and the rules for the rest.
struct ComponentKeyMap: Sendable {
    let part: ModelPart
    let singleFilePrefix: String
    let diffusersPrefix: String
    let rules: KeyRuleTable
    /// Which text encoder this is (nil for UNet and VAE).
    let text: TextEncoderKind?
}

/// How a text encoder is stored in single files. Diffusers always holds a Hugging Face
/// `CLIPTextModel(WithProjection)`; transformers ≥ 5.6 saves it without the `text_model.`
/// level (`encoder.layers.0…`), published repos have it: keys are read either way and
/// written with it.
enum TextEncoderKind: Sendable, Equatable {
    /// Hugging Face names in the single file too (CLIP-L).
    case clip
    /// open_clip names in the single file (OpenCLIP ViT-H / bigG).
    case openCLIP(withProjection: Bool)
}

/// Conversion between single-file (ldm/sgm, A1111/ComfyUI) and diffusers key names.
///
/// Single-file names: `model.diffusion_model.` (UNet), `first_stage_model.` (VAE),
/// `cond_stage_model.transformer.` (SD1 CLIP-L), `cond_stage_model.model.` (SD2 OpenCLIP),
/// `conditioner.embedders.0.transformer.` / `conditioner.embedders.1.model.` (SDXL).
/// Diffusers names: `unet.`, `vae.`, `text_encoder.`, `text_encoder_2.` + the component's
/// own state-dict key.
///
/// Every rename is data: the prefix table below, the block templates of ``UNetKeyMap`` and
/// ``VAEKeyMap`` (generated from the layout), and the tables of ``TextEncoderKeyMap``.
/// Keys no rule knows (schedule buffers such as `alphas_cumprod`, OpenCLIP's `logit_scale`,
/// SD2's unused `text_projection`) have no counterpart.
public struct CheckpointKeyMap: Sendable {
    /// The family whose components (text encoders) this map knows.
    public let family: ModelFamily
    /// The block layout the UNet and VAE templates were built for.
    public let layout: ModelLayout
    let components: [ComponentKeyMap]

    static let singleFileUNetPrefix = "model.diffusion_model."

    /// Per family: (part, single-file prefix, diffusers prefix, how it is stored).
    private static let textEncoders: [ModelFamily: [(ModelPart, String, String, TextEncoderKind)]] = [
        .sd1: [(.textEncoder(0), "cond_stage_model.transformer.", "text_encoder.", .clip)],
        .sd2: [(.textEncoder(0), "cond_stage_model.model.", "text_encoder.", .openCLIP(withProjection: false))],
        .sdxl: [(.textEncoder(0), "conditioner.embedders.0.transformer.", "text_encoder.", .clip),
                (.textEncoder(1), "conditioner.embedders.1.model.", "text_encoder_2.", .openCLIP(withProjection: true))],
    ]

    /// The map for `family` with `layout` (the released models' layout when nil).
    public init(family: ModelFamily, layout: ModelLayout? = nil) {
        let layout = layout ?? .standard(for: family)
        self.family = family
        self.layout = layout
        var components = [
            ComponentKeyMap(part: .unet, singleFilePrefix: Self.singleFileUNetPrefix, diffusersPrefix: "unet.",
                            rules: KeyRuleTable(UNetKeyMap.rules(for: layout.unet)), text: nil),
            ComponentKeyMap(part: .vae, singleFilePrefix: "first_stage_model.", diffusersPrefix: "vae.",
                            rules: KeyRuleTable(VAEKeyMap.rules(for: layout.vae)), text: nil),
        ]
        for (part, single, diffusers, text) in Self.textEncoders[family] ?? [] {
            let rules: [KeyRule]
            switch text {
            case .clip: rules = TextEncoderKeyMap.clip
            case .openCLIP(let projection): rules = TextEncoderKeyMap.openCLIP(withProjection: projection)
            }
            components.append(ComponentKeyMap(part: part, singleFilePrefix: single, diffusersPrefix: diffusers,
                                              rules: KeyRuleTable(rules), text: text))
        }
        self.components = components
    }

    /// The released models' maps, built once.
    static let standardMaps: [ModelFamily: CheckpointKeyMap] =
        Dictionary(uniqueKeysWithValues: ModelFamily.allCases.map { ($0, CheckpointKeyMap(family: $0)) })

    /// The released models' map for `family`.
    public static func standard(for family: ModelFamily) -> CheckpointKeyMap { standardMaps[family]! }

    // MARK: Single file → diffusers

    /// The diffusers key(s) a single-file key becomes: one for most keys, three for OpenCLIP's
    /// fused `in_proj_weight`/`in_proj_bias` (q, k, v rows); empty when it has no counterpart.
    public func diffusersKeys(forSingleFile key: String) -> [KeyConversion] {
        guard let component = component(ofSingleFileKey: key) else { return [] }
        var rest = key.dropFirst(component.singleFilePrefix.count)
        if case .clip = component.text, !rest.hasPrefix("text_model.") {
            rest = ("text_model." + rest)[...]   // CLIP-L saved without the `text_model.` level
        }
        return KeyRuleEngine.rename(rest, table: component.rules, direction: .toDiffusers).map {
            KeyConversion(key: component.diffusersPrefix + $0.key, transform: $0.transform)
        }
    }

    /// The diffusers key a single-file key becomes, when it becomes exactly one (fused
    /// OpenCLIP attention weights become three: see ``diffusersKeys(forSingleFile:)``).
    public func diffusersKey(forSingleFile key: String) -> String? {
        let keys = diffusersKeys(forSingleFile: key)
        return keys.count == 1 ? keys[0].key : nil
    }

    // MARK: Diffusers → single file

    /// The single-file key a diffusers key comes from, with the transform from the
    /// single-file tensor to the diffusers one (for q/k/v: which rows of the fused tensor).
    public func singleFileConversion(forDiffusers key: String) -> KeyConversion? {
        guard let component = component(ofDiffusersKey: key) else { return nil }
        var rest = key.dropFirst(component.diffusersPrefix.count)
        if component.text != nil, !rest.hasPrefix("text_model."), !rest.hasPrefix("text_projection") {
            rest = ("text_model." + rest)[...]   // transformers ≥ 5.6 layout
        }
        let found = KeyRuleEngine.rename(rest, table: component.rules, direction: .toSingleFile)
        guard found.count == 1 else { return nil }
        return KeyConversion(key: component.singleFilePrefix + found[0].key, transform: found[0].transform)
    }

    /// The single-file key a diffusers key comes from (for q/k/v: the fused tensor's key).
    public func singleFileKey(forDiffusers key: String) -> String? {
        singleFileConversion(forDiffusers: key)?.key
    }

    // MARK: Components

    /// The part a key belongs to in `naming`, or nil for keys outside every component.
    public func part(ofKey key: String, naming: ModelNaming) -> ModelPart? {
        switch naming {
        case .singleFile: return component(ofSingleFileKey: key)?.part
        case .diffusers: return component(ofDiffusersKey: key)?.part
        }
    }

    /// The prefix of `part`'s keys in `naming` (nil for a text encoder the family lacks).
    public func prefix(of part: ModelPart, naming: ModelNaming) -> String? {
        guard let component = components.first(where: { $0.part == part }) else { return nil }
        return naming == .singleFile ? component.singleFilePrefix : component.diffusersPrefix
    }

    func component(ofSingleFileKey key: String) -> ComponentKeyMap? {
        components.first { key.hasPrefix($0.singleFilePrefix) }
    }

    func component(ofDiffusersKey key: String) -> ComponentKeyMap? {
        components.first { key.hasPrefix($0.diffusersPrefix) }
    }
}

extension CheckpointKeyMap {
    /// `diffusersKey(forSingleFile:)` with the released models' layout of `family`.
    public static func diffusersKey(forSingleFile key: String, family: ModelFamily) -> String? {
        standard(for: family).diffusersKey(forSingleFile: key)
    }

    /// `diffusersKeys(forSingleFile:)` with the released models' layout of `family`.
    public static func diffusersKeys(forSingleFile key: String, family: ModelFamily) -> [KeyConversion] {
        standard(for: family).diffusersKeys(forSingleFile: key)
    }

    /// `singleFileKey(forDiffusers:)` with the released models' layout of `family`.
    public static func singleFileKey(forDiffusers key: String, family: ModelFamily) -> String? {
        standard(for: family).singleFileKey(forDiffusers: key)
    }
}
