import Foundation
import SafeTensors

/// The kinds of files a models directory holds, with the extensions A1111 lists for each.
public enum ModelKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Base checkpoints (`models/Stable-diffusion`): `.safetensors`, `.ckpt`; `*.vae.*` files are
    /// VAEs, not checkpoints. The host also lists diffusers folders (a folder holding
    /// `model_index.json`), which it can load and A1111 cannot.
    case checkpoint
    /// LoRA and LyCORIS files (`models/Lora`, `models/LyCORIS`): `.safetensors`, `.pt`, `.ckpt`.
    case lora
    /// Textual-inversion embeddings (`embeddings/` at the webui root): `.safetensors`, `.pt`,
    /// `.bin` (A1111's embedded-in-PNG embeddings are not read); empty files are skipped.
    case embedding
    /// Hypernetworks (`models/hypernetworks`): `.pt` only, as A1111 (`**/*.pt`); files and
    /// folders whose names start with "." are skipped (Python's glob skips them).
    case hypernetwork

    /// Lower-case extensions without the dot. Extensions compare case-insensitively.
    public var fileExtensions: Set<String> {
        switch self {
        case .checkpoint: return ["safetensors", "ckpt"]
        case .lora: return ["safetensors", "pt", "ckpt"]
        case .embedding: return ["safetensors", "pt", "bin"]
        case .hypernetwork: return ["pt"]
        }
    }

    public var description: String {
        switch self {
        case .checkpoint: return "checkpoint"
        case .lora: return "LoRA"
        case .embedding: return "embedding"
        case .hypernetwork: return "hypernetwork"
        }
    }
}

/// A model file found in a models directory.
public struct ModelFile: Equatable, Sendable {
    public let kind: ModelKind
    /// The name prompts and options use: the file name without its extension (A1111's
    /// `os.path.splitext(basename)[0]`), or a diffusers folder's name.
    public let name: String
    /// Full path.
    public let path: String
    /// Path from the directory it was found in, "/"-separated (A1111's checkpoint names).
    public let relativePath: String
    /// A diffusers folder rather than a file.
    public let isFolder: Bool

    public init(kind: ModelKind, name: String, path: String, relativePath: String, isFolder: Bool = false) {
        self.kind = kind
        self.name = name
        self.path = path
        self.relativePath = relativePath
        self.isFolder = isFolder
    }
}

/// The file a name resolved to.
public struct ModelMatch: Equatable, Sendable {
    /// How the name matched.
    public enum Rule: Equatable, Sendable {
        /// The file name without extension.
        case name
        /// A LoRA's alias: its `ss_output_name` metadata (A1111's `NetworkOnDisk.alias`).
        case alias
        /// A checkpoint's path in its folder, with or without extension (`sub/model`).
        case relativePath
        /// A checkpoint whose path contains the name (A1111's `get_closet_checkpoint_match`:
        /// the shortest such path).
        case partialPath
    }

    public let file: ModelFile
    public let rule: Rule
    /// Other files answering to the same name by the same rule, which A1111's choice passed
    /// over (worth a warning: the user may mean one of them).
    public let shadowed: [ModelFile]
}

/// Errors finding model files.
public enum ModelsDirectoryError: Error, Equatable, CustomStringConvertible {
    /// A directory given by the user is missing or not a directory.
    case notADirectory(path: String, option: String)
    /// No directory to search for this kind (no such folder in the models directory, and none given).
    case noFolder(kind: ModelKind, tried: [String])
    /// No file answers to `name`; `suggestions` are the closest names found (at most 3).
    case notFound(kind: ModelKind, name: String, searched: [String], suggestions: [String])

    public var description: String {
        switch self {
        case let .notADirectory(path, option):
            return "\(option) \(path): no such directory"
        case let .noFolder(kind, tried):
            return "no \(kind) folder: looked for \(tried.joined(separator: ", "))"
        case let .notFound(kind, name, searched, suggestions):
            let hint = suggestions.isEmpty ? " (no \(kind) files there)"
                : "; closest: \(suggestions.map { $0.debugDescription }.joined(separator: ", "))"
            return "no \(kind) named \(name.debugDescription) in \(searched.joined(separator: ", "))\(hint)"
        }
    }
}

