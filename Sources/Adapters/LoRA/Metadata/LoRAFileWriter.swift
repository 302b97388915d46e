import Foundation
import Host
import SafeTensors
import Tensor

/// Writes a LoRA file with kohya's precomputed hashes recomputed for exactly the tensors
/// written, as sd-scripts' `precalculate_safetensors_hashes(state_dict, metadata)` does:
///
/// - `sshs_model_hash`: SHA-256 of the tensor data of the file `safetensors.torch.save` makes
///   from the tensors and the `ss_*` metadata only — the data section alone, so it equals the
///   addnet hash of the file we write (the same tensors in the same reference order).
/// - `sshs_legacy_hash`: SHA-256 of bytes [0x100000, 0x110000) of that same `ss_*`-only
///   serialisation, first 8 hex digits. It depends on the header's length, which is the same
///   whatever order a Python process puts the metadata keys in.
///
/// A1111 takes `sshs_model_hash` as the LoRA's hash when present (infotext "Lora hashes"), so a
/// stale value would misidentify the file: it is always recomputed, never copied.
///
/// How: the tensors are first written with the `ss_*` metadata only to a temporary file beside
/// the destination (this IS the serialisation kohya hashes); its hashes are read back; then the
/// final file is written from the temporary file's mapped tensors with the full metadata, and
/// the temporary file is removed. LoRA files are small, so the second write costs little.
public enum LoRAFileWriter {
    /// The hashes kohya stores for a file's tensors.
    public struct KohyaHashes: Equatable, Sendable {
        /// `sshs_model_hash` (64 hex digits).
        public let modelHash: String
        /// `sshs_legacy_hash` (8 hex digits).
        public let legacyHash: String
    }

    /// Writes `tensors` (dtype and shape as given) with `metadata` plus recomputed
    /// `sshs_model_hash`/`sshs_legacy_hash` to `path`, atomically. `inputPaths` are files the
    /// tensors come from: the destination may not be one of them. Returns the hashes written.
    @discardableResult
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String], to path: String,
                             inputPaths: [String] = []) throws -> KohyaHashes {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let temporary = (directory as NSString).appendingPathComponent(
            ".\(url.lastPathComponent).sshs.\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        defer { try? FileManager.default.removeItem(atPath: temporary) }

        var first = SafeTensorsWriter(metadata: metadata.filter { $0.key.hasPrefix("ss_") })
        first.inputPaths = inputPaths
        for (name, tensor) in tensors { first.add(name, tensor: tensor) }
        try first.write(to: temporary)

        let hashes = try ModelHashes.compute(fileAt: temporary, isSafeTensors: true)
        let kohya = KohyaHashes(modelHash: hashes.addnet!, legacyHash: hashes.legacy)

        let staged = try SafeTensorsFile(path: temporary)
        var full = metadata
        full["sshs_model_hash"] = kohya.modelHash
        full["sshs_legacy_hash"] = kohya.legacyHash
        var second = SafeTensorsWriter(metadata: full)
        second.inputPaths = inputPaths + [temporary]
        for name in staged.names { second.add(name, tensor: try staged.tensor(named: name)) }
        try second.write(to: path)
        return kohya
    }

    /// kohya's hashes of an existing file's tensors with its `ss_*` metadata (what
    /// `sshs_model_hash`/`sshs_legacy_hash` should say), computed by rewriting it to a
    /// temporary file in `scratchDirectory`.
    public static func expectedHashes(of path: String, scratchDirectory: String = NSTemporaryDirectory()) throws -> KohyaHashes {
        let file = try SafeTensorsFile(path: path)
        let temporary = (scratchDirectory as NSString).appendingPathComponent(
            ".adapterhost-sshs.\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        var writer = SafeTensorsWriter(metadata: file.metadata.filter { $0.key.hasPrefix("ss_") })
        writer.inputPaths = [path]
        for name in file.names { writer.add(name, tensor: try file.tensor(named: name)) }
        try writer.write(to: temporary)
        let hashes = try ModelHashes.compute(fileAt: temporary, isSafeTensors: true)
        return KohyaHashes(modelHash: hashes.addnet!, legacyHash: hashes.legacy)
    }
}
