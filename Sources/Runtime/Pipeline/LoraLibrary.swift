import Foundation
import Host
import SafeTensors
import TorchPickle

/// The LoRA files of a directory, by name, as A1111's Lora extension lists them
/// (`models/Lora`): every `.safetensors`, `.pt` and `.ckpt` file under the directory,
/// searched recursively (symbolic links followed), named by its file stem. When two files share
/// a stem, the last one in walk order wins (A1111's dictionary overwrite; walk order: folders,
/// then files, in natural sort order) and a warning names both. Unlike A1111, dot files and
/// dot folders are skipped (macOS `._*` metadata files are not LoRAs).
public struct LoraLibrary: Sendable {
    /// The directory searched (nil: an empty library).
    public let directory: String?
    /// File path by name.
    public let files: [String: String]
    /// Names shadowed by a later file of the same stem.
    public let warnings: [String]

    static let extensions: Set<String> = ["safetensors", "pt", "ckpt"]

    /// Indexes `directory` (nil or missing: nothing).
    public init(directory: String?) throws {
        self.directory = directory
        guard let directory else {
            files = [:]
            warnings = []
            return
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PipelineError.badParameter(setting: "--lora-dir", reason: "\(directory) is not a directory")
        }
        var found: [String: String] = [:]
        var warnings: [String] = []
        for path in Self.walk(directory) {
            let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            if let earlier = found[name] {
                warnings.append("LoRA name '\(name)' is used by \(earlier) and \(path); \(path) is used")
            }
            found[name] = path
        }
        files = found
        self.warnings = warnings
    }

    /// Every LoRA file under `root`, in A1111's walk order.
    static func walk(_ root: String) -> [String] {
        let fm = FileManager.default
        var folders = [root]
        var result: [String] = []
        // Breadth by folder, folders in natural order (A1111 sorts os.walk's folders by path).
        var allFolders: [String] = []
        var visited = Set<String>()
        while let folder = folders.popLast() {
            let resolved = (folder as NSString).resolvingSymlinksInPath
            guard visited.insert(resolved).inserted else { continue }   // symlink loops
            allFolders.append(folder)
            guard let entries = try? fm.contentsOfDirectory(atPath: folder) else { continue }
            for entry in entries where !entry.hasPrefix(".") {
                let path = (folder as NSString).appendingPathComponent(entry)
                var isDirectory: ObjCBool = false
                if fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { folders.append(path) }
            }
        }
        for folder in allFolders.sorted(by: naturalOrder) {
            guard let entries = try? fm.contentsOfDirectory(atPath: folder) else { continue }
            for entry in entries.sorted(by: naturalOrder) where !entry.hasPrefix(".") {
                let path = (folder as NSString).appendingPathComponent(entry)
                var isDirectory: ObjCBool = false
                guard fm.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                      extensions.contains((entry as NSString).pathExtension.lowercased()) else { continue }
                result.append(path)
            }
        }
        return result
    }

    /// The file of `name`, or an error listing the closest names.
    public func path(for name: String) throws -> String {
        if let path = files[name] { return path }
        throw PipelineError.unknownNetwork(name: name, directory: directory, candidates: closestNames(to: name))
    }

    /// Up to `limit` names closest to `name` by case-insensitive edit distance (ties in name
    /// order): names within a third of the length's edits, or containing it, or contained in it.
    public func closestNames(to name: String, limit: Int = 5) -> [String] {
        let query = name.lowercased()
        let scored: [(String, Int)] = files.keys.compactMap { candidate in
            let lower = candidate.lowercased()
            let containment = lower.contains(query) || query.contains(lower)
            let distance = editDistance(Array(query.unicodeScalars), Array(lower.unicodeScalars))
            let threshold = max(2, max(query.unicodeScalars.count, lower.unicodeScalars.count) / 3)
            guard containment || distance <= threshold else { return nil }
            return (candidate, distance)
        }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }
}

/// Levenshtein distance.
func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// A1111's `natural_sort_key`: digit runs compare as numbers, other text case-insensitively.
func naturalOrder(_ a: String, _ b: String) -> Bool {
    func parts(_ s: String) -> [(isNumber: Bool, text: String)] {
        var result: [(Bool, String)] = []
        var current = "", numeric = false
        for c in s.lowercased() {
            let digit = c.isASCII && c.isNumber
            if !current.isEmpty && digit != numeric { result.append((numeric, current)); current = "" }
            numeric = digit
            current.append(c)
        }
        if !current.isEmpty { result.append((numeric, current)) }
        return result
    }
    let pa = parts(a), pb = parts(b)
    for (x, y) in zip(pa, pb) where x.text != y.text {
        if x.isNumber && y.isNumber, let nx = Int(x.text), let ny = Int(y.text), nx != ny { return nx < ny }
        if x.isNumber != y.isNumber { return x.isNumber }   // Python compares int < str: numbers first
        return x.text < y.text
    }
    return pa.count != pb.count ? pa.count < pb.count : a < b
}

