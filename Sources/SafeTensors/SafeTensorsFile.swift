import Tensor

/// A safetensors file opened for reading: memory-mapped, with only the header parsed.
///
/// Opening maps the file and reads the 8-byte length prefix and the JSON header, nothing
/// else: tensor data is not touched until a tensor is read, and then only its pages are
/// faulted in. The whole header is validated before `init` returns (see
/// ``SafeTensorsError/Rule`` for the rules), so a file that opens is a file whose every
/// tensor can be read; a file that breaks a rule never yields a partial result.
///
/// Tensors are zero-copy views of the mapping (`Tensor` over `Storage(mapping:...)`); they
/// keep the mapping alive after this object is gone. As with any mmap, truncating the file
/// from another process while views exist makes reading them fault (SIGBUS); writing
/// through ``SafeTensorsWriter`` (temporary file + rename) never does that.
///
/// Thread safety: immutable after `init`; any number of threads may read concurrently.
public final class SafeTensorsFile: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable and the mapping is read-only.

    /// The path the file was opened from.
    public let path: String
    /// Size of the file in bytes.
    public let fileSize: Int
    /// Length of the JSON header in bytes (N, excluding the 8-byte length prefix).
    public let headerByteCount: Int
    /// The `__metadata__` entries (empty when the file has none).
    public let metadata: [String: String]
    /// Every tensor's header entry, in header ("file") order.
    public let tensorInfos: [TensorInfo]
    /// Device and inode of the file that was mapped.
    public let identity: FileIdentity

    private let mapping: MappedFile
    private let indexByName: [String: Int]

    /// Opens `path`, maps it and validates its header. Reads no tensor data.
    public init(path: String) throws(SafeTensorsError) {
        let mapping: MappedFile
        do {
            mapping = try MappedFile(path: path)
        } catch let error as MappedFile.OpenError {
            throw SafeTensorsError(file: path, rule: .cannotOpen(reason: error.reason))
        } catch {
            throw SafeTensorsError(file: path, rule: .cannotOpen(reason: "\(error)"))
        }
        // Identity taken right after mapping: the path could in principle be replaced in
        // between, in which case the registry protects the replacement instead; the window
        // is a few microseconds and only matters to a concurrent writer in another process.
        guard let identity = FileIdentity(path: path) else {
            throw SafeTensorsError(file: path, rule: .cannotOpen(reason: "file vanished while opening"))
        }
        let fileSize = mapping.byteCount
        let (headerByteCount, parsed) = try Self.validate(
            UnsafeRawBufferPointer(start: mapping.bytes, count: fileSize), file: path)

        self.path = path
        self.mapping = mapping
        self.identity = identity
        self.fileSize = fileSize
        self.headerByteCount = headerByteCount
        self.metadata = parsed.metadata
        self.tensorInfos = parsed.tensors
        self.indexByName = parsed.indexByName
        OpenFileRegistry.register(mapping, identity: identity)
    }

    /// Checks the whole file layout (length prefix, header, data section size) of `bytes`,
    /// the complete file contents, reading only the prefix and the header.
    static func validate(_ bytes: UnsafeRawBufferPointer,
                         file: String) throws(SafeTensorsError) -> (headerByteCount: Int, header: ParsedHeader) {
        let fileSize = bytes.count
        let prefix = SafeTensorsFormat.lengthPrefixSize
        guard fileSize >= prefix else { throw SafeTensorsError(file: file, rule: .fileTooSmall(size: fileSize)) }
        // loadUnaligned: the mapping is page-aligned, but a test buffer need not be.
        let length = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard length <= UInt64(SafeTensorsFormat.maxHeaderLength) else {
            throw SafeTensorsError(file: file, rule: .headerTooLarge(length: length))
        }
        // length <= 1e8 here, so the conversion and the subtraction below cannot overflow.
        guard Int(length) <= fileSize - prefix else {
            throw SafeTensorsError(file: file, rule: .headerBeyondFile(length: length, fileSize: fileSize))
        }
        let headerByteCount = Int(length)
        let dataStart = prefix + headerByteCount
        let header = UnsafeRawBufferPointer(rebasing: bytes[prefix..<dataStart])
        let parsed = try HeaderParser.parse(header: header, dataStart: dataStart,
                                            dataSectionSize: fileSize - dataStart, file: file)
        return (headerByteCount, parsed)
    }

    /// Absolute file offset of the data section (8 + ``headerByteCount``).
    public var dataStart: Int { SafeTensorsFormat.lengthPrefixSize + headerByteCount }

    /// Tensor names in header ("file") order.
    public var names: [String] { tensorInfos.map(\.name) }

    /// Tensor names sorted by their UTF-8 bytes (= code point order, locale-independent).
    public var sortedNames: [String] { names.sorted(by: utf8Precedes) }

    /// Total number of elements over all tensors.
    public var parameterCount: Int { tensorInfos.reduce(0) { $0 + $1.elementCount } }

    /// True when the file has a tensor named `name`.
    public func contains(_ name: String) -> Bool { indexByName[name] != nil }

    /// The header entry for `name` (dtype, shape, byte range), without touching its data.
    public func info(named name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let i = indexByName[name] else { throw SafeTensorsError(file: path, tensor: name, rule: .tensorNotFound) }
        return tensorInfos[i]
    }

    /// The tensor `name` as stored: a zero-copy view of the mapped file.
    ///
    /// Exception: when the data's file offset is not a multiple of the element size (a
    /// legal but unusual layout that the reference writer never produces), the bytes are
    /// copied into an aligned owned buffer, because typed loads of misaligned elements are
    /// undefined behaviour in Swift and C.
    public func tensor(named name: String) throws(SafeTensorsError) -> Tensor {
        let info = try info(named: name)
        let range = info.fileRange
        if info.isAligned {
            // Validated at open: the range lies inside the file.
            let storage = Storage(mapping: mapping, offset: range.lowerBound, byteCount: range.count)
            return Tensor(storage: storage, dtype: info.dtype, shape: info.shape)
        }
        let storage = Storage(uninitializedByteCount: range.count)
        storage.bytes.copyMemory(from: mapping.bytes + range.lowerBound, byteCount: range.count)
        return Tensor(storage: storage, dtype: info.dtype, shape: info.shape)
    }

    /// The tensor `name` converted to F32 (vectorized kernels; no copy when it is F32).
    public func f32Tensor(named name: String) throws(SafeTensorsError) -> Tensor {
        try tensor(named: name).to(.f32)
    }
}

/// Orders strings by their UTF-8 bytes, as Rust's `String: Ord` (and the reference writer) do.
func utf8Precedes(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}
