#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CAdapterHostPlugin
import Tensor

/// An adapter method provided by a runtime plugin (a shared library speaking the C ABI of
/// `adapterhost_plugin.h`). Registered in the `AdapterRegistry` beside the built-ins.
///
/// Detection asks the plugin's `claim_key` about every key: keys it gives a module name become
/// that module's claim; keys it calls shared ("") are claimed too (so they are not reported as
/// unclaimed) and handed to the plugin through the host API at load, but are not modules.
public final class PluginMethod: AdapterMethod {
    let library: PluginLibrary

    init(library: PluginLibrary) { self.library = library }

    public var id: String { library.methodID }
    public var summary: String { library.summary }
    public var origin: MethodOrigin { .plugin(path: library.path) }
    /// The plugin file.
    public var path: String { library.path }
    /// Glob patterns of the keys the method recognises (for listings).
    public var keyPatterns: [String] { library.keyPatterns }
    /// The plugin's extra functions, callable with `call(function:arguments:)`.
    public var functions: [PluginFunction] { library.functions }
    /// True when the plugin has a bypass (forward-time) form.
    public var hasForward: Bool { library.descriptor.pointee.forward != nil }

    /// Module-name prefix of the claims that carry a claim_key failure to `load`, which throws
    /// it. Real module names never contain control characters (checked), so it cannot clash.
    private static let claimFailurePrefix = "\u{1}claim-failure:"
    /// Buffer given to claim_key for the module name.
    private static let moduleNameCapacity = 4096

    public func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] {
        let claimKey = library.descriptor.pointee.claim_key!  // non-NULL: checked at load
        var order: [String] = []
        var keysByModule: [String: [String]] = [:]
        var shared: [String] = []
        var failures: [ModuleClaim] = []
        let capacity = Self.moduleNameCapacity
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        library.locked {
            for key in keys {
                buffer.initialize(repeating: 0, count: capacity)
                let answer = key.withCString { claimKey($0, buffer, capacity) }
                if answer == 0 { continue }
                guard answer == 1 else {
                    failures.append(ModuleClaim(module: Self.claimFailurePrefix + "claim_key returned \(answer) for '\(key)' (must be 0 or 1)", keys: [key]))
                    continue
                }
                let raw = UnsafeRawBufferPointer(start: buffer, count: capacity)
                guard let end = raw.firstIndex(of: 0) else {
                    failures.append(ModuleClaim(module: Self.claimFailurePrefix + "claim_key wrote a module name for '\(key)' without a NUL terminator", keys: [key]))
                    continue
                }
                let module = String(decoding: raw[..<end], as: UTF8.self)
                if module.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\u{FFFD}" }) {
                    failures.append(ModuleClaim(module: Self.claimFailurePrefix + "claim_key wrote an invalid module name for '\(key)' (control characters or non-UTF-8)", keys: [key]))
                    continue
                }
                if module.isEmpty {
                    shared.append(key)
                } else {
                    if keysByModule[module] == nil { order.append(module) }
                    keysByModule[module, default: []].append(key)
                }
            }
        }
        // A file with only shared keys has no module of this method (unless the plugin
        // misbehaved, which `load` must report).
        if order.isEmpty && failures.isEmpty { return [] }
        var claims = order.map { ModuleClaim(module: $0, keys: keysByModule[$0]!) }
        if !shared.isEmpty { claims.append(ModuleClaim(module: "", keys: shared)) }
        return claims + failures
    }

    public func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
        if let failure = claims.first(where: { $0.module.hasPrefix(Self.claimFailurePrefix) }) {
            throw PluginError.badOutput(path: path, method: id, operation: "claim_key", module: nil,
                                        reason: String(failure.module.dropFirst(Self.claimFailurePrefix.count)))
        }
        let names = claims.map(\.module).filter { !$0.isEmpty }
        let d = library.descriptor.pointee
        let handle: UnsafeMutableRawPointer = try library.locked {
            let cNames = names.map { strdup($0)! }
            defer { cNames.forEach { free($0) } }
            let namePointers = cNames.map { UnsafePointer<CChar>?($0) }
            var err = ah_error()
            var out: UnsafeMutableRawPointer? = nil
            let status = PluginSourceContext.withSource(source) { api, opaque in
                namePointers.withUnsafeBufferPointer { list in
                    d.load!(api, opaque, list.baseAddress, list.count, &out, &err)
                }
            }
            guard status == Int32(AH_OK.rawValue) else {
                throw PluginError.pluginFailed(path: path, method: id, operation: "load '\(source.path)'", module: nil,
                                               status: status, message: PluginTensorBridge.message(of: err))
            }
            guard let out else {
                throw PluginError.badOutput(path: path, method: id, operation: "load '\(source.path)'", module: nil,
                                            reason: "AH_OK with a NULL adapter handle")
            }
            return out
        }
        // From here the handle is freed when the last module using it goes away.
        let adapterHandle = PluginAdapterHandle(library: library, raw: handle)
        var modules: [any AdapterModule] = []
        for (index, name) in names.enumerated() {
            let info = try library.locked { () throws -> ah_module_info in
                var info = ah_module_info()
                var err = ah_error()
                let status = d.module_info!(handle, index, &info, &err)
                guard status == Int32(AH_OK.rawValue) else {
                    throw PluginError.pluginFailed(path: path, method: id, operation: "module_info", module: name,
                                                   status: status, message: PluginTensorBridge.message(of: err))
                }
                return info
            }
            guard info.changes_bias == 0 else {
                throw PluginError.badOutput(path: path, method: id, operation: "module_info", module: name,
                                            reason: "changes_bias is reserved and must be 0 in ABI v1")
            }
            guard info.rank >= 0 else {
                throw PluginError.badOutput(path: path, method: id, operation: "module_info", module: name,
                                            reason: "negative rank \(info.rank)")
            }
            // module_type is owned by the adapter: copy it now.
            let type = info.module_type.flatMap { String(validatingCString: $0) } ?? id
            modules.append(PluginModule(name: name, index: index, moduleType: type,
                                        rank: info.rank > 0 ? Int(info.rank) : nil,
                                        alpha: info.alpha.isNaN ? nil : info.alpha,
                                        dependsOnWeight: info.depends_on_weight != 0,
                                        handle: adapterHandle))
        }
        return Adapter(path: source.path, methodIDs: [id], format: id, baseModel: nil,
                       metadata: source.metadata, modules: modules)
    }
}

/// A plugin's adapter handle; `free_adapter` runs exactly once, when the last module of the
/// adapter is released.
final class PluginAdapterHandle {
    let library: PluginLibrary
    let raw: UnsafeMutableRawPointer

    init(library: PluginLibrary, raw: UnsafeMutableRawPointer) {
        self.library = library
        self.raw = raw
    }

    deinit {
        let free = library.descriptor.pointee.free_adapter!  // non-NULL: checked at load
        library.locked { free(raw) }
    }
}