/// Finds checkpoints, LoRAs, embeddings and hypernetworks by name, in A1111's folder layout.
///
/// With `root` M (`--models-dir`), the folders searched are (each only if it exists; folder
/// names match case-insensitively, the exact spelling first):
/// - checkpoints: `M/Stable-diffusion`, then ComfyUI's `M/checkpoints`;
/// - LoRA: `M/Lora`, then `M/LyCORIS` (A1111 lists both under `<lora:…>`), then ComfyUI's `M/loras`;
/// - embeddings: `M/../embeddings` (A1111 keeps them at the webui root, beside `models/`), then
///   `M/embeddings`;
/// - hypernetworks: `M/hypernetworks`.
/// An explicit directory (`--lora-dir`, `--embeddings-dir`, …) replaces the default folder of
/// its kind; for LoRA, as A1111's `--lora-dir`, it replaces `M/Lora` and the `LyCORIS` folder is
/// still searched.
///
/// Folders are searched recursively, following symbolic links, in A1111's order (`walk_files`:
/// folders by natural sort of their path, files by natural sort of their name, "a2" before
/// "a10", case-insensitive; hypernetworks by their lower-cased path). When several files have
/// the same name the LAST in that order wins, as in A1111, whose lists are dictionaries filled
/// in that order (so `LyCORIS/x` shadows `Lora/x`, and `x.safetensors` shadows `x.pt`); the
/// others are reported in `ModelMatch.shadowed`.
///
/// Names compare exactly (A1111's dictionary lookups are case-sensitive); a name that is not
/// found is an error listing the three closest names, compared case-insensitively.
///
/// Listings are cached per kind; not thread-safe.
public final class ModelsDirectory {
    /// The models directory (`--models-dir`), if any.
    public let root: String?
    /// Directories given explicitly, by kind.
    public let explicitDirectories: [ModelKind: String]

    private var listings: [ModelKind: [ModelFile]] = [:]
    private var aliases: [(alias: String, file: ModelFile)]?

    /// Checks that every given directory exists. `root` nil: only the explicit directories.
    public init(root: String?, checkpointDirectory: String? = nil, loraDirectory: String? = nil,
                embeddingsDirectory: String? = nil, hypernetworkDirectory: String? = nil) throws {
        let given: [(ModelKind, String?, String)] = [
            (.checkpoint, checkpointDirectory, "--checkpoint-dir"), (.lora, loraDirectory, "--lora-dir"),
            (.embedding, embeddingsDirectory, "--embeddings-dir"), (.hypernetwork, hypernetworkDirectory, "--hypernetwork-dir"),
        ]
        if let root, !Self.isDirectory(root) { throw ModelsDirectoryError.notADirectory(path: root, option: "--models-dir") }
        var explicit: [ModelKind: String] = [:]
        for (kind, path, option) in given {
            guard let path else { continue }
            guard Self.isDirectory(path) else { throw ModelsDirectoryError.notADirectory(path: path, option: option) }
            explicit[kind] = path
        }
        self.root = root
        self.explicitDirectories = explicit
    }

    /// The folders searched for `kind`, in search order (existing ones only).
    public func searchDirectories(for kind: ModelKind) -> [String] {
        var directories: [String] = []
        if let explicit = explicitDirectories[kind] { directories.append(explicit) }
        if let root {
            switch kind {
            case .checkpoint:
                if directories.isEmpty { directories += Self.children(of: root, named: "Stable-diffusion") + Self.children(of: root, named: "checkpoints") }
            case .lora:
                if directories.isEmpty { directories += Self.children(of: root, named: "Lora") }
                directories += Self.children(of: root, named: "LyCORIS")
                if explicitDirectories[kind] == nil { directories += Self.children(of: root, named: "loras") }
            case .embedding:
                if directories.isEmpty {
                    let parent = URL(fileURLWithPath: root).standardizedFileURL.deletingLastPathComponent().path
                    directories += Self.children(of: parent, named: "embeddings") + Self.children(of: root, named: "embeddings")
                }
            case .hypernetwork:
                if directories.isEmpty { directories += Self.children(of: root, named: "hypernetworks") }
            }
        }
        // One folder reachable two ways (a case-insensitive file system, a link) is searched once.
        var seen = Set<String>()
        return directories.filter { seen.insert(URL(fileURLWithPath: $0).resolvingSymlinksInPath().path).inserted }
    }

