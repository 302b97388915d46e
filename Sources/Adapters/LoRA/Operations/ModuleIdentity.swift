import Host
import Tensor

/// Which layer a module of an input changes: its ``LoRALayer`` when a model layout is known
/// (so `lora_unet_…`, `unet.…` and `lycoris_…` spellings of one layer meet), else its name
/// as read (then only identical spellings meet).
struct ModuleIdentity: Hashable {
    let layer: LoRALayer?
    let rawName: String

    static func == (a: ModuleIdentity, b: ModuleIdentity) -> Bool {
        if let x = a.layer, let y = b.layer { return x == y }
        return a.layer == nil && b.layer == nil && a.rawName == b.rawName
    }

    func hash(into hasher: inout Hasher) {
        if let layer { hasher.combine(layer) } else { hasher.combine(rawName) }
    }

    /// A readable name for reports: the kohya name when the layer is known, else the raw one.
    func displayName(_ names: LoRANameSpace?) -> String {
        if let layer, let names { return names.kohyaName(layer) }
        return rawName
    }

    /// The identity of `module` of `input` under `names`; a module the layout does not have is an error.
    static func of(_ module: any AdapterModule, in input: LoRAOperationInput, names: LoRANameSpace?) throws -> ModuleIdentity {
        guard let names else { return ModuleIdentity(layer: nil, rawName: module.name) }
        guard let layer = names.layer(named: module.name) else {
            throw LoRAOperationError(file: input.path, module: module.name,
                                     reason: "no layer of the \(names.family.rawValue) layout (\(names.origin)) has this name")
        }
        return ModuleIdentity(layer: layer, rawName: module.name)
    }
}

extension LoRANameSpace {
    /// The name space for operating on `inputs`: the model's when given, else the standard
    /// layout of `family`, else of the family every input declares (inputs made for different
    /// families are an error); nil when nothing tells the family.
    public static func resolve(for inputs: [LoRAOperationInput], model: ModelWeights?, family: ModelFamily?) throws -> LoRANameSpace? {
        let declared = inputs.compactMap { input in input.adapter.baseModel.map { (input.path, $0) } }
        if let model {
            if let clash = declared.first(where: { $0.1 != model.family }) {
                throw LoRAOperationError(file: clash.0, reason: "made for \(clash.1.rawValue), but the model \(model.path) is \(model.family.rawValue)")
            }
            return LoRANameSpace(model: model)
        }
        if let family {
            if let clash = declared.first(where: { $0.1 != family }) {
                throw LoRAOperationError(file: clash.0, reason: "made for \(clash.1.rawValue), not \(family.rawValue)")
            }
            return .standard(for: family)
        }
        let families = Set(declared.map(\.1))
        if families.count > 1 {
            let list = declared.map { "\($0.0) (\($0.1.rawValue))" }.joined(separator: ", ")
            throw LoRAOperationError(file: "", reason: "the inputs were made for different model families: \(list)")
        }
        return families.first.map { .standard(for: $0) }
    }
}
