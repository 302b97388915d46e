import CAdapterHostPlugin

/// The argument and return types an extra plugin function may use (`ah_ffi_type`).
public enum FFIType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case void = 0
    case int32 = 1
    case int64 = 2
    case float = 3
    case double = 4
    case string = 5
    case pointer = 6

    /// The C spelling, for signatures in listings.
    public var description: String {
        switch self {
        case .void: return "void"
        case .int32: return "int32_t"
        case .int64: return "int64_t"
        case .float: return "float"
        case .double: return "double"
        case .string: return "const char *"
        case .pointer: return "void *"
        }
    }
}

/// A value crossing the plugin boundary through libffi: an argument or a return value.
public enum FFIValue: Equatable, CustomStringConvertible {
    /// Only as a return value.
    case void
    case int32(Int32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    /// As an argument: passed as a NUL-terminated copy owned by the host, valid during the
    /// call (it must not contain NUL). As a return value: copied from the plugin's string.
    case string(String)
    case pointer(UnsafeMutableRawPointer?)

    /// The type of this value.
    public var type: FFIType {
        switch self {
        case .void: return .void
        case .int32: return .int32
        case .int64: return .int64
        case .float: return .float
        case .double: return .double
        case .string: return .string
        case .pointer: return .pointer
        }
    }

    public var description: String {
        switch self {
        case .void: return "void"
        case .int32(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float(let v): return "\(v)"
        case .double(let v): return "\(v)"
        case .string(let s): return "\"\(s)\""
        case .pointer(let p): return p.map { "\($0)" } ?? "NULL"
        }
    }
}

/// An extra function from a plugin's function table, with its declared signature.
public struct PluginFunction: CustomStringConvertible {
    public let name: String
    /// One line of documentation ("" when the plugin gave none).
    public let doc: String
    public let returnType: FFIType
    public let argumentTypes: [FFIType]
    /// The plugin's function pointer (checked non-NULL at load).
    let pointer: @convention(c) () -> Void

    /// `name(type, type) -> type`.
    public var signature: String {
        "\(name)(\(argumentTypes.map(\.description).joined(separator: ", "))) -> \(returnType)"
    }

    public var description: String { signature }
}
