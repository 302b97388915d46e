#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CFFI

extension PluginMethod {
    /// Calls the plugin's extra function `name` through libffi.
    ///
    /// The arguments are checked against the function table first — count, then each type,
    /// exactly (no conversions) — so a mismatch is a `PluginError.badCall`, never a call with
    /// the wrong signature. Strings go as NUL-terminated host-owned copies valid during the
    /// call; a returned string is copied before the plugin lock is released.
    public func call(function name: String, arguments: [FFIValue] = []) throws -> FFIValue {
        func bad(_ reason: String) -> PluginError { .badCall(path: path, method: id, function: name, reason: reason) }
        guard let function = functions.first(where: { $0.name == name }) else {
            let available = functions.map(\.signature).joined(separator: "; ")
            throw bad("no such function (available: \(available.isEmpty ? "none" : available))")
        }
        guard arguments.count == function.argumentTypes.count else {
            throw bad("takes \(function.argumentTypes.count) argument(s), got \(arguments.count) (\(function.signature))")
        }
        for (i, (value, expected)) in zip(arguments, function.argumentTypes).enumerated() where value.type != expected {
            throw bad("argument \(i + 1) is \(value.type), expected \(expected) (\(function.signature))")
        }
        for (i, value) in arguments.enumerated() {
            if case .string(let s) = value, s.utf8.contains(0) {
                throw bad("argument \(i + 1) contains a NUL byte and cannot cross as a C string")
            }
        }
        return try library.locked { try FFIInvocation.invoke(function, arguments, method: self) }
    }
}

/// One libffi call: builds the call interface from the declared types, lays the arguments
/// out in host-owned storage, calls, and decodes the return value.
enum FFIInvocation {
    static func ffiType(_ t: FFIType) -> UnsafeMutablePointer<ffi_type> {
        switch t {
        case .void: return ah_ffi_type_void()
        case .int32: return ah_ffi_type_sint32()
        case .int64: return ah_ffi_type_sint64()
        case .float: return ah_ffi_type_float()
        case .double: return ah_ffi_type_double()
        case .string, .pointer: return ah_ffi_type_pointer()
        }
    }

    /// `arguments` were checked against `function`'s types by the caller.
    static func invoke(_ function: PluginFunction, _ arguments: [FFIValue], method: PluginMethod) throws -> FFIValue {
        let n = arguments.count
        let argTypes = UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>.allocate(capacity: max(n, 1))
        defer { argTypes.deallocate() }
        for (i, t) in function.argumentTypes.enumerated() { argTypes[i] = ffiType(t) }

        var cif = ffi_cif()
        let prep = ffi_prep_cif(&cif, FFI_DEFAULT_ABI, UInt32(n), ffiType(function.returnType), argTypes)
        guard prep == FFI_OK else {
            throw PluginError.badCall(path: method.path, method: method.id, function: function.name,
                                      reason: "libffi could not prepare the call (status \(prep.rawValue))")
        }

        // One 8-byte, 8-aligned slot per argument holds its value (or a string's pointer).
        let slots = UnsafeMutableRawPointer.allocate(byteCount: 8 * max(n, 1), alignment: 8)
        defer { slots.deallocate() }
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer { strings.forEach { free($0) } }
        let values = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(n, 1))
        defer { values.deallocate() }
        for (i, value) in arguments.enumerated() {
            let slot = slots + 8 * i
            switch value {
            case .int32(let v): slot.storeBytes(of: v, as: Int32.self)
            case .int64(let v): slot.storeBytes(of: v, as: Int64.self)
            case .float(let v): slot.storeBytes(of: v, as: Float.self)
            case .double(let v): slot.storeBytes(of: v, as: Double.self)
            case .pointer(let p): slot.storeBytes(of: p, as: UnsafeMutableRawPointer?.self)
            case .string(let s):
                let copy = strdup(s)!
                strings.append(copy)
                slot.storeBytes(of: UnsafeMutableRawPointer(copy), as: UnsafeMutableRawPointer?.self)
            case .void:
                preconditionFailure("void arguments are rejected by the table check")
            }
            values[i] = slot
        }

        // libffi writes integral returns narrower than a register as a full `ffi_arg`; 16
        // aligned bytes hold any return type of the set.
        let ret = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { ret.deallocate() }
        ret.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        ffi_call(&cif, function.pointer, ret, values)

        switch function.returnType {
        case .void: return .void
        case .int32: return .int32(Int32(truncatingIfNeeded: ret.load(as: Int64.self)))
        case .int64: return .int64(ret.load(as: Int64.self))
        case .float: return .float(ret.load(as: Float.self))
        case .double: return .double(ret.load(as: Double.self))
        case .pointer: return .pointer(ret.load(as: UnsafeMutableRawPointer?.self))
        case .string:
            guard let p = ret.load(as: UnsafePointer<CChar>?.self) else {
                throw PluginError.badOutput(path: method.path, method: method.id, operation: "function '\(function.name)'",
                                            module: nil, reason: "returned NULL for a string")
            }
            guard let s = String(validatingCString: p) else {
                throw PluginError.badOutput(path: method.path, method: method.id, operation: "function '\(function.name)'",
                                            module: nil, reason: "returned a string that is not UTF-8")
            }
            return .string(s)
        }
    }
}
