#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Bytes a tensor lives in: either memory this process owns or a window into a
/// memory-mapped file. A storage keeps its owner (the mapping) alive, so a view
/// stays valid for as long as any tensor refers to it.
public final class Storage: @unchecked Sendable {
    // @unchecked Sendable: the bytes are only written through `mutableBytes`, which callers use
    // on tensors they have just created (owned, not yet shared); mapped storage is read-only.

    /// First byte.
    public let bytes: UnsafeMutableRawPointer
    /// Size in bytes.
    public let byteCount: Int
    /// False for file mappings (mapped PROT_READ: writing would fault).
    public let isWritable: Bool
    private let owner: AnyObject?
    private let ownsAllocation: Bool

    /// Allocates `byteCount` bytes, 64-byte aligned, zero-filled.
    public init(zeroedByteCount byteCount: Int) {
        let size = max(byteCount, 1)
        var raw: UnsafeMutableRawPointer? = nil
        // posix_memalign: 64-byte alignment suits AVX-512 loads and cache lines.
        guard posix_memalign(&raw, 64, size) == 0, let raw else {
            fatalError("out of memory allocating \(byteCount) bytes")
        }
        adviseHugePages(raw, byteCount: size) // before the first write (Convert.swift says why)
        memset(raw, 0, size)
        self.bytes = raw
        self.byteCount = byteCount
        self.isWritable = true
        self.owner = nil
        self.ownsAllocation = true
    }

    /// Allocates without zero-filling; for outputs that are fully written before being read.
    public init(uninitializedByteCount byteCount: Int) {
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 64, max(byteCount, 1)) == 0, let raw else {
            fatalError("out of memory allocating \(byteCount) bytes")
        }
        // Large fresh outputs (matmul results, adapter terms) fault once per 2 MiB instead of
        // per 4 KiB on first touch (Convert.swift's adviseHugePages: ≥ 4 MiB, madvise only).
        adviseHugePages(raw, byteCount: byteCount)
        self.bytes = raw
        self.byteCount = byteCount
        self.isWritable = true
        self.owner = nil
        self.ownsAllocation = true
    }

    /// A window of `byteCount` bytes at `offset` into a mapped file (zero-copy).
    public init(mapping: MappedFile, offset: Int, byteCount: Int) {
        precondition(offset >= 0 && byteCount >= 0 && offset + byteCount <= mapping.byteCount)
        self.bytes = mapping.bytes + offset
        self.byteCount = byteCount
        self.isWritable = false
        self.owner = mapping
        self.ownsAllocation = false
    }

    deinit {
        if ownsAllocation { free(bytes) }
    }

    /// True when this storage is a view into a mapped file.
    public var isMapped: Bool { owner is MappedFile }
}

/// A whole file mapped read-only into memory. Unmapped when the last view goes away.
public final class MappedFile: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the mapping is PROT_READ.

    /// The file's path, for messages.
    public let path: String
    /// First byte of the mapping (a valid dummy pointer for an empty file).
    public let bytes: UnsafeMutableRawPointer
    /// File size in bytes.
    public let byteCount: Int
    private let mapped: Bool

    /// Errors opening or mapping a file.
    public struct OpenError: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Opens and maps `path` read-only.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OpenError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw OpenError(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw OpenError(path: path, reason: "not a regular file")
        }
        let size = Int(st.st_size)
        self.byteCount = size
        if size == 0 {
            // mmap of length 0 is invalid; an empty file gets a dummy, never-dereferenced pointer.
            self.bytes = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64)
            self.mapped = false
            return
        }
        // MAP_PRIVATE + PROT_READ: nothing we do can write to the file through this mapping.
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw OpenError(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        self.bytes = p
        self.mapped = true
    }

    deinit {
        if mapped { munmap(bytes, byteCount) } else { bytes.deallocate() }
    }

    /// The device and inode of the file, to tell whether two paths are the same file.
    public static func identity(ofPath path: String) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }
}
