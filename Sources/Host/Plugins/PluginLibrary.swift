#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import CAdapterHostPlugin

/// One plugin shared library, opened and validated: its descriptor, parsed function table and
/// the lock that serialises every call into it.
///
/// The library is never closed (see the header's OWNERSHIP RULES): language runtimes inside a
/// plugin cannot be unloaded safely, and modules of loaded adapters keep calling into it.
final class PluginLibrary {
    /// The file, as given to the loader.
    let path: String
    /// The plugin's static descriptor. Valid for the life of the process: the library stays open.
    let descriptor: UnsafePointer<ah_plugin_descriptor>
    let methodID: String
    let summary: String
    let keyPatterns: [String]
    let functions: [PluginFunction]
    /// Every call into the plugin holds this lock (recursive: freeing an adapter handle may
    /// happen while a call on the same thread is unwinding). Shared by every `PluginLibrary`
    /// over the same loaded image, since dlopen hands out one image per file.
    private let lock: NSRecursiveLock

    private init(path: String, lock: NSRecursiveLock, descriptor: UnsafePointer<ah_plugin_descriptor>, methodID: String,
                 summary: String, keyPatterns: [String], functions: [PluginFunction]) {
        self.path = path
        self.lock = lock
        self.descriptor = descriptor
        self.methodID = methodID
        self.summary = summary
        self.keyPatterns = keyPatterns
        self.functions = functions
    }

    /// Runs `body` as the only call into this plugin.
    func locked<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Opens `path` and validates its descriptor.
    static func open(path: String) throws -> PluginLibrary {
        // RTLD_NOW: unresolved symbols fail here, not in the middle of a patch.
        // RTLD_LOCAL: a plugin's symbols never satisfy another plugin's references.
        // A name without "/" would make dlopen search the library path; always mean the file.
        let filePath = path.contains("/") ? path : "./" + path
        guard let handle = dlopen(filePath, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw PluginLoadError.notALibrary(path: path, reason: reason)
        }
        // From here on the handle is never closed, even on failure: the library's constructors
        // have run, and a language runtime inside it may have registered itself globally.
        guard let symbol = dlsym(handle, pluginEntrySymbol) else {
            throw PluginLoadError.missingEntry(path: path)
        }
        // The symbol is declared by the ABI as `const ah_plugin_descriptor *(void)`.
        let entry = unsafeBitCast(symbol, to: (@convention(c) () -> UnsafePointer<ah_plugin_descriptor>?).self)
        guard let descriptor = entry() else { throw PluginLoadError.nullDescriptor(path: path) }
        return try validate(descriptor, path: path, lock: lock(for: handle))
    }

    private static let locksGuard = NSLock()
    nonisolated(unsafe) private static var locksByImage: [UnsafeMutableRawPointer: NSRecursiveLock] = [:]

    /// The one lock of the image behind a dlopen handle (dlopen returns the same handle for a
    /// file opened twice, and images are never closed, so handles are never reused).
    private static func lock(for handle: UnsafeMutableRawPointer) -> NSRecursiveLock {
        locksGuard.lock()
        defer { locksGuard.unlock() }
        if let lock = locksByImage[handle] { return lock }
        let lock = NSRecursiveLock()
        locksByImage[handle] = lock
        return lock
    }

