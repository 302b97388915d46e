import Tensor

/// The pickle opcodes (protocols 0–5), by byte.
enum Opcode: UInt8 {
    case mark = 0x28, stop = 0x2E, pop = 0x30, popMark = 0x31, dup = 0x32, float = 0x46, int = 0x49
    case binInt = 0x4A, binInt1 = 0x4B, long = 0x4C, binInt2 = 0x4D, none = 0x4E, persID = 0x50
    case binPersID = 0x51, reduce = 0x52, string = 0x53, binString = 0x54, shortBinString = 0x55
    case unicode = 0x56, binUnicode = 0x58, append = 0x61, build = 0x62, global = 0x63, dict = 0x64
    case emptyDict = 0x7D, appends = 0x65, get = 0x67, binGet = 0x68, inst = 0x69, longBinGet = 0x6A
    case list = 0x6C, emptyList = 0x5D, obj = 0x6F, put = 0x70, binPut = 0x71, longBinPut = 0x72
    case setItem = 0x73, tuple = 0x74, emptyTuple = 0x29, setItems = 0x75, binFloat = 0x47
    case proto = 0x80, newObj = 0x81, ext1 = 0x82, ext2 = 0x83, ext4 = 0x84, tuple1 = 0x85
    case tuple2 = 0x86, tuple3 = 0x87, newTrue = 0x88, newFalse = 0x89, long1 = 0x8A, long4 = 0x8B
    case binBytes = 0x42, shortBinBytes = 0x43, shortBinUnicode = 0x8C, binUnicode8 = 0x8D
    case binBytes8 = 0x8E, emptySet = 0x8F, addItems = 0x90, frozenSet = 0x91, newObjEx = 0x92
    case stackGlobal = 0x93, memoize = 0x94, frame = 0x95, byteArray8 = 0x96, nextBuffer = 0x97
    case readonlyBuffer = 0x98

    /// pickletools' name, for messages.
    var name: String {
        switch self {
        case .mark: return "MARK"
        case .stop: return "STOP"
        case .pop: return "POP"
        case .popMark: return "POP_MARK"
        case .dup: return "DUP"
        case .float: return "FLOAT"
        case .int: return "INT"
        case .binInt: return "BININT"
        case .binInt1: return "BININT1"
        case .long: return "LONG"
        case .binInt2: return "BININT2"
        case .none: return "NONE"
        case .persID: return "PERSID"
        case .binPersID: return "BINPERSID"
        case .reduce: return "REDUCE"
        case .string: return "STRING"
        case .binString: return "BINSTRING"
        case .shortBinString: return "SHORT_BINSTRING"
        case .unicode: return "UNICODE"
        case .binUnicode: return "BINUNICODE"
        case .append: return "APPEND"
        case .build: return "BUILD"
        case .global: return "GLOBAL"
        case .dict: return "DICT"
        case .emptyDict: return "EMPTY_DICT"
        case .appends: return "APPENDS"
        case .get: return "GET"
        case .binGet: return "BINGET"
        case .inst: return "INST"
        case .longBinGet: return "LONG_BINGET"
        case .list: return "LIST"
        case .emptyList: return "EMPTY_LIST"
        case .obj: return "OBJ"
        case .put: return "PUT"
        case .binPut: return "BINPUT"
        case .longBinPut: return "LONG_BINPUT"
        case .setItem: return "SETITEM"
        case .tuple: return "TUPLE"
        case .emptyTuple: return "EMPTY_TUPLE"
        case .setItems: return "SETITEMS"
        case .binFloat: return "BINFLOAT"
        case .proto: return "PROTO"
        case .newObj: return "NEWOBJ"
        case .ext1: return "EXT1"
        case .ext2: return "EXT2"
        case .ext4: return "EXT4"
        case .tuple1: return "TUPLE1"
        case .tuple2: return "TUPLE2"
        case .tuple3: return "TUPLE3"
        case .newTrue: return "NEWTRUE"
        case .newFalse: return "NEWFALSE"
        case .long1: return "LONG1"
        case .long4: return "LONG4"
        case .binBytes: return "BINBYTES"
        case .shortBinBytes: return "SHORT_BINBYTES"
        case .shortBinUnicode: return "SHORT_BINUNICODE"
        case .binUnicode8: return "BINUNICODE8"
        case .binBytes8: return "BINBYTES8"
        case .emptySet: return "EMPTY_SET"
        case .addItems: return "ADDITEMS"
        case .frozenSet: return "FROZENSET"
        case .newObjEx: return "NEWOBJ_EX"
        case .stackGlobal: return "STACK_GLOBAL"
        case .memoize: return "MEMOIZE"
        case .frame: return "FRAME"
        case .byteArray8: return "BYTEARRAY8"
        case .nextBuffer: return "NEXT_BUFFER"
        case .readonlyBuffer: return "READONLY_BUFFER"
        }
    }
}

