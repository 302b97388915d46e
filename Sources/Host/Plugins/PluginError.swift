/// Why a plugin library could not be loaded or registered. Every case names the file.
public enum PluginLoadError: Error, CustomStringConvertible, Equatable {
    /// The plugin directory could not be listed.
    case unreadableDirectory(path: String, reason: String)
    /// `dlopen` refused the file (not a shared library, missing dependency, wrong arch, …).
    case notALibrary(path: String, reason: String)
    /// The library does not export `adapterhost_plugin_entry`.
    case missingEntry(path: String)
    /// The entry returned NULL.
    case nullDescriptor(path: String)
    /// The plugin was built for another ABI version.
    case abiVersion(path: String, found: UInt32, expected: UInt32)
    /// The descriptor is smaller than ABI v1's.
    case structSize(path: String, found: UInt32, minimum: Int)
    /// The descriptor breaks a rule of the ABI (null required pointer, bad id, bad function table, …).
    case malformedDescriptor(path: String, reason: String)
    /// The method id is taken (by a built-in or another plugin).
    case duplicateMethod(path: String, id: String, existing: String)

    /// The plugin file the error is about.
    public var path: String {
        switch self {
        case let .unreadableDirectory(path, _), let .notALibrary(path, _), let .missingEntry(path),
             let .nullDescriptor(path), let .abiVersion(path, _, _), let .structSize(path, _, _),
             let .malformedDescriptor(path, _), let .duplicateMethod(path, _, _):
            return path
        }
    }

    public var description: String {
        switch self {
        case let .unreadableDirectory(path, reason):
            return "\(path): cannot list the plugin directory: \(reason)"
        case let .notALibrary(path, reason):
            return "\(path): not a loadable shared library: \(reason)"
        case let .missingEntry(path):
            return "\(path): does not export the plugin entry '\(pluginEntrySymbol)'"
        case let .nullDescriptor(path):
            return "\(path): '\(pluginEntrySymbol)' returned NULL instead of a descriptor"
        case let .abiVersion(path, found, expected):
            return "\(path): built for plugin ABI version \(found); this host speaks version \(expected)"
        case let .structSize(path, found, minimum):
            return "\(path): descriptor struct_size \(found) is smaller than ABI v1's \(minimum) bytes"
        case let .malformedDescriptor(path, reason):
            return "\(path): malformed descriptor: \(reason)"
        case let .duplicateMethod(path, id, existing):
            return "\(path): method id '\(id)' is already registered (\(existing))"
        }
    }
}

/// A plugin that failed to load, with the reason; the host keeps working with the rest.
public struct PluginLoadFailure: Error, CustomStringConvertible, Equatable {
    /// The plugin file.
    public let path: String
    public let error: PluginLoadError
    public init(error: PluginLoadError) {
        self.path = error.path
        self.error = error
    }
    public var description: String { error.description }
}

/// Errors at run time, while a loaded plugin works. Every case names the plugin file and its
/// method id, and the module or function involved.
public enum PluginError: Error, CustomStringConvertible, Equatable {
    /// The plugin returned an error status (its message passed through).
    case pluginFailed(path: String, method: String, operation: String, module: String?,
                      status: Int32, message: String)
    /// The plugin broke the ABI in what it returned (wrong shape or dtype, NULL data, …).
    case badOutput(path: String, method: String, operation: String, module: String?, reason: String)
    /// An extra function was called with the wrong name, count or types of arguments.
    case badCall(path: String, method: String, function: String, reason: String)

    public var description: String {
        switch self {
        case let .pluginFailed(path, method, operation, module, status, message):
            let text = message.isEmpty ? "(no message)" : message
            return "plugin \(path) (method '\(method)')\(Self.where_(module)): \(operation) failed with "
                + "\(Self.statusName(status)): \(text)"
        case let .badOutput(path, method, operation, module, reason):
            return "plugin \(path) (method '\(method)')\(Self.where_(module)): \(operation) returned "
                + "an invalid result: \(reason)"
        case let .badCall(path, method, function, reason):
            return "plugin \(path) (method '\(method)'): cannot call '\(function)': \(reason)"
        }
    }

    private static func where_(_ module: String?) -> String {
        module.map { ", module '\($0)'" } ?? ""
    }

    /// The ABI's name for a status code.
    static func statusName(_ status: Int32) -> String {
        switch status {
        case 1: return "AH_ERR_INVALID_INPUT"
        case 2: return "AH_ERR_UNSUPPORTED"
        case 3: return "AH_ERR_OUT_OF_MEMORY"
        case 4: return "AH_ERR_INTERNAL"
        default: return "unknown status \(status)"
        }
    }
}

/// The symbol every plugin exports (AH_PLUGIN_ENTRY_SYMBOL).
public let pluginEntrySymbol = "adapterhost_plugin_entry"
