import Host
import Tensor

/// Registers the LoRA family — one method per module type, so a LyCORIS file that mixes
/// types is split per module by the registry:
/// "lora" (LoRA/LoCon/Tucker in the kohya, PEFT and diffusers dialects, with DoRA; also
/// bundled embeddings), "loha", "lokr", "ia3", "oft" (OFT and BOFT), "glora", "full", "norm".
public func registerLoRAFamily(into registry: AdapterRegistry) throws {
    for kind in LoRAFamilyMethod.Kind.allCases {
        try registry.register(LoRAFamilyMethod(kind))
    }
}

/// One module type of the LoRA family as an `AdapterMethod`.
public final class LoRAFamilyMethod: AdapterMethod {
    /// The module types.
    public enum Kind: String, CaseIterable, Sendable {
        case lora, loha, lokr, ia3, oft, glora, full, norm
    }

    public let kind: Kind
    public init(_ kind: Kind) { self.kind = kind }

    public var id: String { kind.rawValue }

    public var summary: String {
        switch kind {
        case .lora: return "LoRA / LoCon / Tucker LoRA (kohya, PEFT, diffusers), with DoRA and bundled embeddings"
        case .loha: return "LyCORIS LoHa (Hadamard product of low-rank pairs), with DoRA"
        case .lokr: return "LyCORIS LoKr (Kronecker product), with DoRA"
        case .ia3: return "(IA)³ per-channel scaling"
        case .oft: return "OFT / BOFT orthogonal rotation (kohya, LyCORIS)"
        case .glora: return "LyCORIS GLoRA (W·A + B)"
        case .full: return "LyCORIS full fine-tune difference (diff, diff_b)"
        case .norm: return "LyCORIS norm-layer difference (w_norm, b_norm)"
        }
    }

    /// Roles whose presence makes a module this type's.
    var definingRoles: Set<KeyGrammar.Role> {
        switch kind {
        case .lora: return [.up, .down, .mid, .magnitude]
        case .loha: return [.hadaW1A, .hadaW1B, .hadaW2A, .hadaW2B, .hadaT1, .hadaT2]
        case .lokr: return [.lokrW1, .lokrW1A, .lokrW1B, .lokrW2, .lokrW2A, .lokrW2B, .lokrT2]
        // `weight` alone is any tensor's name: only `on_input` (always written by LyCORIS) marks IA3.
        case .ia3: return [.onInput]
        case .oft: return [.oftBlocks, .oftDiag]
        case .glora: return [.gloraA1, .gloraA2, .gloraB1, .gloraB2, .gloraBM]
        case .full: return [.diff, .diffBias]
        case .norm: return [.normWeight, .normBias]
        }
    }

    /// Every role this type reads (defining + shared).
    var ownedRoles: Set<KeyGrammar.Role> {
        switch kind {
        case .lora: return definingRoles.union([.alpha, .scale, .doraScale, .upBias])
        case .loha, .lokr: return definingRoles.union([.alpha, .scale, .doraScale])
        case .ia3: return [.onInput, .ia3Weight]
        case .oft: return definingRoles.union([.alpha, .rescale])
        case .glora: return definingRoles.union([.alpha, .scale])
        case .full, .norm: return definingRoles.union([.alpha, .scale])
        }
    }

    public func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] {
        let parse = KeyGrammar.parse(keys)
        var claims: [ModuleClaim] = []
        let defining = definingRoles, owned = ownedRoles
        for module in parse.modules where module.keys.keys.contains(where: defining.contains) {
            let taken = module.allKeys.filter { key in module.keys.contains { owned.contains($0.key) && $0.value == key } }
            claims.append(ModuleClaim(module: module.name, keys: taken))
        }
        if kind == .lora {
            for embedding in parse.embeddings {
                claims.append(ModuleClaim(module: "bundle_emb.\(embedding.name)", keys: embedding.keys))
            }
        }
        return claims
    }

    public func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
        let parse = KeyGrammar.parse(source.keys)
        let traits = try FileTraits(source: source, parse: parse)
        let modulesByName = Dictionary(parse.modules.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let embeddingsByName = Dictionary(parse.embeddings.map { ("bundle_emb.\($0.name)", $0) }, uniquingKeysWith: { a, _ in a })
        var modules: [any AdapterModule] = []
        var embeddings: [TokenEmbedding] = []
        for claim in claims {
            if let bundle = embeddingsByName[claim.module], kind == .lora {
                embeddings.append(try BundledEmbeddings.load(bundle, from: source))
                continue
            }
            guard var module = modulesByName[claim.module] else {
                throw LoRAFormatError(file: source.path, module: claim.module,
                                      rule: .missingTensor(suffix: "any tensor", moduleType: id))
            }
            // Read only the claimed keys (another method may own the rest of the module).
            let claimed = Set(claim.keys)
            module.keys = module.keys.filter { claimed.contains($0.value) }
            modules.append(try build(ModuleReader(source: source, module: module, type: id), traits: traits))
        }
        return Adapter(path: source.path, methodIDs: [id], format: traits.format, baseModel: traits.baseModel,
                       metadata: source.metadata, modules: modules, embeddings: embeddings)
    }

    func build(_ reader: ModuleReader, traits: FileTraits) throws -> any AdapterModule {
        let base: WeightDeltaModule
        switch kind {
        case .lora: base = try LoRAModule(reader: reader, traits: traits)
        case .loha: base = try LoHaModule(reader: reader, traits: traits)
        case .lokr: base = try LoKrModule(reader: reader, traits: traits)
        case .full: return try FullModule(reader: reader, weightRole: .diff, biasRole: .diffBias, type: "full")
        case .norm: return try FullModule(reader: reader, weightRole: .normWeight, biasRole: .normBias, type: "norm")
        case .ia3: return try IA3Module(reader: reader)
        case .oft: return try OFTModule(reader: reader)
        case .glora: return try GLoRAModule(reader: reader, traits: traits)
        }
        if reader.module.has(.doraScale) || reader.module.has(.magnitude) {
            return try DoRAModule(inner: base, reader: reader)
        }
        return base
    }
}