/// A restricted pickle machine: runs the opcodes over a byte stream and builds only plain values,
/// containers and tensor records. Globals are resolved against ``AllowedGlobal`` (refused by name
/// otherwise) and calls are interpreted by this reader (`Calls.swift`); no Python semantics
/// beyond that exist here, so nothing in a file can run.
///
/// Robustness: every read is bounds-checked, every length is compared with what is left before
/// anything is allocated, stack and mark underflows and memo misses are errors, and containers
/// live in an ``ObjectArena`` (no recursive release). Nesting depth, cycles and expansion are
/// checked when the result is converted (`Conversion.swift`), which is the only recursive step.
final class Unpickler {
    /// How persistent ids are treated.
    enum PersistentIDs {
        /// Any persistent id is an error (standalone pickles, the legacy format's header pickles).
        case refused
        /// Storage ids of the zip format: 5 fields (a 6th, if present, must be None).
        case zipStorages
        /// Storage ids of the legacy format: 5 or 6 fields, the 6th being view metadata.
        case legacyStorages
    }

    let file: String
    let stream: String
    let limits: TorchPickle.Limits
    let arena: ObjectArena
    var persistentIDs: PersistentIDs = .refused
    /// Storages the pickles referred to, by key (first reference's dtype and size).
    var storages: [String: StorageDeclaration] = [:]
    /// Opcodes executed so far (bounds the conversion's expansion budget).
    private(set) var opcodeCount = 0
    /// The next byte to read.
    private(set) var position: Int

    private let bytes: UnsafeRawBufferPointer
    private var stack: [Value] = []
    private var marks: [Int] = []
    private var memo: [Int: Value] = [:]
    private var opcodeStart = 0
    private var opcodeName = ""

    /// A machine over `bytes` (which must outlive it), starting at `start`. Positions in
    /// messages are offsets into `bytes`, named `stream`.
    init(bytes: UnsafeRawBufferPointer, start: Int = 0, file: String, stream: String,
         limits: TorchPickle.Limits, arena: ObjectArena) {
        self.bytes = bytes
        self.position = start
        self.file = file
        self.stream = stream
        self.limits = limits
        self.arena = arena
    }

    // MARK: Errors

    var here: TorchPickleError.Position { .init(stream: stream, offset: opcodeStart) }

    func fail(_ rule: TorchPickleError.Rule) -> TorchPickleError { TorchPickleError(file: file, rule: rule) }

    func invalid(_ reason: String) -> TorchPickleError {
        fail(.invalidOperand(opcode: opcodeName, reason: reason, at: here))
    }

    // MARK: Reading the stream

    private var remaining: Int { bytes.count - position }