    /// The folders that would be searched for `kind` if they existed (for messages).
    func expectedDirectories(for kind: ModelKind) -> [String] {
        if let explicit = explicitDirectories[kind] { return [explicit] }
        guard let root else { return ["(no --models-dir, and no directory given for \(kind) files)"] }
        let join = { (name: String) in (root as NSString).appendingPathComponent(name) }
        switch kind {
        case .checkpoint: return [join("Stable-diffusion"), join("checkpoints")]
        case .lora: return [join("Lora"), join("LyCORIS"), join("loras")]
        case .embedding: return [join("../embeddings"), join("embeddings")]
        case .hypernetwork: return [join("hypernetworks")]
        }
    }

    /// Every file of `kind`, in A1111's order (duplicates of a name included; the last wins).
    public func files(_ kind: ModelKind) -> [ModelFile] {
        if let cached = listings[kind] { return cached }
        var result: [ModelFile] = []
        for directory in searchDirectories(for: kind) {
            result += kind == .hypernetwork ? Self.listHypernetworks(directory) : Self.walkFiles(directory, kind: kind)
        }
        listings[kind] = result
        return result
    }

    /// The embeddings to load: one file per name (the last of each name in A1111's order),
    /// in that order. A1111 loads every embedding of its folder whatever the prompt says;
    /// the prompt's words then find them on the token stream (Runtime's `EmbeddingVocabulary`).
    public func embeddings() -> [ModelFile] {
        let all = files(.embedding)
        var lastIndex: [String: Int] = [:]
        for (index, file) in all.enumerated() { lastIndex[file.name] = index }
        return all.enumerated().filter { lastIndex[$0.element.name] == $0.offset }.map(\.element)
    }

    /// The file `name` means for `kind`: by file name; then, for LoRA, by alias; for
    /// checkpoints, by path in the folder, then by the shortest path containing `name`.
    /// Throws `ModelsDirectoryError.notFound` with the closest names, or `.noFolder`.
    public func resolve(_ name: String, as kind: ModelKind) throws -> ModelMatch {
        let directories = searchDirectories(for: kind)
        guard !directories.isEmpty else { throw ModelsDirectoryError.noFolder(kind: kind, tried: expectedDirectories(for: kind)) }
        let all = files(kind)
        if let match = Self.lastOf(all.filter { $0.name == name }, rule: .name) { return match }
        switch kind {
        case .lora:
            let byAlias = loraAliases().filter { $0.alias == name }.map(\.file)
            if let match = Self.lastOf(byAlias, rule: .alias) { return match }
        case .checkpoint:
            let byPath = all.filter { $0.relativePath == name || Self.splitExtension($0.relativePath).stem == name }
            if let match = Self.lastOf(byPath, rule: .relativePath) { return match }
            // A1111 sorts by title length with a stable sort: the first shortest one.
            let containing = all.filter { $0.relativePath.contains(name) }
            if let shortest = containing.min(by: { $0.relativePath.unicodeScalars.count < $1.relativePath.unicodeScalars.count }) {
                return ModelMatch(file: shortest, rule: .partialPath, shadowed: containing.filter { $0 != shortest })
            }
        case .embedding, .hypernetwork:
            break
        }
        throw ModelsDirectoryError.notFound(kind: kind, name: name, searched: directories,
                                            suggestions: closestNames(to: name, kind: kind))
    }

    /// The `limit` names of `kind` closest to `name` by edit distance, ignoring case (ties in
    /// name order). LoRA aliases count as names.
    public func closestNames(to name: String, kind: ModelKind, limit: Int = 3) -> [String] {
        var names = Set(files(kind).map(\.name))
        if kind == .lora { names.formUnion(loraAliases().map(\.alias)) }
        let target = Array(name.lowercased().unicodeScalars)
        var scored: [(name: String, distance: Int)] = []
        for candidate in names {
            scored.append((candidate, Self.editDistance(target, Array(candidate.lowercased().unicodeScalars))))
        }
        scored.sort { $0.distance != $1.distance ? $0.distance < $1.distance : $0.name < $1.name }
        return scored.prefix(limit).map(\.name)
    }

