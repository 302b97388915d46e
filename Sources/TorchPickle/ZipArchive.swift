/// The central directory of a zip archive held in memory (a mapped file), read without copying.
///
/// Scope: what `torch.save` writes and what other writers might produce from it — stored
/// entries, the classic end record or the ZIP64 end record + locator, ZIP64 extended
/// information in central headers, data descriptors (sizes are taken from the central
/// directory). Deflated, encrypted and multi-disk archives are refused with a named error:
/// torch.save never writes them, and a compressed record could not be a zero-copy tensor anyway.
/// CRCs are not verified (that would read every tensor at open; a mapped file is read lazily).
struct ZipArchive {
    struct Entry {
        let name: String
        let flags: UInt16
        let method: UInt16
        let compressedSize: Int
        let uncompressedSize: Int
        let localHeaderOffset: Int
    }

    /// Entries in central-directory order.
    let entries: [Entry]
    private let indexByName: [String: Int]
    private let bytes: UnsafeRawBufferPointer
    private let file: String

    private static let localHeaderSignature: UInt32 = 0x0403_4B50
    private static let centralHeaderSignature: UInt32 = 0x0201_4B50
    private static let endSignature: UInt32 = 0x0605_4B50
    private static let zip64EndSignature: UInt32 = 0x0606_4B50
    private static let zip64LocatorSignature: UInt32 = 0x0706_4B50

