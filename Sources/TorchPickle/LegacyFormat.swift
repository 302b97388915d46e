import Tensor

/// torch's legacy magic number 0x1950a86a20f9469cfc6c as pickle's little-endian two's complement.
private let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

extension TorchFile {
    /// The pre-1.6 format (`_use_new_zipfile_serialization=False`): five pickles — magic number,
    /// protocol version 1001, sys_info, the object, the sorted storage keys — then, for each key
    /// in that order, an 8-byte little-endian element count and the storage's raw bytes.
    static func loadLegacy(_ source: FileBytes, file: String,
                           limits: TorchPickle.Limits) throws(TorchPickleError) -> PickleValue {
        let bytes = source.buffer
        func fail(_ rule: TorchPickleError.Rule) -> TorchPickleError { TorchPickleError(file: file, rule: rule) }
        // torch writes the magic as PROTO … LONG1 (protocol ≥ 2) or as text LONG (protocols 0/1).
        guard let first = bytes.first, first == Opcode.proto.rawValue || first == Opcode.long.rawValue else {
            throw fail(.notATorchFile)
        }
        let arena = ObjectArena(limit: limits.maxContainers)
        defer { arena.tearDown() }
        let machine = Unpickler(bytes: bytes, file: file, stream: "pickle", limits: limits, arena: arena)

        guard case .bigInt(let magic) = try machine.load(), magic == legacyMagic else { throw fail(.legacyBadMagic) }
        let version = try machine.load()
        guard case .int(1001) = version else {
            if case .int(let v) = version { throw fail(.legacyBadProtocolVersion(String(v))) }
            throw fail(.legacyBadProtocolVersion("of type \(version.typeName)"))
        }
        guard case .object(let sysInfo) = try machine.load(), case .dict = sysInfo.kind else {
            throw fail(.legacyBadSysInfo(reason: "is not a dict"))
        }
        for (k, v) in zip(sysInfo.keys, sysInfo.items) {
            if case .string("little_endian") = k, case .bool(false) = v { throw fail(.legacyBadSysInfo(reason: "says big-endian")) }
        }

        machine.persistentIDs = .legacyStorages
        let root = try machine.load()
        machine.persistentIDs = .refused

        guard case .object(let keyList) = try machine.load(), keyList.kind == .list else { throw fail(.legacyBadStorageKeys) }
        var keys: [String] = []
        for item in keyList.items {
            guard case .string(let key) = item else { throw fail(.legacyBadStorageKeys) }
            keys.append(key)
        }

        // The data section: each storage's element count (in units of the declared dtype), then its bytes.
        var ranges: [String: Range<Int>] = [:]
        var position = machine.position
        for key in keys {
            func mismatch(_ reason: String) -> TorchPickleError { fail(.legacyStorageMismatch(key: key, reason: reason)) }
            guard let declaration = machine.storages[key] else { throw mismatch("is not referred to by the pickle") }
            guard ranges[key] == nil else { throw mismatch("is listed twice") }
            guard position <= bytes.count - 8 else { throw mismatch("element count runs past the end of the file (offset \(position))") }
            let count = Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: Int64.self))
            guard count == Int64(declaration.numel) else {
                throw mismatch("data section holds \(count) elements, the pickle declared \(declaration.numel)")
            }
            position += 8
            let byteCount = declaration.byteCount
            guard byteCount <= bytes.count - position else {
                throw mismatch("\(byteCount) bytes at offset \(position) run past the end of the file")
            }
            ranges[key] = position..<(position + byteCount)
            position += byteCount
        }
        for key in machine.storages.keys where ranges[key] == nil {
            throw fail(.legacyStorageMismatch(key: key, reason: "has no data"))
        }

        let locator = LegacyStorageLocator(source: source, ranges: ranges, declarations: machine.storages)
        var converter = Converter(file: file, limits: limits, locator: locator, opcodeCount: machine.opcodeCount)
        return try converter.convert(root)
    }
}

/// Storages of the legacy format: ranges found in the data section.
private final class LegacyStorageLocator: StorageLocator {
    let source: FileBytes
    let ranges: [String: Range<Int>]
    let declarations: [String: StorageDeclaration]
    private var cache: [String: Storage] = [:]

    init(source: FileBytes, ranges: [String: Range<Int>], declarations: [String: StorageDeclaration]) {
        self.source = source
        self.ranges = ranges
        self.declarations = declarations
    }

    func storage(forKey key: String) throws(TorchPickleError) -> Storage {
        if let s = cache[key] { return s }
        // Every declared key has a range (checked after the data section was read).
        let range = ranges[key]!, declaration = declarations[key]!
        let s = source.storage(offset: range.lowerBound, count: range.count, alignment: declaration.maxElementSize)
        cache[key] = s
        return s
    }
}
