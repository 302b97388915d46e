/// Why a PyTorch file could not be read.
///
/// Every failure of ``TorchFile`` and ``TorchPickle/parse(_:file:limits:)`` is one of these: it
/// names the file and the rule that was broken. `description` is one line,
/// `<file>: <rule>`, with control characters in names from the file escaped so that a hostile
/// name cannot forge extra lines of output. Rules about the pickle stream name the stream
/// (`archive/data.pkl`, or `pickle` plus the file offset for the legacy format) and the byte.
public struct TorchPickleError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file being read.
    public let file: String
    /// The rule that was broken.
    public let rule: Rule

    public init(file: String, rule: Rule) {
        self.file = file
        self.rule = rule
    }

    /// `<file>: <rule>`, one line.
    public var description: String { "\(escapedForMessage(file)): \(rule)" }

    /// A byte position in a pickle stream: the stream's name and the offset of the opcode.
    public struct Position: Equatable, Sendable, CustomStringConvertible {
        /// `archive/data.pkl` for the zip format, `pickle` for the legacy format.
        public let stream: String
        /// Offset of the opcode (zip: within data.pkl; legacy: within the file).
        public let offset: Int
        public init(stream: String, offset: Int) {
            self.stream = stream
            self.offset = offset
        }
        public var description: String { "\(escapedForMessage(stream)) byte \(offset)" }
    }

    /// The rules of the containers, the pickle machine, the allow-list and tensor views.
    public enum Rule: Equatable, Sendable, CustomStringConvertible {
        // MARK: Opening and containers
        /// The file could not be opened or mapped (the system's reason).
        case cannotOpen(reason: String)
        /// Neither a zip archive nor a legacy torch pickle.
        case notATorchFile
        /// The pre-0.4 tar format.
        case legacyTarFormat
        /// A structural problem in the zip archive (end record, central directory, local header).
        case zipMalformed(reason: String)
        /// A zip entry uses compression (torch.save writes stored entries only).
        case zipCompressedEntry(entry: String, method: Int)
        /// A zip entry is encrypted.
        case zipEncryptedEntry(entry: String)
        /// Two zip entries have the same name (readers disagree on which one wins).
        case zipDuplicateEntry(entry: String)
        /// No `<root>/data.pkl`, or more than one root folder holding one.
        case zipNoDataPickle(candidates: [String])
        /// A TorchScript archive (torch.jit.save), whose pickles name code, not data.
        case torchScriptArchive
        /// The `byteorder` record says the data is big-endian.
        case bigEndian
        /// A record the pickle refers to is missing from the archive.
        case missingRecord(name: String)

        // MARK: Legacy format
        /// The first pickle is not torch's magic number.
        case legacyBadMagic
        /// The second pickle is not protocol version 1001.
        case legacyBadProtocolVersion(String)
        /// The sys_info pickle is malformed or says big-endian.
        case legacyBadSysInfo(reason: String)
        /// The storage keys pickle is not a list of strings.
        case legacyBadStorageKeys
        /// A storage in the data section does not match what the pickle declared.
        case legacyStorageMismatch(key: String, reason: String)

        // MARK: Pickle machine
        /// The stream ends inside an opcode or before STOP.
        case truncated(at: Position)
        /// A byte that is not a pickle opcode.
        case unknownOpcode(UInt8, at: Position)
        /// An opcode that is valid pickle but never needed to read tensors (named), refused.
        case unsupportedOpcode(String, at: Position)
        /// An opcode needs more stack items than there are (or a mark that is not there).
        case stackUnderflow(opcode: String, at: Position)
        /// A memo index that was never stored.
        case memoMiss(index: Int, at: Position)
        /// A length field larger than what is left of the stream.
        case lengthTooLarge(length: UInt64, at: Position)
        /// An opcode got an operand of the wrong kind (the reason says which).
        case invalidOperand(opcode: String, reason: String, at: Position)
        /// Protocol number above 5.
        case unsupportedProtocol(Int, at: Position)
        /// Containers nested deeper than the limit.
        case nestingTooDeep(limit: Int)
        /// A container that contains itself.
        case cyclicReference
        /// Shared references expand to more values than the limit (a "billion laughs" pickle).
        case expansionLimit(limit: Int)
        /// More containers than the limit.
        case tooManyObjects(limit: Int)
        /// The stream holds more than one pickle or ends without STOP where one was expected.
        case trailingData(at: Position)

        // MARK: Allow-list
        /// A global outside the allow-list. Nothing is looked up, imported or called.
        case refusedGlobal(module: String, name: String)
        /// An allowed global that is a type tag or a class reference, called by REDUCE/NEWOBJ.
        case notCallable(callee: String)
        /// A callable global called with arguments it never gets from torch.save.
        case badArguments(callee: String, reason: String)
        /// BUILD (set state) on an object that never receives state from torch.save.
        case buildRefused(target: String)
        /// A persistent id that is not a storage (e.g. a pickled nn.Module class in the legacy format).
        case refusedPersistentID(kind: String)
        /// A malformed storage persistent id.
        case badPersistentID(reason: String)
        /// A dictionary key of a type that cannot be a key here.
        case unhashableKey(type: String)

        // MARK: Tensors and storages
        /// A storage or tensor dtype the reader does not support (named as torch names it).
        case unsupportedDType(String)
        /// A tensor view that addresses elements outside its storage, or invalid sizes/strides.
        case tensorOutOfBounds(storage: String, reason: String)
        /// A storage record whose size differs from what the pickle says.
        case storageSizeMismatch(key: String, expectedBytes: Int, actualBytes: Int)
        /// A tensor with the negative or conjugate bit set (lazy views this reader cannot apply).
        case tensorFlagsUnsupported(String)
        /// Two values flatten to the same dotted key.
        case duplicateFlattenedKey(String)

        public var description: String {
            switch self {
            case .cannotOpen(let reason):
                return "cannot open: \(escapedForMessage(reason))"
            case .notATorchFile:
                return "not a PyTorch file (neither a zip archive nor a legacy torch pickle)"
            case .legacyTarFormat:
                return "PyTorch's pre-0.4 tar format is not supported"
            case .zipMalformed(let reason):
                return "malformed zip archive: \(reason)"
            case .zipCompressedEntry(let entry, let method):
                return "zip entry \(quotedForMessage(entry)) is compressed (method \(method)); "
                    + "torch.save writes stored entries only, and only those can be mapped without copying"
            case .zipEncryptedEntry(let entry):
                return "zip entry \(quotedForMessage(entry)) is encrypted"
            case .zipDuplicateEntry(let entry):
                return "zip entry \(quotedForMessage(entry)) appears twice"
            case .zipNoDataPickle(let candidates):
                return candidates.isEmpty
                    ? "zip archive has no <root>/data.pkl (not a torch.save file)"
                    : "zip archive has several data.pkl roots: \(candidates.map(quotedForMessage).joined(separator: ", "))"
            case .torchScriptArchive:
                return "a TorchScript archive (torch.jit.save) holds code, not just data; refused"
            case .bigEndian:
                return "byteorder record says big-endian; only little-endian files are supported"
            case .missingRecord(let name):
                return "zip archive lacks the record \(quotedForMessage(name))"
            case .legacyBadMagic:
                return "legacy format: first pickle is not torch's magic number"
            case .legacyBadProtocolVersion(let v):
                return "legacy format: protocol version \(escapedForMessage(v)), expected 1001"
            case .legacyBadSysInfo(let reason):
                return "legacy format: sys_info \(reason)"
            case .legacyBadStorageKeys:
                return "legacy format: storage keys pickle is not a list of strings"
            case .legacyStorageMismatch(let key, let reason):
                return "legacy format: storage \(quotedForMessage(key)): \(reason)"
            case .truncated(let at):
                return "pickle truncated (\(at))"
            case .unknownOpcode(let byte, let at):
                return "unknown pickle opcode 0x\(String(byte, radix: 16)) (\(at))"
            case .unsupportedOpcode(let name, let at):
                return "pickle opcode \(name) is not supported (\(at))"
            case .stackUnderflow(let opcode, let at):
                return "\(opcode) needs more stack items than there are (\(at))"
            case .memoMiss(let index, let at):
                return "memo index \(index) was never stored (\(at))"
            case .lengthTooLarge(let length, let at):
                return "length \(length) runs past the end of the pickle (\(at))"
            case .invalidOperand(let opcode, let reason, let at):
                return "\(opcode): \(reason) (\(at))"
            case .unsupportedProtocol(let p, let at):
                return "pickle protocol \(p) is not supported (\(at))"
            case .nestingTooDeep(let limit):
                return "containers nested deeper than \(limit) levels"
            case .cyclicReference:
                return "a container contains itself"
            case .expansionLimit(let limit):
                return "shared references expand to more than \(limit) values"
            case .tooManyObjects(let limit):
                return "more than \(limit) containers"
            case .trailingData(let at):
                return "unexpected data after the pickle (\(at))"
            case .refusedGlobal(let module, let name):
                return "refuses global \(escapedForMessage(clipped(module))).\(escapedForMessage(clipped(name))) "
                    + "(only tensor rebuild functions, storage types and OrderedDict are allowed)"
            case .notCallable(let callee):
                return "refuses to call \(escapedForMessage(callee)) (allowed as a type tag or value only; "
                    + "only tensor rebuild functions, OrderedDict, set, bytes and torch.Size are called)"
            case .badArguments(let callee, let reason):
                return "\(escapedForMessage(callee)): \(reason)"
            case .buildRefused(let target):
                return "refuses to set the state of \(target) (BUILD)"
            case .refusedPersistentID(let kind):
                return "refuses persistent id \(quotedForMessage(kind)) (only storages are allowed)"
            case .badPersistentID(let reason):
                return "malformed storage persistent id: \(reason)"
            case .unhashableKey(let type):
                return "dictionary key of type \(type) is not supported"
            case .unsupportedDType(let name):
                return "dtype \(escapedForMessage(name)) is not supported (supported: "
                    + "F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 I16 I8 U8 BOOL)"
            case .tensorOutOfBounds(let storage, let reason):
                return "tensor view on storage \(quotedForMessage(storage)): \(reason)"
            case .storageSizeMismatch(let key, let expected, let actual):
                return "storage \(quotedForMessage(key)) should hold \(expected) bytes but its record has \(actual)"
            case .tensorFlagsUnsupported(let flag):
                return "tensor has the \(escapedForMessage(flag)) bit set (not supported)"
            case .duplicateFlattenedKey(let key):
                return "two values flatten to the key \(quotedForMessage(key))"
            }
        }
    }
}

/// At most 200 characters of `s` (names from a hostile file can be megabytes long).
func clipped(_ s: String) -> String {
    s.count <= 200 ? s : String(s.prefix(200)) + "…"
}

/// `s` in double quotes with quotes, backslashes and control characters escaped (JSON style).
func quotedForMessage(_ s: String) -> String { "\"" + escapedForMessage(clipped(s), escapeQuotes: true) + "\"" }

/// `s` with control characters (and optionally quotes and backslashes) escaped, so a message
/// stays on one line whatever the names in a file contain.
func escapedForMessage(_ s: String, escapeQuotes: Bool = false) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"" where escapeQuotes: out += "\\\""
        case "\\" where escapeQuotes: out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                     || scalar.value == 0x2028 || scalar.value == 0x2029:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}