    /// True when `bytes` starts like a zip archive (a local header, or the end record of an empty one).
    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        let sig = UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self))
        return sig == localHeaderSignature || sig == endSignature
    }

    /// Reads the end record and the central directory of `bytes` (the whole file).
    init(bytes: UnsafeRawBufferPointer, file: String) throws(TorchPickleError) {
        self.bytes = bytes
        self.file = file
        let r = Reader(bytes: bytes, file: file)

        // End of central directory: 22 bytes + a comment of up to 65535, searched from the end.
        var endOffset: Int?
        if bytes.count >= 22 {
            var p = bytes.count - 22
            let lowest = max(0, bytes.count - 22 - 65535)
            while p >= lowest {
                // First byte of the signature ("P") checked alone: this loop may visit 64 KiB.
                if bytes[p] == 0x50, r.u32(p) == Self.endSignature, let comment = r.u16(p + 20),
                   p + 22 + Int(comment) <= bytes.count {
                    endOffset = p
                    break
                }
                p -= 1
            }
        }
        guard let end = endOffset else { throw r.error("no end of central directory record") }

        var entryCount = Int(try r.need(r.u16(end + 10)))
        var directorySize = Int(try r.need(r.u32(end + 12)))
        var directoryOffset = Int(try r.need(r.u32(end + 16)))
        var directoryLimit = end  // the directory must end before the record(s) that describe it
        guard try r.need(r.u16(end + 4)) == 0, try r.need(r.u16(end + 6)) == 0 else {
            throw r.error("multi-disk archives are not supported")
        }
        // ZIP64: a locator right before the end record points at the ZIP64 end record.
        if end >= 20, r.u32(end - 20) == Self.zip64LocatorSignature {
            let recordOffset = try r.int(try r.need(r.u64(end - 12)), "ZIP64 end record offset")
            guard recordOffset <= end - 20 - 56, r.u32(recordOffset) == Self.zip64EndSignature else {
                throw r.error("ZIP64 locator does not point at a ZIP64 end record")
            }
            entryCount = try r.int(try r.need(r.u64(recordOffset + 32)), "entry count")
            directorySize = try r.int(try r.need(r.u64(recordOffset + 40)), "central directory size")
            directoryOffset = try r.int(try r.need(r.u64(recordOffset + 48)), "central directory offset")
            directoryLimit = recordOffset
        }
        guard directoryOffset <= directoryLimit, directorySize <= directoryLimit - directoryOffset else {
            throw r.error("central directory (offset \(directoryOffset), \(directorySize) bytes) lies outside the archive")
        }
        // Each central header is at least 46 bytes: bounds the count before anything is allocated.
        guard entryCount <= directorySize / 46 else {
            throw r.error("\(entryCount) entries cannot fit in a central directory of \(directorySize) bytes")
        }

        var entries: [Entry] = []
        entries.reserveCapacity(entryCount)
        var index: [String: Int] = [:]
        var p = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for _ in 0..<entryCount {
            guard p <= directoryEnd - 46, r.u32(p) == Self.centralHeaderSignature else {
                throw r.error("central directory entry \(entries.count) is malformed")
            }
            let flags = try r.need(r.u16(p + 8))
            let method = try r.need(r.u16(p + 10))
            var compressed = UInt64(try r.need(r.u32(p + 20)))
            var uncompressed = UInt64(try r.need(r.u32(p + 24)))
            let nameLength = Int(try r.need(r.u16(p + 28)))
            let extraLength = Int(try r.need(r.u16(p + 30)))
            let commentLength = Int(try r.need(r.u16(p + 32)))
            let disk = try r.need(r.u16(p + 34))
            var localOffset = UInt64(try r.need(r.u32(p + 42)))
            let next = p + 46 + nameLength + extraLength + commentLength  // ≤ p + 46 + 3·65535: no overflow
            guard next <= directoryEnd else { throw r.error("central directory entry \(entries.count) runs past the directory") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(p + 46)..<(p + 46 + nameLength)]), as: UTF8.self)

            // ZIP64 extended information: 8-byte values for the fields saturated at 0xFFFFFFFF, in
            // the order uncompressed size, compressed size, local header offset (then disk).
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = try r.need(r.u16(e)), size = Int(try r.need(r.u16(e + 2)))
                let body = e + 4
                guard body + size <= extraEnd else { throw r.error("extra field of \(quotedForMessage(name)) runs past its header") }
                if id == 0x0001 {
                    var q = body
                    func next64() throws(TorchPickleError) -> UInt64 {
                        guard q + 8 <= body + size else { throw r.error("ZIP64 extra field of \(quotedForMessage(name)) is too short") }
                        defer { q += 8 }
                        return try r.need(r.u64(q))
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next64() }
                    if compressed == 0xFFFF_FFFF { compressed = try next64() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next64() }
                }
                e = body + size
            }
            guard disk == 0 || disk == 0xFFFF else { throw r.error("multi-disk archives are not supported") }
            let entry = Entry(
                name: name, flags: flags, method: method,
                compressedSize: try r.int(compressed, "compressed size of \(quotedForMessage(name))"),
                uncompressedSize: try r.int(uncompressed, "size of \(quotedForMessage(name))"),
                localHeaderOffset: try r.int(localOffset, "offset of \(quotedForMessage(name))"))
            guard index[name] == nil else { throw TorchPickleError(file: file, rule: .zipDuplicateEntry(entry: name)) }
            index[name] = entries.count
            entries.append(entry)
            p = next
        }
        self.entries = entries
        self.indexByName = index
    }

    /// The entry called `name`, if any.
    func entry(named name: String) -> Entry? { indexByName[name].map { entries[$0] } }

    /// The byte range of a stored entry's data, after checking its local header.
    func dataRange(of entry: Entry) throws(TorchPickleError) -> Range<Int> {
        let r = Reader(bytes: bytes, file: file)
        guard entry.flags & 0x1 == 0 else { throw TorchPickleError(file: file, rule: .zipEncryptedEntry(entry: entry.name)) }
        guard entry.method == 0 else {
            throw TorchPickleError(file: file, rule: .zipCompressedEntry(entry: entry.name, method: Int(entry.method)))
        }
        guard entry.compressedSize == entry.uncompressedSize else {
            throw r.error("stored entry \(quotedForMessage(entry.name)) has different compressed and uncompressed sizes")
        }
        let p = entry.localHeaderOffset
        guard p <= bytes.count - 30, r.u32(p) == Self.localHeaderSignature else {
            throw r.error("no local header for \(quotedForMessage(entry.name)) at offset \(p)")
        }
        let start = p + 30 + Int(try r.need(r.u16(p + 26))) + Int(try r.need(r.u16(p + 28)))
        guard start <= bytes.count, entry.compressedSize <= bytes.count - start else {
            throw r.error("data of \(quotedForMessage(entry.name)) runs past the end of the file")
        }
        return start..<(start + entry.compressedSize)
    }

    /// The data of a stored entry (a view of the archive's bytes).
    func data(of entry: Entry) throws(TorchPickleError) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[try dataRange(of: entry)])
    }

    /// Bounds-checked little-endian reads (nil past the end).
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        let file: String

        func u16(_ at: Int) -> UInt16? { load(at) }
        func u32(_ at: Int) -> UInt32? { load(at) }
        func u64(_ at: Int) -> UInt64? { load(at) }

        private func load<T: FixedWidthInteger>(_ at: Int) -> T? {
            guard at >= 0, at <= bytes.count - MemoryLayout<T>.size else { return nil }
            // loadUnaligned: zip fields sit at arbitrary offsets.
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
        }

        func need<T>(_ v: T?) throws(TorchPickleError) -> T {
            guard let v else { throw error("a header runs past the end of the file") }
            return v
        }

        func int(_ v: UInt64, _ what: String) throws(TorchPickleError) -> Int {
            guard v <= UInt64(Int.max) else { throw error("\(what) \(v) is out of range") }
            return Int(v)
        }

        func error(_ reason: String) -> TorchPickleError {
            TorchPickleError(file: file, rule: .zipMalformed(reason: reason))
        }
    }
}