    // MARK: - A1111's rules

    /// The last of `matches` (A1111's dictionaries keep the last file written under a name).
    private static func lastOf(_ matches: [ModelFile], rule: ModelMatch.Rule) -> ModelMatch? {
        guard let chosen = matches.last else { return nil }
        return ModelMatch(file: chosen, rule: rule, shadowed: Array(matches.dropLast()))
    }

    /// `ss_output_name` of every LoRA `.safetensors` file that has one, in listing order (read
    /// once, headers only; files that do not open are left out here and fail when loaded).
    private func loraAliases() -> [(alias: String, file: ModelFile)] {
        if let aliases { return aliases }
        var result: [(alias: String, file: ModelFile)] = []
        for file in files(.lora) where Self.splitExtension(file.path).ext.lowercased() == "safetensors" {
            if let alias = (try? SafeTensorsFile(path: file.path))?.metadata["ss_output_name"], !alias.isEmpty {
                result.append((alias, file))
            }
        }
        aliases = result
        return result
    }

    /// A1111's `walk_files(directory, allowed_extensions)`: every folder below `directory`
    /// (links followed), sorted by the natural key of its path, each one's files sorted by the
    /// natural key of their names; hidden folders included (A1111's `list_hidden_files`
    /// default). Kind rules: checkpoints skip `*.vae.ckpt`/`*.vae.safetensors` and list
    /// diffusers folders (not descended into); embeddings skip empty files.
    static func walkFiles(_ directory: String, kind: ModelKind) -> [ModelFile] {
        var folders: [(path: String, relative: String, entries: [(name: String, isFolder: Bool)])] = []
        var visited = Set<String>()
        func visit(_ path: String, relative: String) {
            // Links are followed (os.walk(followlinks=True)); a link back up would loop forever.
            guard visited.insert(URL(fileURLWithPath: path).resolvingSymlinksInPath().path).inserted else { return }
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
            var entries: [(name: String, isFolder: Bool)] = []
            var subfolders: [String] = []
            for name in names {
                let full = (path as NSString).appendingPathComponent(name)
                var isDirectory: ObjCBool = false
                // fileExists follows links; a broken link is skipped (A1111 skips those too).
                guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) else { continue }
                if !isDirectory.boolValue {
                    entries.append((name, false))
                } else if kind == .checkpoint, FileManager.default.fileExists(atPath: (full as NSString).appendingPathComponent("model_index.json")) {
                    entries.append((name, true))
                } else {
                    subfolders.append(name)
                }
            }
            folders.append((path, relative, entries))
            for name in subfolders {
                visit((path as NSString).appendingPathComponent(name), relative: relative.isEmpty ? name : relative + "/" + name)
            }
        }
        visit(directory, relative: "")
        folders.sort { naturalOrder($0.path, $1.path) }

