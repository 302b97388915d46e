import Tensor

/// A value read from a PyTorch pickle: plain data and tensors, nothing executable.
///
/// `dict` covers both `dict` and `collections.OrderedDict` (insertion order kept; attributes a
/// BUILD gave an OrderedDict, such as a state dict's `_metadata`, are dropped). A
/// `torch.nn.ParameterDict` reads as the dict of its parameters. `set` covers set and frozenset.
/// `global` is an allowed class or dtype that appeared as plain data (e.g. a Lightning
/// checkpoint's `callbacks` dict is keyed by the class `ModelCheckpoint`); it is a name, never
/// something that can be called.
public indirect enum PickleValue: CustomStringConvertible {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer outside Int64: two's-complement bytes, little-endian (as pickle's LONG1/LONG4).
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    case set([PickleValue])
    case dict(PickleDict)
    case tensor(Tensor)
    case global(module: String, name: String)

    /// The string, when this is one.
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    /// The integer, when this is one (bools count, as in Python).
    public var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
    /// The number as a Double (ints, bools and floats).
    public var doubleValue: Double? {
        switch self {
        case .float(let d): return d
        case .int(let i): return Double(i)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
    /// The bool, when this is one.
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    /// The tensor, when this is one.
    public var tensorValue: Tensor? { if case .tensor(let t) = self { return t } else { return nil } }
    /// The dictionary, when this is one.
    public var dictValue: PickleDict? { if case .dict(let d) = self { return d } else { return nil } }
    /// The elements of a list, tuple or set.
    public var elements: [PickleValue]? {
        switch self {
        case .list(let a), .tuple(let a), .set(let a): return a
        default: return nil
        }
    }
    /// The value for a string key, when this is a dictionary.
    public subscript(key: String) -> PickleValue? { dictValue?[key] }

    /// A short Python-like rendering (tensors as `Tensor(F32, [2, 3])`).
    public var description: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .bigInt(let bytes): return "<int of \(bytes.count) bytes>"
        case .float(let d): return String(d)
        case .string(let s): return "'" + s + "'"
        case .bytes(let b): return "b<\(b.count) bytes>"
        case .list(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .tuple(let a): return "(" + a.map(\.description).joined(separator: ", ") + (a.count == 1 ? ",)" : ")")
        case .set(let a): return "{" + a.map(\.description).joined(separator: ", ") + "}"
        case .dict(let d):
            return "{" + d.entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .tensor(let t): return t.description
        case .global(let m, let n): return m + "." + n
        }
    }
}

/// A dictionary from a pickle, in insertion order. Keys are plain values (strings, ints, …).
public struct PickleDict {
    /// Key/value pairs in insertion order (a key set twice keeps its first position and last value).
    public internal(set) var entries: [(key: PickleValue, value: PickleValue)]

    public init(entries: [(key: PickleValue, value: PickleValue)] = []) {
        self.entries = entries
    }

    /// Number of entries.
    public var count: Int { entries.count }
    /// The keys in order.
    public var keys: [PickleValue] { entries.map(\.key) }

    /// The value for a string key (Python `d["key"]`).
    public subscript(key: String) -> PickleValue? {
        entries.first { if case .string(let s) = $0.key { return s == key } else { return false } }?.value
    }

    /// The value for an integer key (Python `d[768]`).
    public subscript(int key: Int) -> PickleValue? {
        entries.first { $0.key.intValue == key && $0.key.boolValue == nil }?.value
    }
}
