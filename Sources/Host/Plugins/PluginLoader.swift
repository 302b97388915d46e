import Foundation

/// What loading a plugin directory produced: the methods now registered and the files that
/// failed (each naming the file and the reason). Failures never stop the other plugins.
public struct PluginLoadResult {
    public let loaded: [PluginMethod]
    public let failures: [PluginLoadFailure]
}

/// Loads runtime plugins (shared libraries exporting `adapterhost_plugin_entry`) and
/// registers their methods.
public enum PluginLoader {
    /// File extensions of shared libraries on this platform.
    #if os(macOS)
    static let libraryExtensions: Set<String> = ["dylib", "so"]
    #else
    static let libraryExtensions: Set<String> = ["so"]
    #endif

    /// Opens and validates one plugin library, without registering it.
    /// Throws `PluginLoadError` naming the file.
    public static func open(path: String) throws -> PluginMethod {
        PluginMethod(library: try PluginLibrary.open(path: path))
    }

    /// Opens one plugin and registers its method in `registry`. Throws `PluginLoadError`
    /// (`.duplicateMethod` when the id is taken by a built-in or another plugin).
    @discardableResult
    public static func load(path: String, into registry: AdapterRegistry) throws -> PluginMethod {
        let method = try open(path: path)
        if let existing = registry.method(id: method.id) {
            throw PluginLoadError.duplicateMethod(path: path, id: method.id, existing: existing.origin.description)
        }
        try registry.register(method)
        return method
    }

    /// Loads every shared library (`*.so`) directly in `directory`, in name order, registering
    /// each method; a bad plugin becomes a failure and the rest still load.
    public static func loadAll(directory: String, into registry: AdapterRegistry) -> PluginLoadResult {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory)
                .filter { libraryExtensions.contains(($0 as NSString).pathExtension) }
                .sorted()
        } catch {
            let reason = (error as NSError).localizedDescription
            return PluginLoadResult(loaded: [], failures: [
                PluginLoadFailure(error: .unreadableDirectory(path: directory, reason: reason)),
            ])
        }
        var loaded: [PluginMethod] = []
        var failures: [PluginLoadFailure] = []
        for file in files {
            let path = (directory as NSString).appendingPathComponent(file)
            do {
                loaded.append(try load(path: path, into: registry))
            } catch let error as PluginLoadError {
                failures.append(PluginLoadFailure(error: error))
            } catch {
                failures.append(PluginLoadFailure(error: .malformedDescriptor(path: path, reason: "\(error)")))
            }
        }
        return PluginLoadResult(loaded: loaded, failures: failures)
    }
}
