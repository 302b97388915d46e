import Tensor

/// A PyTorch file (`.pt`, `.ckpt`, `.bin`, `.pth`) read safely: the unpickled object with its
/// tensors, plus a flattened view (dotted keys) of its tensors and plain values.
///
/// Formats: the zip format of torch ≥ 1.6 (`<root>/data.pkl`, `<root>/data/<key>`, `byteorder`,
/// any root folder name, ZIP64 included) and the legacy format (magic number, protocol version,
/// sys_info, the object, the storage keys, then raw storages each prefixed by its element count).
///
/// Safety: the pickles run on a restricted machine that calls nothing; every global outside a
/// short allow-list is refused by name (see ``TorchPickleError/Rule/refusedGlobal(module:name:)``).
/// Every length, offset, size and stride is checked against the file before use, so a hostile
/// or damaged file yields a ``TorchPickleError``, never a crash.
///
/// Tensors: zip records are stored uncompressed and torch aligns them to 64 bytes, so tensors
/// opened from a path are zero-copy views of the mapped file (as with safetensors: truncating the
/// file from another process while views exist makes reading them fault). Records that are not
/// aligned to their element size (archives rewritten by other zip tools, most legacy files) are
/// copied once. Non-contiguous views (transposes, slices, stride-0 expands) keep their strides and
/// share one storage, as in torch.
///
/// Thread safety: immutable after `init`.
public final class TorchFile: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable; tensors are read-only views.

    /// The container format.
    public enum Format: Equatable, Sendable {
        /// torch ≥ 1.6 zip archive, with the name of its root folder.
        case zip(root: String)
        /// The pre-1.6 stream of pickles followed by raw storages.
        case legacy
    }

    /// The path the file was opened from (or the name given for in-memory bytes).
    public let path: String
    /// Which container the file uses.
    public let format: Format
    /// The unpickled object, tensors included.
    public let root: PickleValue
    /// Tensor keys in file order: nested dicts joined with ".", list/tuple elements by index
    /// (e.g. `string_to_param.*`, `768.0.linear.0.weight`). A bare tensor at the root has key "".
    public let keys: [String]
    /// Non-tensor leaves under the same dotted keys (ints, floats, strings, bools, None, bytes,
    /// and lists/tuples/sets of such): e.g. `name`, `step`, `layer_structure`.
    public let values: [String: PickleValue]
    /// The keys of `values` in file order.
    public let valueKeys: [String]

    private let tensorsByKey: [String: Tensor]

    /// Opens, maps and reads `path`. Tensors are zero-copy views of the mapping where aligned.
    public convenience init(path: String, limits: TorchPickle.Limits = TorchPickle.Limits()) throws(TorchPickleError) {
        let mapping: MappedFile
        do {
            mapping = try MappedFile(path: path)
        } catch let error as MappedFile.OpenError {
            throw TorchPickleError(file: path, rule: .cannotOpen(reason: error.reason))
        } catch {
            throw TorchPickleError(file: path, rule: .cannotOpen(reason: "\(error)"))
        }
        try self.init(source: FileBytes(mapping: mapping), path: path, limits: limits)
    }

    /// Reads a file's contents from memory (`name` is used in messages). Tensors are copies.
    public convenience init(bytes: [UInt8], name: String = "<memory>",
                            limits: TorchPickle.Limits = TorchPickle.Limits()) throws(TorchPickleError) {
        try self.init(source: FileBytes(copying: bytes), path: name, limits: limits)
    }

    private init(source: FileBytes, path: String, limits: TorchPickle.Limits) throws(TorchPickleError) {
        let loaded = try Self.load(source, file: path, limits: limits)
        let flat = try flatten(loaded.root, file: path)
        self.path = path
        self.format = loaded.format
        self.root = loaded.root
        self.keys = flat.tensors.map(\.key)
        self.tensorsByKey = Dictionary(flat.tensors.map { ($0.key, $0.tensor) }, uniquingKeysWith: { first, _ in first })
        self.valueKeys = flat.values.map(\.key)
        self.values = Dictionary(flat.values.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    /// The tensor at a flattened key, or nil.
    public func tensor(named key: String) -> Tensor? { tensorsByKey[key] }

    // MARK: Loading

    private static func load(_ source: FileBytes, file: String,
                             limits: TorchPickle.Limits) throws(TorchPickleError) -> (root: PickleValue, format: Format) {
        let bytes = source.buffer
        if ZipArchive.looksLikeZip(bytes) {
            return try loadZip(source, file: file, limits: limits)
        }
        // tar archives carry "ustar" at offset 257 (torch < 0.4 wrote its own tar format).
        if bytes.count >= 262, Array(bytes[257..<262]) == Array("ustar".utf8) {
            throw TorchPickleError(file: file, rule: .legacyTarFormat)
        }
        return (try loadLegacy(source, file: file, limits: limits), .legacy)
    }

    private static func loadZip(_ source: FileBytes, file: String,
                                limits: TorchPickle.Limits) throws(TorchPickleError) -> (root: PickleValue, format: Format) {
        let archive = try ZipArchive(bytes: source.buffer, file: file)
        // The root folder is whatever holds data.pkl (torch names it after the file, or "archive").
        let roots = archive.entries.compactMap { e -> String? in
            let parts = e.name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl" && !parts[0].isEmpty ? String(parts[0]) : nil
        }
        guard roots.count == 1, let root = roots.first else {
            throw TorchPickleError(file: file, rule: .zipNoDataPickle(candidates: roots))
        }
        if archive.entry(named: "\(root)/constants.pkl") != nil
            || archive.entries.contains(where: { $0.name.hasPrefix("\(root)/code/") }) {
            throw TorchPickleError(file: file, rule: .torchScriptArchive)
        }
        let pickleName = "\(root)/data.pkl"
        // The entry exists: `root` was taken from its name.
        let pickle = try archive.data(of: archive.entry(named: pickleName)!)
        if let order = archive.entry(named: "\(root)/byteorder") {
            switch Array(try archive.data(of: order)) {
            case Array("little".utf8): break
            case Array("big".utf8): throw TorchPickleError(file: file, rule: .bigEndian)
            default: throw TorchPickleError(file: file, rule: .zipMalformed(reason: "byteorder record is neither \"little\" nor \"big\""))
            }
        }

        let arena = ObjectArena(limit: limits.maxContainers)
        defer { arena.tearDown() }
        let machine = Unpickler(bytes: pickle, file: file, stream: pickleName, limits: limits, arena: arena)
        machine.persistentIDs = .zipStorages
        let value = try machine.load()
        let locator = ZipStorageLocator(archive: archive, source: source, root: root, file: file,
                                        declarations: machine.storages)
        var converter = Converter(file: file, limits: limits, locator: locator, opcodeCount: machine.opcodeCount)
        return (try converter.convert(value), .zip(root: root))
    }
}

/// Storages of the zip format: record `<root>/data/<key>`, exactly the declared size.
private final class ZipStorageLocator: StorageLocator {
    let archive: ZipArchive
    let source: FileBytes
    let root: String
    let file: String
    let declarations: [String: StorageDeclaration]
    private var cache: [String: Storage] = [:]

    init(archive: ZipArchive, source: FileBytes, root: String, file: String, declarations: [String: StorageDeclaration]) {
        self.archive = archive
        self.source = source
        self.root = root
        self.file = file
        self.declarations = declarations
    }

    func storage(forKey key: String) throws(TorchPickleError) -> Storage {
        if let s = cache[key] { return s }
        let name = "\(root)/data/\(key)"
        guard let entry = archive.entry(named: name) else { throw TorchPickleError(file: file, rule: .missingRecord(name: name)) }
        let range = try archive.dataRange(of: entry)
        // Every key a tensor refers to was declared by its persistent id.
        let declaration = declarations[key]!
        guard range.count == declaration.byteCount else {
            throw TorchPickleError(file: file, rule: .storageSizeMismatch(key: key, expectedBytes: declaration.byteCount,
                                                                           actualBytes: range.count))
        }
        let s = source.storage(offset: range.lowerBound, count: range.count, alignment: declaration.maxElementSize)
        cache[key] = s
        return s
    }
}
