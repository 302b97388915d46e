import Tensor

/// GLOBAL, REDUCE, NEWOBJ, BUILD and persistent ids: the only places where a pickle asks for
/// behaviour. Each allowed global is interpreted here by a fixed rule over plain values;
/// nothing is imported, looked up dynamically or called.
extension Unpickler {
    /// The allowed global `module.name`, or the refusal naming it.
    func resolveGlobal(module: String, name: String) throws(TorchPickleError) -> AllowedGlobal {
        guard let g = AllowedGlobal.lookup(module: module, name: name) else {
            throw fail(.refusedGlobal(module: module, name: name))
        }
        return g
    }

    // MARK: REDUCE

    /// `callee(*arguments)` for the callable allowed globals.
    func call(_ callee: Value, arguments: Value) throws(TorchPickleError) -> Value {
        guard case .global(let g) = callee else { throw fail(.notCallable(callee: "a \(callee.typeName) value")) }
        let name = g.qualifiedName
        guard case .object(let tuple) = arguments, tuple.kind == .tuple else {
            throw fail(.badArguments(callee: name, reason: "arguments are a \(arguments.typeName), not a tuple"))
        }
        let args = tuple.items
        func expectCount(_ counts: ClosedRange<Int>) throws(TorchPickleError) {
            guard counts.contains(args.count) else {
                throw fail(.badArguments(callee: name, reason: "\(args.count) arguments, expected "
                    + (counts.count == 1 ? "\(counts.lowerBound)" : "\(counts.lowerBound) to \(counts.upperBound)")))
            }
        }
        switch g.kind {
        case .rebuildTensor:
            try expectCount(4...4)
            return try rebuildTensor(name, args, dtypeIndex: nil, metadataIndex: nil)
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            try expectCount(6...7)
            return try rebuildTensor(name, args, dtypeIndex: nil, metadataIndex: 6)
        case .rebuildTensorV3:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
            try expectCount(7...8)
            return try rebuildTensor(name, args, dtypeIndex: 6, metadataIndex: 7)
        case .rebuildParameter, .rebuildParameterWithState:
            // (data, requires_grad, backward_hooks[, state]): the parameter is its data tensor;
            // requires_grad, hooks and Python attributes mean nothing to a reader.
            try expectCount(g.kind == .rebuildParameter ? 3...3 : 4...4)
            guard case .tensor = args[0] else {
                throw fail(.badArguments(callee: name, reason: "data is a \(args[0].typeName), not a tensor"))
            }
            return args[0]
        case .orderedDict:
            try expectCount(0...0)  // torch.save: OrderedDict() then SETITEMS
            return .object(try newObject(.dict(ordered: true)))
        case .set, .frozenset:
            try expectCount(0...1)
            let s = try newObject(.set(frozen: g.kind == .frozenset))
            if let source = args.first {
                guard case .object(let o) = source, o.kind == .list || o.kind == .tuple || o.kind == .set(frozen: false)
                        || o.kind == .set(frozen: true) else {
                    throw fail(.badArguments(callee: name, reason: "argument is a \(source.typeName), not a list"))
                }
                try addToSet(o.items, s)
            }
            return .object(s)
        case .codecsEncode:
            // Protocol 2 spells bytes as _codecs.encode(<latin-1 text>, 'latin1').
            try expectCount(2...2)
            guard case .string(let text) = args[0], case .string(let encoding) = args[1],
                  ["latin1", "latin-1", "iso-8859-1", "iso8859-1"].contains(encoding.lowercased()) else {
                throw fail(.badArguments(callee: name, reason: "expected (str, 'latin1')"))
            }
            var out: [UInt8] = []
            out.reserveCapacity(text.unicodeScalars.count)
            for scalar in text.unicodeScalars {
                guard scalar.value <= 0xFF else {
                    throw fail(.badArguments(callee: name, reason: "character U+\(String(scalar.value, radix: 16)) is not Latin-1"))
                }
                out.append(UInt8(scalar.value))
            }
            return .bytes(out)
        case .emptyBytes:
            try expectCount(0...0)  // protocol 2 spells b"" as bytes()
            return .bytes([])
        case .torchSize:
            try expectCount(1...1)
            return .object(try newObject(.tuple, items: try integers(args[0], what: "size", callee: name).map { .int($0) }))
        case .parameterDict, .storageType, .dtype, .classReference:
            throw fail(.notCallable(callee: name))
        }
    }

