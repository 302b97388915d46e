import ArgumentParser
import Foundation
import Host

/// `adapterhost plugins [--plugin-dir D] [--json]`: the adapter methods the host knows —
/// built-in and loaded from plugins — with origin, summary, key patterns and extra functions.
/// Plugins that failed to load are reported on stderr (and in the JSON), never fatal.
struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List adapter methods, built-in and from runtime plugins, and plugin load failures."
    )

    @Option(help: "Directory of plugin libraries (*.so) to load (default: ./plugins, if present).")
    var pluginDir: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let (registry, failures) = makeRegistry(pluginDir: pluginDir ?? defaultPluginDirInWorkingDirectory())
        reportPluginFailures(failures)
        let listing = MethodListing(registry: registry, failures: failures)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(listing), as: UTF8.self))
        } else {
            print(listing.text, terminator: "")
        }
    }
}

/// What `adapterhost plugins` shows, as plain data (also its JSON form).
struct MethodListing: Encodable {
    struct Function: Encodable {
        let name: String
        let signature: String
        let doc: String
    }
    struct Method: Encodable {
        let id: String
        /// "built-in" or "plugin".
        let origin: String
        /// The plugin file (plugins only).
        let path: String?
        let summary: String
        /// Plugins only (built-ins describe their keys in their documentation).
        let keyPatterns: [String]
        let functions: [Function]
        /// Whether the method has a bypass (forward-time) form (plugins only).
        let bypass: Bool?
    }
    struct Failure: Encodable {
        let path: String
        let error: String
    }
    let methods: [Method]
    let failures: [Failure]

    init(registry: AdapterRegistry, failures: [PluginLoadFailure]) {
        methods = registry.methods.map { method in
            let plugin = method as? PluginMethod
            let path: String?
            switch method.origin {
            case .builtIn: path = nil
            case .plugin(let p): path = p
            }
            return Method(
                id: method.id, origin: path == nil ? "built-in" : "plugin", path: path, summary: method.summary,
                keyPatterns: plugin?.keyPatterns ?? [],
                functions: plugin?.functions.map { Function(name: $0.name, signature: $0.signature, doc: $0.doc) } ?? [],
                bypass: plugin?.hasForward)
        }
        self.failures = failures.map { Failure(path: $0.path, error: $0.description) }
    }

    /// The human-readable listing.
    var text: String {
        var out = ""
        if methods.isEmpty { out += "no adapter methods registered\n" }
        for m in methods {
            out += "\(m.id)  [\(m.path.map { "plugin \($0)" } ?? m.origin)]\n"
            out += "    \(m.summary)\n"
            if !m.keyPatterns.isEmpty { out += "    keys: \(m.keyPatterns.joined(separator: "  "))\n" }
            if let bypass = m.bypass { out += "    bypass form: \(bypass ? "yes" : "no (dense delta)")\n" }
            for f in m.functions {
                out += "    fn \(f.signature)\(f.doc.isEmpty ? "" : "  — \(f.doc)")\n"
            }
        }
        if !failures.isEmpty {
            out += "\(failures.count) plugin(s) failed to load (see stderr)\n"
        }
        return out
    }
}
