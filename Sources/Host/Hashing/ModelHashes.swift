import Foundation

/// The file hashes Stable Diffusion tools identify models by, computed in one read of the file.
///
/// - `sha256`: SHA-256 of the whole file (A1111's `calculate_sha256`, Civitai's "SHA256").
/// - `autoV2`: its first 10 hex digits — A1111's checkpoint `shorthash`, shown as "Model hash"
///   in PNG infotext (Civitai's "AutoV2").
/// - `addnet`: SHA-256 of the bytes after the safetensors header (offset 8 + N, N = the
///   little-endian header length), the hash of sd-webui-additional-networks' and kohya's
///   `addnet_hash_safetensors`. A1111 identifies LoRA files by it (`use_addnet_hash`, or the
///   file's `sshs_model_hash`, which kohya precomputes the same way) and writes its first 12
///   hex digits as "Lora hashes" in infotext (Civitai's "AutoV3"). Independent of metadata.
/// - `legacy`: SHA-256 of the 0x10000 bytes at offset 0x100000, first 8 hex digits: A1111's old
///   `model_hash` (Civitai's "AutoV1") and kohya's `sshs_legacy_hash` (`addnet_hash_legacy`).
///   A file shorter than 0x100000 bytes hashes the empty string, as Python's `read` returns b"".
public struct ModelHashes: Equatable, Sendable {
    /// Lower-case hex SHA-256 of the whole file.
    public let sha256: String
    /// Lower-case hex SHA-256 of the tensor data of a safetensors file (nil for other files).
    public let addnet: String?
    /// First 8 hex digits of SHA-256 over bytes [0x100000, 0x110000).
    public let legacy: String

    /// A1111's checkpoint short hash: the first 10 hex digits of `sha256`.
    public var autoV2: String { String(sha256.prefix(10)) }
    /// A1111's LoRA short hash (infotext "Lora hashes"): the first 12 hex digits of `addnet`.
    public var addnetShort: String? { addnet.map { String($0.prefix(12)) } }

    /// Where the legacy hash reads: 64 KiB at 1 MiB.
    public static let legacyRange = 0x100000..<0x110000

    /// Hashes the file at `path`, reading it once. `isSafeTensors` nil: a file whose name ends
    /// in `.safetensors` (as A1111 decides) gets the addnet hash.
    public static func compute(fileAt path: String, isSafeTensors: Bool? = nil) throws -> ModelHashes {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ModelHashError(path: path, reason: "cannot open the file")
        }
        defer { try? handle.close() }
        let safeTensors = isSafeTensors ?? path.lowercased().hasSuffix(".safetensors")
        // Heap cells so the two hashers can be updated from the two iterations of one
        // concurrentPerform (each iteration touches only its own cell).
        let whole = UnsafeMutablePointer<SHA256>.allocate(capacity: 1), data = UnsafeMutablePointer<SHA256>.allocate(capacity: 1)
        whole.initialize(to: SHA256())
        data.initialize(to: SHA256())
        defer {
            whole.deinitialize(count: 1); whole.deallocate()
            data.deinitialize(count: 1); data.deallocate()
        }
        var legacy = SHA256()
        // The data section starts after the 8-byte length prefix and the header.
        var dataOffset: UInt64? = nil
        var position: UInt64 = 0
        while true {
            guard let chunk = try handle.read(upToCount: 8 << 20), !chunk.isEmpty else { break }
            chunk.withUnsafeBytes { raw in
                if safeTensors && dataOffset == nil && position == 0 && raw.count >= 8 {
                    let n = raw.loadUnaligned(as: UInt64.self).littleEndian
                    // A header length past the file makes the data section empty (Python seeks
                    // past the end and reads nothing); the sum cannot overflow for sane files.
                    dataOffset = n > UInt64.max - 8 ? UInt64.max : n + 8
                }
                let start = position, end = position + UInt64(raw.count)
                // The two hashers that see this chunk run side by side.
                let dataFrom = dataOffset.map { max($0, start) } ?? end
                let hashData = safeTensors && dataFrom < end
                DispatchQueue.concurrentPerform(iterations: hashData ? 2 : 1) { part in
                    if part == 0 {
                        whole.pointee.update(raw)
                    } else {
                        data.pointee.update(UnsafeRawBufferPointer(rebasing: raw[Int(dataFrom - start)...]))
                    }
                }
                let lo = max(start, UInt64(legacyRange.lowerBound)), hi = min(end, UInt64(legacyRange.upperBound))
                if lo < hi { legacy.update(UnsafeRawBufferPointer(rebasing: raw[Int(lo - start)..<Int(hi - start)])) }
                position = end
            }
        }
        if safeTensors && dataOffset == nil && position < 8 {
            throw ModelHashError(path: path, reason: "a safetensors file needs an 8-byte header length, the file has \(position) bytes")
        }
        return ModelHashes(sha256: whole.pointee.finalize().hex, addnet: safeTensors ? data.pointee.finalize().hex : nil,
                           legacy: String(legacy.finalize().hex.prefix(8)))
    }

    public init(sha256: String, addnet: String?, legacy: String) {
        self.sha256 = sha256
        self.addnet = addnet
        self.legacy = legacy
    }
}

/// A file could not be hashed.
public struct ModelHashError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): cannot hash: \(reason)" }
}
