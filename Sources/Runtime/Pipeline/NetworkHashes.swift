import Foundation
import Host
import SafeTensors

/// A1111's LoRA hash (`NetworkOnDisk`): the file's `sshs_model_hash` metadata when present, else
/// for safetensors kohya's "addnet" hash (SHA-256 of the bytes after the header), for other
/// files the SHA-256 of the whole file. The short hash is its first 12 hex digits.
public enum LoraHash {
    public static func shortHash(path: String, metadata: [String: String]) throws -> String {
        String(try fullHash(path: path, metadata: metadata).prefix(12))
    }

    public static func fullHash(path: String, metadata: [String: String]) throws -> String {
        if let stored = metadata["sshs_model_hash"], !stored.isEmpty { return stored }
        guard path.lowercased().hasSuffix(".safetensors") else { return try SHA256.hash(fileAt: path).hex }
        return try addnetHash(path: path)
    }

    /// SHA-256 of a safetensors file without its 8-byte length and JSON header.
    public static func addnetHash(path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw PipelineError.networkLoadFailed(name: (path as NSString).lastPathComponent, path: path, reason: "cannot open the file")
        }
        defer { try? handle.close() }
        let prefix = try handle.read(upToCount: 8) ?? Data()
        guard prefix.count == 8 else {
            throw PipelineError.networkLoadFailed(name: (path as NSString).lastPathComponent, path: path, reason: "shorter than a safetensors header")
        }
        // The header length is a little-endian UInt64 (safetensors format).
        let headerLength = prefix.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        try handle.seek(toOffset: 8 + headerLength)
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            chunk.withUnsafeBytes { hasher.update($0) }
        }
        return hasher.finalize().hex
    }
}

/// A1111's textual-inversion hash (`Embedding.shorthash`): the first 12 hex digits of the
/// SHA-256 of the whole embedding file, written in the infotext's "TI hashes".
public enum EmbeddingHash {
    public static func shortHash(path: String) throws -> String {
        String(try SHA256.hash(fileAt: path).hex.prefix(12))
    }
}