    // MARK: NEWOBJ and BUILD

    /// `cls.__new__(cls, *arguments)`: only an empty ParameterDict or OrderedDict.
    func instantiate(_ cls: Value, arguments: Value, keywords: Value?) throws(TorchPickleError) -> Value {
        guard case .global(let g) = cls else { throw fail(.notCallable(callee: "a \(cls.typeName) value")) }
        guard case .object(let a) = arguments, a.kind == .tuple, a.items.isEmpty else {
            throw fail(.badArguments(callee: g.qualifiedName, reason: "NEWOBJ with arguments"))
        }
        if let keywords {
            guard case .object(let k) = keywords, case .dict = k.kind, k.keys.isEmpty else {
                throw fail(.badArguments(callee: g.qualifiedName, reason: "NEWOBJ_EX with keyword arguments"))
            }
        }
        switch g.kind {
        case .parameterDict: return .object(try newObject(.parameterDict))
        case .orderedDict: return .object(try newObject(.dict(ordered: true)))
        default: throw fail(.notCallable(callee: g.qualifiedName))
        }
    }

    /// `target.__setstate__(state)`: accepted for a ParameterDict (its `__dict__`, kept) and for a
    /// dict (an OrderedDict's attributes such as a state dict's `_metadata`, dropped).
    func build(_ target: Value, state: Value) throws(TorchPickleError) {
        guard case .object(let o) = target else { throw fail(.buildRefused(target: "a \(target.typeName) value")) }
        switch o.kind {
        case .parameterDict:
            guard case .object(let s) = state, case .dict = s.kind else {
                throw fail(.buildRefused(target: "ParameterDict with a \(state.typeName) state"))
            }
            o.state = state
        case .dict:
            // State is a dict, or (dict or None, slots dict or None) as object.__reduce_ex__ makes.
            switch state {
            case .object(let s) where s.kind == .dict(ordered: false) || s.kind == .dict(ordered: true): break
            case .object(let s) where s.kind == .tuple && s.items.count == 2: break
            default: throw fail(.buildRefused(target: "\(o.kind.typeName) with a \(state.typeName) state"))
            }
        default:
            throw fail(.buildRefused(target: "a \(o.kind.typeName)"))
        }
    }

    // MARK: Persistent ids

    /// Loads a storage persistent id: `('storage', storage_type, key, location, numel)`, plus
    /// `view_metadata` (None, or `(view_key, offset, size)` in pre-0.4 legacy files).
    func persistentLoad(_ pid: Value) throws(TorchPickleError) -> Value {
        guard persistentIDs != .refused else { throw fail(.badPersistentID(reason: "this pickle may not refer to storages")) }
        guard case .object(let t) = pid, t.kind == .tuple, let first = t.items.first else {
            throw fail(.badPersistentID(reason: "a \(pid.typeName), not a tuple"))
        }
        guard let typename = asciiText(first) else { throw fail(.badPersistentID(reason: "type name is not a string")) }
        // 'module' ids (legacy nn.Module classes with their source) and anything else: refused.
        guard typename == "storage" else { throw fail(.refusedPersistentID(kind: typename)) }
        let f = t.items
        guard f.count == 5 || f.count == 6 else { throw fail(.badPersistentID(reason: "\(f.count) fields, expected 5 or 6")) }
        guard case .global(let type) = f[1], case .storageType(let storageDType) = type.kind else {
            throw fail(.badPersistentID(reason: "storage type is a \(f[1].typeName)"))
        }
        guard let dtype = storageDType else { throw fail(.unsupportedDType(type.qualifiedName)) }
        guard let key = asciiText(f[2]) else { throw fail(.badPersistentID(reason: "key is not a string")) }
        guard asciiText(f[3]) != nil else { throw fail(.badPersistentID(reason: "location is not a string")) }
        guard case .int(let numel) = f[4], numel >= 0,
              !numel.multipliedReportingOverflow(by: dtype.byteSize).overflow else {
            throw fail(.badPersistentID(reason: "element count is not a valid size"))
        }
        var view: (offset: Int, count: Int)?
        if f.count == 6 {
            switch f[5] {
            case .none: break
            case .object(let v) where v.kind == .tuple && v.items.count == 3 && persistentIDs == .legacyStorages:
                guard asciiText(v.items[0]) != nil, case .int(let offset) = v.items[1], case .int(let count) = v.items[2],
                      offset >= 0, count >= 0, offset <= numel, count <= numel - offset else {
                    throw fail(.badPersistentID(reason: "view metadata outside the storage"))
                }
                view = (offset, count)
            default:
                throw fail(.badPersistentID(reason: "unexpected sixth field (\(f[5].typeName))"))
            }
        }
        if let declared = storages[key] {
            guard declared.byteCount == numel * dtype.byteSize else {
                throw fail(.badPersistentID(reason: "storage \(quotedForMessage(key)) declared with two sizes"))
            }
        } else {
            storages[key] = StorageDeclaration(dtype: dtype, numel: numel, maxElementSize: dtype.byteSize)
        }
        return .storage(StorageRef(key: key, dtype: dtype, numel: numel, view: view))
    }

