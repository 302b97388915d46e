#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CAdapterHostPlugin
import Tensor

/// The host services a plugin's `load` uses to read its file (`ah_host_api`), over one
/// `TensorSource`.
///
/// The opaque `ah_source *` the plugin receives is this object's address; it is valid while
/// the object lives, which `withSource` guarantees for the duration of the `load` call. Every
/// string and tensor handed out is kept here until then, as the ABI promises ("valid during load").
final class PluginSourceContext {
    let source: TensorSource
    /// NUL-terminated copies of the keys, in file order (malloc'd; freed in deinit).
    private let keyStrings: [UnsafeMutablePointer<CChar>]
    /// Metadata values handed out (malloc'd; freed in deinit).
    private var metadataStrings: [String: UnsafeMutablePointer<CChar>] = [:]
    /// F32 tensors handed out; kept alive until the context dies.
    private var tensors: [Tensor] = []

    private init(source: TensorSource) {
        self.source = source
        self.keyStrings = source.keys.map { strdup($0)! }
    }

    deinit {
        keyStrings.forEach { free($0) }
        metadataStrings.values.forEach { free($0) }
    }

    /// The host API table and the opaque source pointer for `source`, valid inside `body`.
    static func withSource<R>(_ source: TensorSource,
                              _ body: (UnsafePointer<ah_host_api>, OpaquePointer) throws -> R) rethrows -> R {
        let context = PluginSourceContext(source: source)
        var api = hostAPI
        return try withExtendedLifetime(context) {
            let opaque = OpaquePointer(Unmanaged.passUnretained(context).toOpaque())
            return try withUnsafePointer(to: &api) { try body($0, opaque) }
        }
    }

    /// Recovers the context from the pointer the plugin passes back. The pointer is only ever
    /// one `withSource` made, used during its `body`.
    private static func context(_ source: OpaquePointer?) -> PluginSourceContext? {
        guard let source else { return nil }
        return Unmanaged<PluginSourceContext>.fromOpaque(UnsafeRawPointer(source)).takeUnretainedValue()
    }

    private static let hostAPI: ah_host_api = {
        var api = ah_host_api()
        api.abi_version = UInt32(AH_PLUGIN_ABI_VERSION)
        api.struct_size = UInt32(MemoryLayout<ah_host_api>.size)
        api.key_count = { source in
            PluginSourceContext.context(source)?.keyStrings.count ?? 0
        }
        api.key_at = { source, index in
            guard let c = PluginSourceContext.context(source), index < c.keyStrings.count else { return nil }
            return UnsafePointer(c.keyStrings[index])
        }
        api.metadata = { source, name in
            guard let c = PluginSourceContext.context(source), let name,
                  let key = String(validatingCString: name), let value = c.source.metadata[key] else { return nil }
            if let existing = c.metadataStrings[key] { return UnsafePointer(existing) }
            let copy = strdup(value)!
            c.metadataStrings[key] = copy
            return UnsafePointer(copy)
        }
        api.get_tensor_f32 = { source, key, out, err in
            guard let c = PluginSourceContext.context(source), let out else {
                PluginTensorBridge.fill(err, status: AH_ERR_INTERNAL, message: "get_tensor_f32: NULL source or out")
                return Int32(AH_ERR_INTERNAL.rawValue)
            }
            guard let key, let name = String(validatingCString: key) else {
                PluginTensorBridge.fill(err, status: AH_ERR_INVALID_INPUT, message: "get_tensor_f32: NULL or non-UTF-8 key")
                return Int32(AH_ERR_INVALID_INPUT.rawValue)
            }
            do {
                let raw = try c.source.tensor(name)
                guard raw.rank <= Int(AH_MAX_RANK) else {
                    PluginTensorBridge.fill(err, status: AH_ERR_INVALID_INPUT,
                                            message: "\(c.source.path): tensor '\(name)' has rank \(raw.rank) > \(AH_MAX_RANK)")
                    return Int32(AH_ERR_INVALID_INPUT.rawValue)
                }
                guard raw.dtype != .bool else {
                    PluginTensorBridge.fill(err, status: AH_ERR_INVALID_INPUT,
                                            message: "\(c.source.path): tensor '\(name)' is BOOL, not numeric")
                    return Int32(AH_ERR_INVALID_INPUT.rawValue)
                }
                // `.to(.f32)` is contiguous; copy when it shares the source's storage so the
                // plugin never sees (and cannot write into) a mapped file.
                let f32 = raw.dtype == .f32 ? raw.to(.f32).copy() : raw.to(.f32)
                c.tensors.append(f32)
                out.pointee = PluginTensorBridge.view(of: f32)
                return Int32(AH_OK.rawValue)
            } catch {
                PluginTensorBridge.fill(err, status: AH_ERR_INVALID_INPUT, message: "\(error)")
                return Int32(AH_ERR_INVALID_INPUT.rawValue)
            }
        }
        return api
    }()
}