    private func readBytes(_ count: Int) throws(TorchPickleError) -> UnsafeRawBufferPointer {
        guard count >= 0 else { throw invalid("negative length \(count)") }
        guard count <= remaining else { throw fail(.truncated(at: here)) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<position + count])
        position += count
        return slice
    }

    /// A length operand that must fit in what is left of the stream.
    private func checkedLength(_ length: UInt64) throws(TorchPickleError) -> Int {
        guard length <= UInt64(remaining) else { throw fail(.lengthTooLarge(length: length, at: here)) }
        return Int(length)
    }

    private func readByte() throws(TorchPickleError) -> UInt8 {
        guard position < bytes.count else { throw fail(.truncated(at: here)) }
        defer { position += 1 }
        return bytes[position]
    }

    private func readLE<T: FixedWidthInteger>(_: T.Type) throws(TorchPickleError) -> T {
        let raw = try readBytes(MemoryLayout<T>.size)
        // loadUnaligned: pickle operands sit at arbitrary byte offsets.
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    /// The bytes up to the next newline (consumed, not included).
    private func readLine() throws(TorchPickleError) -> UnsafeRawBufferPointer {
        guard let newline = bytes[position...].firstIndex(of: 0x0A) else { throw fail(.truncated(at: here)) }
        let line = UnsafeRawBufferPointer(rebasing: bytes[position..<newline])
        position = newline + 1
        return line
    }

    private func readLineString() throws(TorchPickleError) -> String {
        guard let s = decodeUTF8(try readLine()) else { throw invalid("text is not valid UTF-8") }
        return s
    }

    private func readUTF8(_ count: Int) throws(TorchPickleError) -> String {
        guard let s = decodeUTF8(try readBytes(count)) else { throw invalid("string is not valid UTF-8") }
        return s
    }

    // MARK: The stack

    /// Python hides everything below the innermost mark from ordinary pops.
    private var fence: Int { marks.last ?? 0 }

    func pop() throws(TorchPickleError) -> Value {
        guard stack.count > fence else { throw fail(.stackUnderflow(opcode: opcodeName, at: here)) }
        return stack.removeLast()
    }

    private func top() throws(TorchPickleError) -> Value {
        guard stack.count > fence else { throw fail(.stackUnderflow(opcode: opcodeName, at: here)) }
        return stack[stack.count - 1]
    }

    private func popMark() throws(TorchPickleError) -> [Value] {
        guard let mark = marks.popLast() else { throw fail(.stackUnderflow(opcode: opcodeName, at: here)) }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    func newObject(_ kind: PickleObject.Kind, items: [Value] = []) throws(TorchPickleError) -> PickleObject {
        guard let o = arena.make(kind, items: items) else { throw fail(.tooManyObjects(limit: limits.maxContainers)) }
        return o
    }

    // MARK: Running

    /// Runs one pickle from the current position to its STOP and returns its value. The memo and
    /// the stack start empty, as for each `pickle.load` call.
    func load() throws(TorchPickleError) -> Value {
        stack = []
        marks = []
        memo = [:]
        while true {
            opcodeStart = position
            let byte = try readByte()
            guard let op = Opcode(rawValue: byte) else { throw fail(.unknownOpcode(byte, at: here)) }
            opcodeName = op.name
            opcodeCount += 1
            if op == .stop {
                let result = try pop()
                stack = []
                marks = []
                memo = [:]
                return result
            }
            try execute(op)
        }
    }

    private func execute(_ op: Opcode) throws(TorchPickleError) {
        switch op {
        case .stop:
            preconditionFailure("STOP is handled by load()")

        // Protocol framing
        case .proto:
            let p = try readByte()
            guard p <= 5 else { throw fail(.unsupportedProtocol(Int(p), at: here)) }
        case .frame:
            // Frames only group opcodes for buffered readers; the length must still be honest.
            _ = try checkedLength(try readLE(UInt64.self))

        // Scalars
        case .none: stack.append(.none)
        case .newTrue: stack.append(.bool(true))
        case .newFalse: stack.append(.bool(false))
        case .binInt: stack.append(.int(Int(try readLE(Int32.self))))
        case .binInt1: stack.append(.int(Int(try readByte())))
        case .binInt2: stack.append(.int(Int(try readLE(UInt16.self))))
        case .long1:
            let n = Int(try readByte())
            stack.append(integer(fromTwosComplement: try readBytes(n)))
        case .long4:
            let n = try readLE(Int32.self)
            guard n >= 0 else { throw invalid("negative byte count \(n)") }
            let count = try checkedLength(UInt64(n))
            stack.append(integer(fromTwosComplement: try readBytes(count)))
        case .int:
            let text = try readLineString()
            if text == "00" { stack.append(.bool(false)) } else if text == "01" { stack.append(.bool(true)) } else {
                stack.append(try decimalInteger(text))
            }
        case .long:
            var text = try readLineString()
            if text.hasSuffix("L") { text.removeLast() }
            stack.append(try decimalInteger(text))
        case .binFloat:
            stack.append(.float(Double(bitPattern: UInt64(bigEndian: try readBytes(8).loadUnaligned(as: UInt64.self)))))
        case .float:
            let text = try readLineString()
            guard let d = Double(text.trimmingASCIISpaces) else { throw invalid("\"\(clipped(text))\" is not a float") }
            stack.append(.float(d))

        // Strings and bytes
        case .binUnicode:
            stack.append(.string(try readUTF8(try checkedLength(UInt64(try readLE(UInt32.self))))))
        case .shortBinUnicode:
            stack.append(.string(try readUTF8(Int(try readByte()))))
        case .binUnicode8:
            stack.append(.string(try readUTF8(try checkedLength(try readLE(UInt64.self)))))
        case .binString:
            let n = try readLE(Int32.self)
            guard n >= 0 else { throw invalid("negative length \(n)") }
            stack.append(pythonTwoString(try readBytes(try checkedLength(UInt64(n)))))
        case .shortBinString:
            stack.append(pythonTwoString(try readBytes(Int(try readByte()))))
        case .binBytes:
            stack.append(.bytes(Array(try readBytes(try checkedLength(UInt64(try readLE(UInt32.self)))))))
        case .shortBinBytes:
            stack.append(.bytes(Array(try readBytes(Int(try readByte())))))
        case .binBytes8, .byteArray8:
            stack.append(.bytes(Array(try readBytes(try checkedLength(try readLE(UInt64.self))))))
        case .string:
            guard let bytes = unescapePythonString(try readLine()) else { throw invalid("malformed quoted string") }
            stack.append(bytes.withUnsafeBytes { pythonTwoString($0) })
        case .unicode:
            guard let s = decodeRawUnicodeEscape(try readLine()) else { throw invalid("malformed raw-unicode-escape text") }
            stack.append(.string(s))

        // Containers
        case .emptyTuple: stack.append(.object(try newObject(.tuple)))
        case .tuple: stack.append(.object(try newObject(.tuple, items: try popMark())))
        case .tuple1, .tuple2, .tuple3:
            let n = Int(op.rawValue - Opcode.tuple1.rawValue) + 1
            guard stack.count - fence >= n else { throw fail(.stackUnderflow(opcode: opcodeName, at: here)) }
            let items = Array(stack.suffix(n))
            stack.removeLast(n)
            stack.append(.object(try newObject(.tuple, items: items)))
        case .emptyList: stack.append(.object(try newObject(.list)))
        case .list: stack.append(.object(try newObject(.list, items: try popMark())))
        case .append:
            let item = try pop()
            try listTarget().items.append(item)
        case .appends:
            let items = try popMark()
            try listTarget().items.append(contentsOf: items)
        case .emptyDict: stack.append(.object(try newObject(.dict(ordered: false))))
        case .dict:
            let items = try popMark()
            let d = try newObject(.dict(ordered: false))
            try setItems(items, into: d)
            stack.append(.object(d))
        case .setItem:
            let value = try pop()
            let key = try pop()
            try setItems([key, value], into: try dictTarget())
        case .setItems:
            let items = try popMark()
            try setItems(items, into: try dictTarget())
        case .emptySet: stack.append(.object(try newObject(.set(frozen: false))))
        case .addItems:
            let items = try popMark()
            guard case .object(let s) = try top(), s.kind == .set(frozen: false) else {
                throw invalid("target is not a set")
            }
            try addToSet(items, s)
        case .frozenSet:
            let items = try popMark()
            let s = try newObject(.set(frozen: true))
            try addToSet(items, s)
            stack.append(.object(s))

        // Stack manipulation
        case .mark: marks.append(stack.count)
        case .pop:
            if stack.count > fence { stack.removeLast() } else { _ = try popMark() }
        case .popMark: _ = try popMark()
        case .dup: stack.append(try top())

        // Memo
        case .put:
            let text = try readLineString()
            guard let index = Int(text), index >= 0 else { throw invalid("memo index \"\(clipped(text))\" is not a number") }
            memo[index] = try top()
        case .binPut: memo[Int(try readByte())] = try top()
        case .longBinPut: memo[Int(try readLE(UInt32.self))] = try top()
        case .memoize: memo[memo.count] = try top()
        case .get:
            let text = try readLineString()
            guard let index = Int(text), index >= 0 else { throw invalid("memo index \"\(clipped(text))\" is not a number") }
            try pushMemo(index)
        case .binGet: try pushMemo(Int(try readByte()))
        case .longBinGet: try pushMemo(Int(try readLE(UInt32.self)))

        // Globals and calls (interpreted in Calls.swift)
        case .global:
            let module = try readLineString()
            let name = try readLineString()
            stack.append(.global(try resolveGlobal(module: module, name: name)))
        case .stackGlobal:
            let name = try pop()
            let module = try pop()
            guard case .string(let m) = module, case .string(let n) = name else {
                throw invalid("module and name must be strings")
            }
            stack.append(.global(try resolveGlobal(module: m, name: n)))
        case .reduce:
            let args = try pop()
            let callee = try pop()
            stack.append(try call(callee, arguments: args))
        case .newObj:
            let args = try pop()
            let cls = try pop()
            stack.append(try instantiate(cls, arguments: args, keywords: nil))
        case .newObjEx:
            let keywords = try pop()
            let args = try pop()
            let cls = try pop()
            stack.append(try instantiate(cls, arguments: args, keywords: keywords))
        case .build:
            let state = try pop()
            try build(try top(), state: state)
        case .inst:
            // The class is named inline: refuse it by name first, then refuse the opcode itself
            // (torch never writes INST; it calls the class with arbitrary arguments).
            let module = try readLineString()
            let name = try readLineString()
            _ = try resolveGlobal(module: module, name: name)
            throw fail(.unsupportedOpcode(opcodeName, at: here))
        case .obj, .ext1, .ext2, .ext4, .nextBuffer, .readonlyBuffer:
            // OBJ calls a class already named by GLOBAL; EXT names globals through the copyreg
            // extension registry (not checkable by name); buffers are out-of-band data.
            throw fail(.unsupportedOpcode(opcodeName, at: here))

        // Persistent ids (storages)
        case .persID:
            // Protocol 0 text ids; torch's ids are tuples, which need BINPERSID.
            let text = try readLineString()
            stack.append(try persistentLoad(.string(text)))
        case .binPersID:
            stack.append(try persistentLoad(try pop()))
        }
    }

    private func pushMemo(_ index: Int) throws(TorchPickleError) {
        guard let v = memo[index] else { throw fail(.memoMiss(index: index, at: here)) }
        stack.append(v)
    }

    private func listTarget() throws(TorchPickleError) -> PickleObject {
        guard case .object(let o) = try top(), o.kind == .list else { throw invalid("target is not a list") }
        return o
    }

    private func dictTarget() throws(TorchPickleError) -> PickleObject {
        guard case .object(let o) = try top(), case .dict = o.kind else { throw invalid("target is not a dict") }
        return o
    }

    /// Sets `items` (key, value, key, value, …) into `dict`, with Python's key equality.
    private func setItems(_ items: [Value], into dict: PickleObject) throws(TorchPickleError) {
        guard items.count % 2 == 0 else { throw invalid("odd number of items for a dict") }
        var i = 0
        while i < items.count {
            let key = items[i], value = items[i + 1]
            let identity = try keyIdentity(key, depth: 0)
            if let existing = dict.index[identity] {
                dict.items[existing] = value  // Python keeps the first key object and position
            } else {
                dict.index[identity] = dict.keys.count
                dict.keys.append(key)
                dict.items.append(value)
            }
            i += 2
        }
    }

    func addToSet(_ items: [Value], _ set: PickleObject) throws(TorchPickleError) {
        for item in items {
            let identity = try keyIdentity(item, depth: 0)
            if set.index[identity] == nil {
                set.index[identity] = set.items.count
                set.items.append(item)
            }
        }
    }

    /// Python hash equality for a key (bool/int/integral float are one key). Tuples of hashable
    /// values and frozensets are hashable; lists, dicts, sets and tensors are not accepted as keys.
    func keyIdentity(_ v: Value, depth: Int) throws(TorchPickleError) -> KeyIdentity {
        guard depth < limits.maxNestingDepth else { throw fail(.nestingTooDeep(limit: limits.maxNestingDepth)) }
        switch v {
        case .none: return .none
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .bigInt(let b): return .bigInt(b)
        case .float(let d):
            if d.rounded() == d, let i = Int(exactly: d) { return .int(i) }
            return .float(d.bitPattern)
        case .string(let s): return .string(s)
        case .bytes(let b): return .bytes(b)
        case .global(let g): return .global(g.qualifiedName)
        case .object(let o) where o.kind == .tuple:
            var parts: [KeyIdentity] = []
            for item in o.items { parts.append(try keyIdentity(item, depth: depth + 1)) }
            return .tuple(parts)
        case .object(let o) where o.kind == .set(frozen: true):
            var parts: [KeyIdentity] = []
            for item in o.items { parts.append(try keyIdentity(item, depth: depth + 1)) }
            return .frozenset(parts.sorted { "\($0)" < "\($1)" })
        default:
            throw fail(.unhashableKey(type: v.typeName))
        }
    }

    // MARK: Scalar decoding

    /// LONG1/LONG4 payload: little-endian two's complement; beyond 64 bits kept as bytes.
    private func integer(fromTwosComplement raw: UnsafeRawBufferPointer) -> Value {
        let bytes = Array(raw)
        guard !bytes.isEmpty else { return .int(0) }
        let negative = bytes[bytes.count - 1] & 0x80 != 0
        let fill: UInt8 = negative ? 0xFF : 0x00
        // Fits in Int64 when every byte past the 8th is sign fill and the 8th byte's top bit agrees.
        if bytes.count <= 8 || (bytes[8...].allSatisfy { $0 == fill } && (bytes[7] & 0x80 != 0) == negative) {
            var u: UInt64 = 0
            for i in 0..<8 { u |= UInt64(i < bytes.count ? bytes[i] : fill) << (8 * UInt64(i)) }
            return .int(Int(Int64(bitPattern: u)))
        }
        return .bigInt(canonicalTwosComplement(bytes))
    }

    /// INT/LONG text operands: decimal, beyond 64 bits kept as two's-complement bytes (up to
    /// 80 digits; torch's legacy magic number is 24 digits).
    private func decimalInteger(_ text: String) throws(TorchPickleError) -> Value {
        let trimmed = text.trimmingASCIISpaces
        if let i = Int(trimmed) { return .int(i) }
        var digits = Substring(trimmed)
        let negative = digits.first == "-"
        if negative || digits.first == "+" { digits.removeFirst() }
        guard !digits.isEmpty, digits.count <= 80, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw invalid("\"\(clipped(text))\" is not a decimal integer")
        }
        // Magnitude as little-endian bytes: repeated multiply by 10 and add.
        var magnitude: [UInt8] = [0]
        for d in digits.utf8 {
            var carry = Int(d - 0x30)
            for i in magnitude.indices {
                let v = Int(magnitude[i]) * 10 + carry
                magnitude[i] = UInt8(v & 0xFF)
                carry = v >> 8
            }
            while carry > 0 { magnitude.append(UInt8(carry & 0xFF)); carry >>= 8 }
        }
        magnitude.append(0)  // room for the sign bit
        if negative {  // two's complement: invert and add one
            var carry = 1
            for i in magnitude.indices {
                let v = Int(~magnitude[i]) + carry
                magnitude[i] = UInt8(v & 0xFF)
                carry = v >> 8
            }
        }
        return .bigInt(canonicalTwosComplement(magnitude))
    }

    /// Protocol 0–2 byte strings (Python 2 `str`): a string when valid UTF-8 (torch.load decodes
    /// them as UTF-8), else bytes.
    private func pythonTwoString(_ raw: UnsafeRawBufferPointer) -> Value {
        if let s = decodeUTF8(raw) { return .string(s) }
        return .bytes(Array(raw))
    }
}

