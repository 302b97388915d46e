import Tensor

/// Finds the bytes of a storage key (zip record or legacy data section), once per key.
protocol StorageLocator: AnyObject {
    /// The storage holding key's bytes (exactly the storage, its size checked against the pickle).
    func storage(forKey key: String) throws(TorchPickleError) -> Storage
}

/// Turns the machine's values into ``PickleValue``s, making tensors over located storages.
///
/// This is the one recursive step, so it enforces the structural limits: nesting depth, cycles
/// (a container reached again on the current path), and an expansion budget proportional to the
/// number of opcodes run plus a fixed allowance (shared references may repeat a subtree, but a
/// legitimate file does not expand exponentially).
struct Converter {
    let file: String
    let limits: TorchPickle.Limits
    let locator: StorageLocator?
    private var budget: Int
    private let budgetLimit: Int
    private var onPath: Set<ObjectIdentifier> = []

    init(file: String, limits: TorchPickle.Limits, locator: StorageLocator?, opcodeCount: Int) {
        self.file = file
        self.limits = limits
        self.locator = locator
        let (scaled, o1) = opcodeCount.multipliedReportingOverflow(by: limits.expansionFactor)
        let (total, o2) = scaled.addingReportingOverflow(limits.expansionAllowance)
        self.budgetLimit = o1 || o2 ? Int.max : total
        self.budget = budgetLimit
    }

    private func fail(_ rule: TorchPickleError.Rule) -> TorchPickleError { TorchPickleError(file: file, rule: rule) }

    mutating func convert(_ value: Value, depth: Int = 0) throws(TorchPickleError) -> PickleValue {
        budget -= 1
        guard budget >= 0 else { throw fail(.expansionLimit(limit: budgetLimit)) }
        switch value {
        case .none: return .none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .bigInt(let b): return .bigInt(b)
        case .float(let d): return .float(d)
        case .string(let s): return .string(s)
        case .bytes(let b): return .bytes(b)
        case .global(let g): return .global(module: g.module, name: g.name)
        case .storage(let ref):
            // A storage saved on its own reads as a 1-D tensor over all of it.
            let count = ref.view?.count ?? ref.numel
            return .tensor(try makeTensor(TensorRecord(storage: ref, dtype: ref.dtype, offset: 0, shape: [count], strides: [1])))
        case .tensor(let record):
            return .tensor(try makeTensor(record))
        case .object(let o):
            guard !onPath.contains(ObjectIdentifier(o)) else { throw fail(.cyclicReference) }
            guard depth < limits.maxNestingDepth else { throw fail(.nestingTooDeep(limit: limits.maxNestingDepth)) }
            onPath.insert(ObjectIdentifier(o))
            defer { onPath.remove(ObjectIdentifier(o)) }
            switch o.kind {
            case .list: return .list(try convertAll(o.items, depth: depth + 1))
            case .tuple: return .tuple(try convertAll(o.items, depth: depth + 1))
            case .set: return .set(try convertAll(o.items, depth: depth + 1))
            case .dict:
                var entries: [(key: PickleValue, value: PickleValue)] = []
                entries.reserveCapacity(o.keys.count)
                for (k, v) in zip(o.keys, o.items) {
                    entries.append((try convert(k, depth: depth + 1), try convert(v, depth: depth + 1)))
                }
                return .dict(PickleDict(entries: entries))
            case .parameterDict:
                // The parameters live in the module's `_parameters` OrderedDict; the rest of its
                // __dict__ (hooks, training flag, …) is module machinery and is dropped.
                guard case .object(let state)? = o.state,
                      let i = state.keys.firstIndex(where: { if case .string("_parameters") = $0 { return true } else { return false } }),
                      case .object(let parameters) = state.items[i], case .dict = parameters.kind else {
                    throw fail(.badArguments(callee: "torch.nn.modules.container.ParameterDict",
                                             reason: "state has no _parameters dict"))
                }
                return try convert(.object(parameters), depth: depth + 1)
            }
        }
    }

    private mutating func convertAll(_ items: [Value], depth: Int) throws(TorchPickleError) -> [PickleValue] {
        var out: [PickleValue] = []
        out.reserveCapacity(items.count)
        for item in items { out.append(try convert(item, depth: depth)) }
        return out
    }

    /// The tensor a record describes, after checking it lies inside its storage.
    private func makeTensor(_ record: TensorRecord) throws(TorchPickleError) -> Tensor {
        guard let locator else { throw fail(.badPersistentID(reason: "this pickle may not refer to storages")) }
        let ref = record.storage
        let storage = try locator.storage(forKey: ref.key)
        let elementSize = record.dtype.byteSize
        // The window the tensor may address: the whole storage, or a legacy storage view.
        var windowStart = 0, windowBytes = storage.byteCount
        if let view = ref.view {
            windowStart = view.offset * ref.dtype.byteSize  // offset + count ≤ numel checked at load
            windowBytes = view.count * ref.dtype.byteSize
        }
        func outOfBounds(_ reason: String) -> TorchPickleError {
            fail(.tensorOutOfBounds(storage: ref.key, reason: reason))
        }
        guard windowStart % elementSize == 0 else { throw outOfBounds("storage view does not start on a \(record.dtype.rawValue) element") }
        try Self.checkView(shape: record.shape, strides: record.strides, offset: record.offset,
                           dtype: record.dtype, elements: windowBytes / elementSize, fail: outOfBounds)
        return Tensor(storage: storage, dtype: record.dtype, shape: record.shape, strides: record.strides,
                      offset: windowStart / elementSize + record.offset)
    }

    /// Checks that (shape, strides, offset) addresses only elements `0..<elements`, with no
    /// arithmetic overflow anywhere `Tensor` computes with them (so its preconditions hold).
    static func checkView(shape: [Int], strides: [Int], offset: Int, dtype: DType, elements: Int,
                          fail: (String) -> TorchPickleError) throws(TorchPickleError) {
        guard offset >= 0 else { throw fail("negative storage offset \(offset)") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw fail("negative size in \(shape)") }
        guard strides.allSatisfy({ $0 >= 0 }) else { throw fail("negative stride in \(strides)") }
        // Tensor.count multiplies the sizes left to right, then by the element size.
        var count = 1
        for d in shape {
            let (c, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("size \(shape) overflows") }
            count = c
        }
        guard !count.multipliedReportingOverflow(by: dtype.byteSize).overflow else { throw fail("size \(shape) overflows") }
        if count == 0 {
            guard offset <= elements else { throw fail("offset \(offset) is past the end of a storage of \(elements) elements") }
            return
        }
        var last = offset
        for (d, s) in zip(shape, strides) {
            let (step, o1) = (d - 1).multipliedReportingOverflow(by: s)
            let (sum, o2) = last.addingReportingOverflow(step)
            guard !o1, !o2 else { throw fail("size \(shape) with stride \(strides) overflows") }
            last = sum
        }
        guard last < elements else {
            throw fail("size \(shape), stride \(strides), offset \(offset) reach element \(last) of a storage of \(elements) elements")
        }
    }
}