/// One `<lora:…>` tag of a prompt, read as A1111's Lora extension reads it:
/// `<lora:name>`, `<lora:name:te>`, `<lora:name:te:unet>`, `<lora:name:te:unet:dyn>`, or named
/// `te=`, `unet=`, `dyn=`. The text-encoder weight defaults to 1, the UNet weight to the text
/// encoder's. (`lyco` tags are the same since webui 1.5.)
public struct LoraTag: Equatable, Sendable {
    /// The name as written (A1111's `mentioned_name`).
    public var name: String
    public var textEncoderWeight: Float
    public var unetWeight: Float
    public var dynRank: Int?

    /// Tag names that mean a LoRA.
    public static let tagNames: Set<String> = ["lora", "lyco"]

    /// The LoRA of an extra-network tag, or nil when the tag is another kind.
    public init?(_ tag: ExtraNetworkTag) throws {
        guard Self.tagNames.contains(tag.name) else { return nil }
        let positional = tag.positional, named = tag.named
        guard let name = positional.first, !name.isEmpty else {
            throw PipelineError.badParameter(setting: "<\(tag.name):…>", reason: "the tag names no LoRA")
        }
        func number(_ text: String, _ what: String) throws -> Float {
            guard let value = Float(text.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                throw PipelineError.badParameter(setting: "<\(tag.name):\(tag.arguments.joined(separator: ":"))>",
                                                 reason: "\(what) \(text.debugDescription) is not a number")
            }
            return value
        }
        self.name = name
        textEncoderWeight = try number(named["te"] ?? (positional.count > 1 ? positional[1] : "1"), "text-encoder weight")
        unetWeight = try named["unet"].map { try number($0, "UNet weight") }
            ?? (positional.count > 2 ? try number(positional[2], "UNet weight") : textEncoderWeight)
        if let dyn = named["dyn"] ?? (positional.count > 3 ? positional[3] : nil) {
            guard let rank = Int(dyn), rank > 0 else {
                throw PipelineError.badParameter(setting: "<\(tag.name):…>", reason: "dyn \(dyn.debugDescription) is not a positive integer")
            }
            dynRank = rank
        }
    }

    public init(name: String, textEncoderWeight: Float = 1, unetWeight: Float? = nil, dynRank: Int? = nil) {
        self.name = name
        self.textEncoderWeight = textEncoderWeight
        self.unetWeight = unetWeight ?? textEncoderWeight
        self.dynRank = dynRank
    }
}

/// A LoRA loaded for a generation: its tag, file, adapter and A1111 short hash.
public struct LoadedLora {
    public let tag: LoraTag
    public let path: String
    public let adapter: Adapter
    /// A1111's `shorthash` (12 hex digits), as written in "Lora hashes".
    public let shortHash: String

    /// The stack entry at the tag's weights.
    public var application: AdapterApplication {
        AdapterApplication(adapter: adapter, weight: tag.textEncoderWeight, unetWeight: tag.unetWeight,
                           dynRank: tag.dynRank)
    }
}

extension LoraLibrary {
    /// Resolves and loads `tags` through `registry` (the runtime knows no adapter method itself).
    public func load(_ tags: [LoraTag], registry: AdapterRegistry) throws -> [LoadedLora] {
        try tags.map { tag in
            let path = try self.path(for: tag.name)
            let source: TensorSource
            do {
                source = try Self.openSource(path)
            } catch {
                throw PipelineError.networkLoadFailed(name: tag.name, path: path, reason: "\(error)")
            }
            let adapter: Adapter
            do {
                adapter = try registry.load(source)
            } catch {
                throw PipelineError.networkLoadFailed(name: tag.name, path: path, reason: "\(error)")
            }
            let hash = try LoraHash.shortHash(path: path, metadata: source.metadata)
            return LoadedLora(tag: tag, path: path, adapter: adapter, shortHash: hash)
        }
    }

    /// A tensor source for an adapter file: safetensors, or a PyTorch pickle (.pt/.ckpt/.bin).
    public static func openSource(_ path: String) throws -> TensorSource {
        if path.lowercased().hasSuffix(".safetensors") { return try SafeTensorsFile(path: path) }
        return try TorchFile(path: path)
    }
}

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