/// Two's-complement little-endian bytes without redundant sign-extension bytes (one spelling
/// per number, so big integers compare by value).
func canonicalTwosComplement(_ bytes: [UInt8]) -> [UInt8] {
    var b = bytes
    while b.count > 1 {
        let last = b[b.count - 1], previousHigh = b[b.count - 2] & 0x80 != 0
        guard (last == 0x00 && !previousHigh) || (last == 0xFF && previousHigh) else { break }
        b.removeLast()
    }
    return b
}

/// Strict UTF-8 decoding (nil when invalid).
func decodeUTF8(_ raw: UnsafeRawBufferPointer) -> String? {
    let s = String(decoding: raw, as: UTF8.self)
    // Invalid sequences decode to U+FFFD, which changes the bytes.
    return s.utf8.elementsEqual(raw) ? s : nil
}

/// STRING's operand: a Python repr in single or double quotes, with backslash escapes.
func unescapePythonString(_ line: UnsafeRawBufferPointer) -> [UInt8]? {
    var body = Array(line)
    while let last = body.last, last == 0x20 || last == 0x0D { body.removeLast() }
    guard body.count >= 2, body[0] == body[body.count - 1], body[0] == 0x27 || body[0] == 0x22 else { return nil }
    body = Array(body[1..<body.count - 1])
    var out: [UInt8] = []
    var i = 0
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    while i < body.count {
        let c = body[i]
        guard c == 0x5C, i + 1 < body.count else { out.append(c); i += 1; continue }
        let e = body[i + 1]
        i += 2
        switch e {
        case 0x5C: out.append(0x5C)
        case 0x27: out.append(0x27)
        case 0x22: out.append(0x22)
        case 0x61: out.append(0x07)
        case 0x62: out.append(0x08)
        case 0x66: out.append(0x0C)
        case 0x6E: out.append(0x0A)
        case 0x72: out.append(0x0D)
        case 0x74: out.append(0x09)
        case 0x76: out.append(0x0B)
        case 0x0A: break
        case 0x78:
            guard i + 1 < body.count, let h = hex(body[i]), let l = hex(body[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        case 0x30...0x37:
            var v = Int(e - 0x30)
            var digits = 1
            while digits < 3, i < body.count, (0x30...0x37).contains(body[i]) {
                v = v * 8 + Int(body[i] - 0x30)
                i += 1
                digits += 1
            }
            out.append(UInt8(truncatingIfNeeded: v))
        default:
            out.append(0x5C)
            out.append(e)
        }
    }
    return out
}

/// UNICODE's operand: raw-unicode-escape (bytes are Latin-1 except `\uXXXX` and `\UXXXXXXXX`).
func decodeRawUnicodeEscape(_ line: UnsafeRawBufferPointer) -> String? {
    let b = Array(line)
    var scalars = String.UnicodeScalarView()
    var i = 0
    while i < b.count {
        if b[i] == 0x5C, i + 1 < b.count, b[i + 1] == 0x75 || b[i + 1] == 0x55 {
            let width = b[i + 1] == 0x75 ? 4 : 8
            guard i + 2 + width <= b.count else { return nil }
            var value: UInt32 = 0
            for c in b[(i + 2)..<(i + 2 + width)] {
                guard let digit = Character(Unicode.Scalar(c)).hexDigitValue else { return nil }
                value = value << 4 | UInt32(digit)
            }
            guard let scalar = Unicode.Scalar(value) else { return nil }
            scalars.append(scalar)
            i += 2 + width
        } else {
            scalars.append(Unicode.Scalar(b[i]))
            i += 1
        }
    }
    return String(scalars)
}

extension String {
    /// Without leading and trailing ASCII spaces, tabs and carriage returns.
    var trimmingASCIISpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
