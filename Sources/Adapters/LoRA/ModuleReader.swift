import Host
import Tensor

/// Reads one parsed module's tensors from its file, turning every problem into a
/// `LoRAFormatError` that names the file, the module and the rule.
struct ModuleReader {
    let source: TensorSource
    let module: KeyGrammar.Module
    /// The module type being read, for messages ("lora", "loha", …).
    let type: String

    var name: String { module.name }

    /// The tensor for `role`, or nil when the module has none.
    func optional(_ role: KeyGrammar.Role) throws -> Tensor? {
        guard let key = module.keys[role] else { return nil }
        let t = try source.tensor(key)
        // Scalars may be stored as integers (LyCORIS writes `torch.tensor(alpha)` for an int alpha).
        let scalarRoles: Set<KeyGrammar.Role> = [.alpha, .scale, .onInput]
        guard t.dtype.isFloatingPoint || (scalarRoles.contains(role) && t.dtype != .bool) else {
            throw failure(.badShape(suffix: role.rawValue, shape: t.shape, expected: "a floating-point tensor, not \(t.dtype.rawValue)"))
        }
        return t
    }

    /// The tensor for `role`; its absence is an error.
    func required(_ role: KeyGrammar.Role) throws -> Tensor {
        guard let t = try optional(role) else {
            throw failure(.missingTensor(suffix: role.rawValue, moduleType: type))
        }
        return t
    }

    /// A one-element tensor's value (alpha, scale), or nil when absent. Must be finite.
    func scalar(_ role: KeyGrammar.Role) throws -> Double? {
        guard let t = try optional(role) else { return nil }
        guard t.count == 1 else { throw failure(.notScalar(suffix: role.rawValue, shape: t.shape)) }
        let value = t.doubles[0]
        guard value.isFinite else { throw failure(.badValue(suffix: role.rawValue, reason: "value \(value) is not finite")) }
        return value
    }

    /// Requires `t` to have one of `ranks` dimensions.
    func requireRank(_ t: Tensor, _ role: KeyGrammar.Role, _ ranks: Set<Int>, _ expected: String) throws {
        guard ranks.contains(t.rank) else { throw failure(.badShape(suffix: role.rawValue, shape: t.shape, expected: expected)) }
    }

    func failure(_ rule: LoRAFormatError.Rule) -> LoRAFormatError {
        LoRAFormatError(file: source.path, module: module.name, rule: rule)
    }
}