        var result: [ModelFile] = []
        for folder in folders {
            for entry in folder.entries.sorted(by: { naturalOrder($0.name, $1.name) }) {
                let full = (folder.path as NSString).appendingPathComponent(entry.name)
                let relative = folder.relative.isEmpty ? entry.name : folder.relative + "/" + entry.name
                if entry.isFolder {
                    result.append(ModelFile(kind: kind, name: entry.name, path: full, relativePath: relative, isFolder: true))
                    continue
                }
                let (stem, ext) = splitExtension(entry.name)
                guard kind.fileExtensions.contains(ext.lowercased()) else { continue }
                // A1111's blacklist compares the path's end exactly (case-sensitive).
                if kind == .checkpoint, entry.name.hasSuffix(".vae.ckpt") || entry.name.hasSuffix(".vae.safetensors") { continue }
                if kind == .embedding, fileSize(full) == 0 { continue }
                result.append(ModelFile(kind: kind, name: stem, path: full, relativePath: relative))
            }
        }
        return result
    }

    /// A1111's `list_hypernetworks`: `glob("**/*.pt", recursive=True)` (names starting with "."
    /// skipped at every level, as glob does) sorted by `str.lower` of the path; "None" is skipped.
    static func listHypernetworks(_ directory: String) -> [ModelFile] {
        let found = walkFiles(directory, kind: .hypernetwork).filter { file in
            !file.relativePath.split(separator: "/").contains { $0.hasPrefix(".") } && file.name != "None"
        }
        return found.sorted { a, b in
            let ka = Array(a.path.lowercased().unicodeScalars.map(\.value)), kb = Array(b.path.lowercased().unicodeScalars.map(\.value))
            return ka != kb ? ka.lexicographicallyPrecedes(kb) : a.path.unicodeScalars.map(\.value).lexicographicallyPrecedes(b.path.unicodeScalars.map(\.value))
        }
    }

    /// Python's `os.path.splitext` of a file name: the extension (without its dot) starts at the
    /// last dot, unless everything before that dot is dots (".pt" has no extension).
    static func splitExtension(_ fileName: String) -> (stem: String, ext: String) {
        let scalars = Array(fileName.unicodeScalars)
        let nameStart = (scalars.lastIndex(of: "/") ?? -1) + 1
        guard let dot = scalars.lastIndex(of: "."), dot > nameStart,
              scalars[nameStart..<dot].contains(where: { $0 != "." }) else { return (fileName, "") }
        return (stringOfScalars(scalars[..<dot]), stringOfScalars(scalars[(dot + 1)...]))
    }

    /// A1111's `natural_sort_key` order: the text split at runs of ASCII digits, text parts
    /// compared lower-cased by code point, digit runs by value; shorter key first. Keys that
    /// are equal ("a01", "a1") fall back to the plain text, so the order is total.
    static func naturalOrder(_ a: String, _ b: String) -> Bool {
        let ka = naturalKey(a), kb = naturalKey(b)
        for (x, y) in zip(ka, kb) where x != y {
            switch (x, y) {
            case let (.text(p), .text(q)): return p.lexicographicallyPrecedes(q)
            case let (.number(p), .number(q)): return p.count != q.count ? p.count < q.count : p.lexicographicallyPrecedes(q)
            // Parts alternate text, number, text…, so these never meet; keep the order total anyway.
            case (.text, .number): return false
            case (.number, .text): return true
            }
        }
        if ka.count != kb.count { return ka.count < kb.count }
        return a.unicodeScalars.map(\.value).lexicographicallyPrecedes(b.unicodeScalars.map(\.value))
    }

    private enum NaturalKeyPart: Equatable {
        /// Lower-cased code points.
        case text([UInt32])
        /// Digits without leading zeros (so value order is length, then digit order).
        case number([UInt8])
    }

    /// `re.split("([0-9]+)", s)` with digit runs as numbers and other parts lower-cased.
    private static func naturalKey(_ s: String) -> [NaturalKeyPart] {
        var parts: [NaturalKeyPart] = []
        var text = "", digits: [UInt8] = []
        var inDigits = false
        func flushNumber() {
            let trimmed = Array(digits.drop { $0 == 0 })
            parts.append(.number(trimmed))
            digits = []
        }
        for scalar in s.unicodeScalars {
            if ("0"..."9").contains(scalar) {
                if !inDigits {
                    parts.append(.text(text.lowercased().unicodeScalars.map(\.value)))
                    text = ""
                    inDigits = true
                }
                digits.append(UInt8(scalar.value - 48))
            } else {
                if inDigits {
                    flushNumber()
                    inDigits = false
                }
                text.unicodeScalars.append(scalar)
            }
        }
        if inDigits { flushNumber(); text = "" }
        parts.append(.text(text.lowercased().unicodeScalars.map(\.value)))
        return parts
    }

    /// Levenshtein distance (insert, delete, substitute: 1 each).
    static func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    /// The folders directly in `parent` whose names equal `name` ignoring case, the exact
    /// spelling first, then the others in name order.
    private static func children(of parent: String, named name: String) -> [String] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return [] }
        return entries.filter { $0.lowercased() == name.lowercased() }
            .sorted { ($0 == name ? 0 : 1, $0) < ($1 == name ? 0 : 1, $1) }
            .map { (parent as NSString).appendingPathComponent($0) }
            .filter(isDirectory)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Size in bytes following links (os.stat), or nil when it cannot be read.
    private static func fileSize(_ path: String) -> Int? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: URL(fileURLWithPath: path).resolvingSymlinksInPath().path)
        else { return nil }
        return (attributes[.size] as? NSNumber)?.intValue
    }
}
