import Foundation
import Tensor

/// The device and inode of a file: equal identities mean the same file, whatever the path.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    /// The identity of the file at `path` (following symlinks), or nil when it does not exist.
    public init?(path: String) {
        guard let id = MappedFile.identity(ofPath: path) else { return nil }
        self.device = id.dev
        self.inode = id.ino
    }
}

/// Files this process has mapped through ``SafeTensorsFile``, for as long as the mapping lives.
///
/// An entry lives exactly as long as its `MappedFile`: tensor views keep the mapping alive
/// after the `SafeTensorsFile` itself is gone, and the writer must still refuse to replace
/// such a file. Entries hold the mapping weakly, so the registry never extends its life.
enum OpenFileRegistry {
    private final class Entry {
        weak var mapping: MappedFile?
        let identity: FileIdentity
        init(mapping: MappedFile, identity: FileIdentity) {
            self.mapping = mapping
            self.identity = identity
        }
    }

    private static let lock = NSLock()
    // Guarded by `lock`.
    nonisolated(unsafe) private static var entries: [Entry] = []

    /// Records that `mapping` (a view of the file `identity`) is open for reading.
    static func register(_ mapping: MappedFile, identity: FileIdentity) {
        lock.lock()
        defer { lock.unlock() }
        entries.removeAll { $0.mapping == nil }
        entries.append(Entry(mapping: mapping, identity: identity))
    }

    /// True while any live mapping of the file `identity` exists in this process.
    static func isOpen(_ identity: FileIdentity) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        entries.removeAll { $0.mapping == nil }
        return entries.contains { $0.identity == identity }
    }
}
