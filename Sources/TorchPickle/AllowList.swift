import Tensor

/// A global a pickle may name. Anything not in ``AllowedGlobal/lookup(module:name:)`` is refused
/// by name when GLOBAL, STACK_GLOBAL or INST names it, before anything else happens; the ones
/// here are never imported or called either: each is an instruction this reader interprets itself
/// (see `Calls.swift`).
struct AllowedGlobal: Equatable {
    enum Kind: Equatable {
        // Called by REDUCE: torch's tensor rebuild functions.
        case rebuildTensor, rebuildTensorV2, rebuildTensorV3, rebuildParameter, rebuildParameterWithState
        // Called by REDUCE (or NEWOBJ for OrderedDict): how pickle spells plain containers/scalars.
        case orderedDict, set, frozenset, codecsEncode, emptyBytes, torchSize
        // Made by NEWOBJ, filled by BUILD: read as the dict of its parameters.
        case parameterDict
        /// A storage class in a persistent id; nil dtype: known to torch, unsupported here.
        case storageType(DType?)
        /// A torch dtype (`_rebuild_tensor_v3`'s dtype argument, or plain data); nil: unsupported.
        case dtype(DType?)
        /// A class that only appears as data (a dict key), never called.
        case classReference
    }

    let module: String
    let name: String
    let kind: Kind

    var qualifiedName: String { module + "." + name }

    /// The allow-list. Both spellings of builtins are accepted: protocol 2 writes Python 2 names
    /// (`__builtin__.set`) that Python 3 maps back to `builtins`.
    ///
    /// Why each entry:
    /// - `torch._utils._rebuild_tensor_v2` (every tensor since torch 0.4), `_rebuild_tensor`
    ///   (older files), `_rebuild_tensor_v3` (float8 and other new dtypes, over an UntypedStorage),
    ///   `_rebuild_parameter` / `_rebuild_parameter_with_state` (nn.Parameter, e.g. an embedding
    ///   vector saved while training).
    /// - `torch.<X>Storage`, `torch.storage.UntypedStorage`: the storage type in a persistent id.
    ///   Unsupported dtypes (complex, quantized) are accepted as names so the error can say
    ///   "dtype not supported" instead of "refused".
    /// - `torch.<dtype>`: `_rebuild_tensor_v3`'s dtype argument.
    /// - `collections.OrderedDict`: every state_dict and every tensor's backward_hooks.
    /// - `builtins.set` / `frozenset`, `_codecs.encode` (bytes) and `builtins.bytes` (empty
    ///   bytes): how protocol 2 spells these plain values. `torch.Size`: a tuple of ints.
    /// - `torch.nn.modules.container.ParameterDict`: the original textual-inversion format stores
    ///   `string_to_param` as one (A1111 reads it through `._parameters`). Only this class, only
    ///   via NEWOBJ + BUILD, and only its `_parameters` is kept; every other torch.nn class is refused.
    /// - `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` (and the module object
    ///   `pytorch_lightning.callbacks.model_checkpoint`): Lightning 1.x .ckpt files (SD 1.x
    ///   checkpoints) key their `callbacks` dict by this class. Accepted as a name only; calling it
    ///   is refused.
    ///
    /// Deliberately absent: numpy (scalars/arrays in some training checkpoints),
    /// `torch._tensor._rebuild_from_type_v2` (tensor subclasses, tensors with Python attributes),
    /// sparse/quantized/meta rebuild functions, `torch.device`, `copyreg`, and everything else.
    static func lookup(module: String, name: String) -> AllowedGlobal? {
        // Dotted names (protocol 4 attribute paths such as "OrderedDict.fromkeys") never match:
        // every entry is a top-level name of its module.
        guard !name.contains("."), let kind = table[module + "." + name] else { return nil }
        return AllowedGlobal(module: module, name: name, kind: kind)
    }

    private static let table: [String: Kind] = {
        var t: [String: Kind] = [
            "torch._utils._rebuild_tensor": .rebuildTensor,
            "torch._utils._rebuild_tensor_v2": .rebuildTensorV2,
            "torch._utils._rebuild_tensor_v3": .rebuildTensorV3,
            "torch._utils._rebuild_parameter": .rebuildParameter,
            "torch._utils._rebuild_parameter_with_state": .rebuildParameterWithState,
            "collections.OrderedDict": .orderedDict,
            "torch.Size": .torchSize,
            "_codecs.encode": .codecsEncode,
            "torch.nn.modules.container.ParameterDict": .parameterDict,
            "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": .classReference,
            "pytorch_lightning.callbacks.model_checkpoint": .classReference,
            "torch.storage.UntypedStorage": .storageType(.u8),
            "torch.UntypedStorage": .storageType(.u8),
        ]
        for builtins in ["builtins", "__builtin__"] {
            t[builtins + ".set"] = .set
            t[builtins + ".frozenset"] = .frozenset
            t[builtins + ".bytes"] = .emptyBytes
        }
        let storages: [(String, DType?)] = [
            ("Double", .f64), ("Float", .f32), ("Half", .f16), ("BFloat16", .bf16), ("Long", .i64),
            ("Int", .i32), ("Short", .i16), ("Char", .i8), ("Byte", .u8), ("Bool", .bool),
            ("ComplexFloat", nil), ("ComplexDouble", nil), ("QUInt8", nil), ("QInt8", nil),
            ("QInt32", nil), ("QUInt4x2", nil), ("QUInt2x4", nil),
        ]
        for (prefix, dtype) in storages { t["torch.\(prefix)Storage"] = .storageType(dtype) }
        let dtypes: [(String, DType?)] = [
            ("float64", .f64), ("float32", .f32), ("float16", .f16), ("bfloat16", .bf16),
            ("int64", .i64), ("int32", .i32), ("int16", .i16), ("int8", .i8), ("uint8", .u8),
            ("bool", .bool), ("float8_e4m3fn", .f8e4m3), ("float8_e5m2", .f8e5m2),
            ("float8_e4m3fnuz", nil), ("float8_e5m2fnuz", nil), ("float8_e8m0fnu", nil),
            ("uint16", nil), ("uint32", nil), ("uint64", nil),
            ("complex32", nil), ("complex64", nil), ("complex128", nil),
        ]
        for (name, dtype) in dtypes { t["torch.\(name)"] = .dtype(dtype) }
        return t
    }()
}
