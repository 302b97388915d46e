import Tensor

/// The bytes of the file being read: a read-only mapping (tensors are zero-copy windows of it)
/// or an in-memory copy (tests, buffers; tensors are copied out).
final class FileBytes {
    /// The whole file.
    let buffer: UnsafeRawBufferPointer
    private let mapping: MappedFile?
    private let owned: Storage?

    init(mapping: MappedFile) {
        self.mapping = mapping
        self.owned = nil
        self.buffer = UnsafeRawBufferPointer(start: mapping.bytes, count: mapping.byteCount)
    }

    init(copying bytes: [UInt8]) {
        let storage = Storage(uninitializedByteCount: bytes.count)
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress { storage.bytes.copyMemory(from: base, byteCount: src.count) }
        }
        self.mapping = nil
        self.owned = storage
        self.buffer = UnsafeRawBufferPointer(start: storage.bytes, count: bytes.count)
    }

    /// A storage for `count` bytes at `offset` (caller has checked the range lies in the file):
    /// a window of the mapping when `offset` is a multiple of `alignment` (the mapping itself is
    /// page-aligned, so the elements are naturally aligned), else an aligned copy.
    func storage(offset: Int, count: Int, alignment: Int) -> Storage {
        precondition(offset >= 0 && count >= 0 && offset <= buffer.count - count, "storage range checked by the caller")
        if let mapping, offset % max(alignment, 1) == 0 {
            return Storage(mapping: mapping, offset: offset, byteCount: count)
        }
        let copy = Storage(uninitializedByteCount: count)
        if count > 0 { copy.bytes.copyMemory(from: buffer.baseAddress! + offset, byteCount: count) }
        return copy
    }
}