    /// Checks every rule of the descriptor (see adapterhost_plugin.h) before anything is used.
    private static func validate(_ pointer: UnsafePointer<ah_plugin_descriptor>, path: String,
                                 lock: NSRecursiveLock) throws -> PluginLibrary {
        // The first two fields exist in every version; read them before trusting the size.
        let header = UnsafeRawPointer(pointer)
        let abiVersion = header.load(as: UInt32.self)
        let structSize = header.load(fromByteOffset: 4, as: UInt32.self)
        guard abiVersion == UInt32(AH_PLUGIN_ABI_VERSION) else {
            throw PluginLoadError.abiVersion(path: path, found: abiVersion, expected: UInt32(AH_PLUGIN_ABI_VERSION))
        }
        guard Int(structSize) >= MemoryLayout<ah_plugin_descriptor>.size else {
            throw PluginLoadError.structSize(path: path, found: structSize,
                                             minimum: MemoryLayout<ah_plugin_descriptor>.size)
        }
        let d = pointer.pointee
        func malformed(_ reason: String) -> PluginLoadError { .malformedDescriptor(path: path, reason: reason) }

        guard let idPointer = d.method_id else { throw malformed("method_id is NULL") }
        guard let id = String(validatingCString: idPointer) else { throw malformed("method_id is not UTF-8") }
        guard isValidMethodID(id) else {
            throw malformed("method_id '\(id)' must be 1-64 characters of [a-z0-9_-]")
        }
        guard let summaryPointer = d.summary else { throw malformed("summary is NULL") }
        guard let summary = String(validatingCString: summaryPointer) else { throw malformed("summary is not UTF-8") }

        // Required entry points; `forward` is optional.
        let required: [(String, Bool)] = [
            ("claim_key", d.claim_key != nil), ("load", d.load != nil), ("module_info", d.module_info != nil),
            ("delta", d.delta != nil), ("free_adapter", d.free_adapter != nil),
        ]
        for (name, present) in required where !present {
            throw malformed("required function pointer '\(name)' is NULL")
        }

        // Counts are checked against generous caps before any pointer is followed, so a
        // garbage count cannot walk memory.
        let patternCap = 4096, functionCap = 256
        guard d.key_pattern_count <= patternCap else {
            throw malformed("key_pattern_count \(d.key_pattern_count) exceeds \(patternCap)")
        }
        var patterns: [String] = []
        if d.key_pattern_count > 0 {
            guard let list = d.key_patterns else { throw malformed("key_patterns is NULL but key_pattern_count is \(d.key_pattern_count)") }
            for i in 0..<d.key_pattern_count {
                guard let p = list[i], let s = String(validatingCString: p) else {
                    throw malformed("key pattern \(i) is NULL or not UTF-8")
                }
                patterns.append(s)
            }
        }

        guard d.function_count <= functionCap else {
            throw malformed("function_count \(d.function_count) exceeds \(functionCap)")
        }
        var functions: [PluginFunction] = []
        if d.function_count > 0 {
            guard let table = d.functions else { throw malformed("functions is NULL but function_count is \(d.function_count)") }
            for i in 0..<d.function_count {
                let f = table[i]
                guard let namePointer = f.name, let name = String(validatingCString: namePointer) else {
                    throw malformed("function \(i): name is NULL or not UTF-8")
                }
                guard isValidFunctionName(name) else {
                    throw malformed("function \(i): name '\(name)' must match [A-Za-z_][A-Za-z0-9_]*")
                }
                guard !functions.contains(where: { $0.name == name }) else {
                    throw malformed("function '\(name)' appears twice in the function table")
                }
                guard let fn = f.fn else { throw malformed("function '\(name)': fn is NULL") }
                guard let returnType = FFIType(rawValue: f.return_type) else {
                    throw malformed("function '\(name)': return_type \(f.return_type) is not an ah_ffi_type")
                }
                guard (0...Int32(AH_MAX_FFI_ARGS)).contains(f.arg_count) else {
                    throw malformed("function '\(name)': arg_count \(f.arg_count) is outside 0...\(AH_MAX_FFI_ARGS)")
                }
                let rawTypes = withUnsafeBytes(of: f.arg_types) { Array($0.bindMemory(to: Int32.self)) }
                var argumentTypes: [FFIType] = []
                for (j, raw) in rawTypes.prefix(Int(f.arg_count)).enumerated() {
                    guard let t = FFIType(rawValue: raw), t != .void else {
                        throw malformed("function '\(name)': argument \(j) has invalid type \(raw)")
                    }
                    argumentTypes.append(t)
                }
                let doc = f.doc.flatMap { String(validatingCString: $0) } ?? ""
                functions.append(PluginFunction(name: name, doc: doc, returnType: returnType,
                                                argumentTypes: argumentTypes, pointer: fn))
            }
        }
        return PluginLibrary(path: path, lock: lock, descriptor: pointer, methodID: id, summary: summary,
                             keyPatterns: patterns, functions: functions)
    }

    /// [a-z0-9_-]{1,64}
    static func isValidMethodID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.utf8.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f || $0 == 0x2d
        }
    }

    /// [A-Za-z_][A-Za-z0-9_]*
    static func isValidFunctionName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(first >= 0x30 && first <= 0x39) else { return false }
        return name.utf8.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f
        }
    }
}