    // MARK: Tensor rebuild functions

    /// `_rebuild_tensor{,_v2,_v3}`: validates the arguments' types and records the view; the view
    /// is checked against its storage when the storage has been located (`Conversion.swift`).
    private func rebuildTensor(_ name: String, _ args: [Value], dtypeIndex: Int?,
                               metadataIndex: Int?) throws(TorchPickleError) -> Value {
        guard case .storage(let storage) = args[0] else {
            throw fail(.badArguments(callee: name, reason: "first argument is a \(args[0].typeName), not a storage"))
        }
        guard case .int(let offset) = args[1] else {
            throw fail(.badArguments(callee: name, reason: "storage offset is a \(args[1].typeName)"))
        }
        let shape = try integers(args[2], what: "size", callee: name)
        let strides = try integers(args[3], what: "stride", callee: name)
        guard shape.count == strides.count, shape.count <= TorchPickle.maxRank else {
            throw fail(.badArguments(callee: name, reason: "size has \(shape.count) dimensions and stride \(strides.count) (at most \(TorchPickle.maxRank))"))
        }
        var dtype = storage.dtype
        if let dtypeIndex {
            guard case .global(let g) = args[dtypeIndex], case .dtype(let d) = g.kind else {
                throw fail(.badArguments(callee: name, reason: "dtype argument is a \(args[dtypeIndex].typeName)"))
            }
            guard let d else { throw fail(.unsupportedDType(g.qualifiedName)) }
            dtype = d
        }
        if let metadataIndex, metadataIndex < args.count {
            // torch._utils.get_tensor_metadata: {'neg': bool, 'conj': bool} for lazily negated or
            // conjugated views. A set bit would change the values, so it is refused.
            switch args[metadataIndex] {
            case .none: break
            case .object(let m) where m.kind == .dict(ordered: false) || m.kind == .dict(ordered: true):
                for (k, v) in zip(m.keys, m.items) {
                    if case .bool(true) = v, let flag = asciiText(k) { throw fail(.tensorFlagsUnsupported(flag)) }
                }
            default:
                throw fail(.badArguments(callee: name, reason: "metadata is a \(args[metadataIndex].typeName)"))
            }
        }
        if var declaration = storages[storage.key] {
            declaration.maxElementSize = max(declaration.maxElementSize, dtype.byteSize)
            storages[storage.key] = declaration
        }
        return .tensor(TensorRecord(storage: storage, dtype: dtype, offset: offset, shape: shape, strides: strides))
    }

    /// The ints of a tuple or list (sizes, strides).
    private func integers(_ v: Value, what: String, callee: String) throws(TorchPickleError) -> [Int] {
        guard case .object(let o) = v, o.kind == .tuple || o.kind == .list else {
            throw fail(.badArguments(callee: callee, reason: "\(what) is a \(v.typeName), not a tuple"))
        }
        var out: [Int] = []
        out.reserveCapacity(o.items.count)
        for item in o.items {
            guard case .int(let i) = item else {
                throw fail(.badArguments(callee: callee, reason: "\(what) holds a \(item.typeName)"))
            }
            out.append(i)
        }
        return out
    }

    /// A str, or ASCII bytes (Python 2 files), as text.
    private func asciiText(_ v: Value) -> String? {
        switch v {
        case .string(let s): return s
        case .bytes(let b) where b.allSatisfy({ $0 < 0x80 }): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
    }
}
