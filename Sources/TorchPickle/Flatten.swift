import Tensor

/// The tensors and plain values of an unpickled object under dotted keys.
///
/// Rules (the generator tools/gen_pickle_fixtures.py implements them independently):
/// - a dict recurses, each key rendered as text (str as is, int in decimal, bool as True/False,
///   None, a class reference as `module.name`, tuples as `(a, b)`), joined with ".";
///   an empty dict is a value;
/// - a list or tuple recurses by index when anything inside it is a tensor or a dict
///   (`768.0.linear.0.weight`); otherwise it is one value (`layer_structure`);
/// - a tensor is a tensor key; everything else is a value.
/// A key at the root is its rendered text; a non-container root has the key "".
struct Flattened {
    var tensors: [(key: String, tensor: Tensor)] = []
    var values: [(key: String, value: PickleValue)] = []
}

func flatten(_ root: PickleValue, file: String) throws(TorchPickleError) -> Flattened {
    var out = Flattened()
    var seen = Set<String>()
    func claim(_ key: String) throws(TorchPickleError) {
        guard seen.insert(key).inserted else { throw TorchPickleError(file: file, rule: .duplicateFlattenedKey(key)) }
    }
    // Recursion depth is bounded: a PickleValue is at most Limits.maxNestingDepth deep.
    func walk(_ value: PickleValue, _ key: String) throws(TorchPickleError) {
        func child(_ component: String) -> String { key.isEmpty ? component : key + "." + component }
        switch value {
        case .tensor(let t):
            try claim(key)
            out.tensors.append((key, t))
        case .dict(let d) where d.count > 0:
            for entry in d.entries { try walk(entry.value, child(renderKey(entry.key))) }
        case .list(let items) where items.contains(where: containsStructure),
             .tuple(let items) where items.contains(where: containsStructure):
            for (i, item) in items.enumerated() { try walk(item, child(String(i))) }
        default:
            try claim(key)
            out.values.append((key, value))
        }
    }
    try walk(root, "")
    return out
}

/// True when a tensor or a dict is inside `value` (lists and tuples are searched).
private func containsStructure(_ value: PickleValue) -> Bool {
    switch value {
    case .tensor, .dict: return true
    case .list(let items), .tuple(let items): return items.contains(where: containsStructure)
    default: return false
    }
}

/// A dict key as a key component (Python's str() for the kinds of keys torch files use).
func renderKey(_ key: PickleValue) -> String {
    switch key {
    case .string(let s): return s
    case .tuple(let items): return "(" + items.map(renderKey).joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
    default: return key.description
    }
}
