import Tensor

/// A value on the pickle machine's stack or in its memo (internal; converted to ``PickleValue``
/// once the whole file has been read and its storages located).
enum Value {
    case none
    case bool(Bool)
    case int(Int)
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    /// A mutable container (list, tuple, dict, set, ParameterDict), shared by reference as in Python.
    case object(PickleObject)
    /// An allowed global (a name resolved against the allow-list, never a Python object).
    case global(AllowedGlobal)
    /// What a storage persistent id loaded to.
    case storage(StorageRef)
    /// What a tensor rebuild function returned (checked against its storage when converted).
    case tensor(TensorRecord)

    /// The Python type name, for messages.
    var typeName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .object(let o): return o.kind.typeName
        case .global(let g): return "global \(g.qualifiedName)"
        case .storage: return "storage"
        case .tensor: return "tensor"
        }
    }
}

/// A container built by the pickle machine. Containers are classes because pickle mutates them
/// after they are memoized and shared (EMPTY_DICT, BINPUT, … SETITEMS), and can make cycles.
///
/// Every object is registered in an ``ObjectArena`` that empties them all when the file is
/// done: that breaks cycles (no leak) and makes every release shallow, so a deeply nested
/// hostile pickle can never overflow the stack in recursive deinit.
final class PickleObject {
    enum Kind: Equatable {
        case list, tuple
        case dict(ordered: Bool)
        case set(frozen: Bool)
        /// `torch.nn.modules.container.ParameterDict` made by NEWOBJ; its state comes by BUILD.
        case parameterDict

        var typeName: String {
            switch self {
            case .list: return "list"
            case .tuple: return "tuple"
            case .dict(let ordered): return ordered ? "OrderedDict" : "dict"
            case .set(let frozen): return frozen ? "frozenset" : "set"
            case .parameterDict: return "ParameterDict"
            }
        }
    }

    let kind: Kind
    /// Elements of a list, tuple or set; values of a dict (parallel to `keys`).
    var items: [Value] = []
    /// Keys of a dict, in insertion order.
    var keys: [Value] = []
    /// Position of each dict key / set element, by Python equality.
    var index: [KeyIdentity: Int] = [:]
    /// The BUILD state of a ParameterDict.
    var state: Value?

    init(kind: Kind, items: [Value] = []) {
        self.kind = kind
        self.items = items
    }

    /// Drops every reference this object holds (arena teardown).
    func clear() {
        items = []
        keys = []
        index = [:]
        state = nil
    }
}

/// Owns every container of one file's pickles; see ``PickleObject``.
final class ObjectArena {
    private(set) var objects: [PickleObject] = []
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// A new registered container; nil when the limit is reached.
    func make(_ kind: PickleObject.Kind, items: [Value] = []) -> PickleObject? {
        guard objects.count < limit else { return nil }
        let o = PickleObject(kind: kind, items: items)
        objects.append(o)
        return o
    }

    /// Empties every container first (so no release cascades), then lets them go.
    func tearDown() {
        for o in objects { o.clear() }
        objects = []
    }

    deinit { tearDown() }
}

/// Python equality for hashable values (dict keys, set elements): 1 == 1.0 == True.
indirect enum KeyIdentity: Hashable {
    case none
    case int(Int)
    case bigInt([UInt8])
    case float(UInt64)
    case string(String)
    case bytes([UInt8])
    case tuple([KeyIdentity])
    case frozenset([KeyIdentity])
    case global(String)
}

/// A storage persistent id: `('storage', storage_type, key, location, numel[, view_metadata])`.
struct StorageRef {
    /// The record key (`data/<key>` in the zip format; a key of the data section in the legacy format).
    let key: String
    /// The storage type's dtype (U8 for UntypedStorage).
    let dtype: DType
    /// Elements of `dtype` in the whole storage.
    let numel: Int
    /// Legacy (pre-0.4) storage views: element offset and count within the root storage.
    let view: (offset: Int, count: Int)?
}

/// A tensor as a rebuild function described it; checked against the storage when converted.
struct TensorRecord {
    let storage: StorageRef
    let dtype: DType
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// What the pickle said about each storage key, first reference first.
struct StorageDeclaration {
    let dtype: DType
    let numel: Int
    /// The largest element size of any tensor viewing this storage (alignment for zero-copy).
    var maxElementSize: Int

    var byteCount: Int { numel * dtype.byteSize }  // checked not to overflow when declared
}
