// HRA.swift — an AdapterHost plugin, written in Swift, for PEFT's HRA (Householder Reflection
// Adaptation, Yuan et al. 2024), as saved by PEFT (`PeftModel.save_pretrained`).
//
// It speaks only the plugin C ABI (`import CAdapterHostPlugin`, the header's module map) and
// exports `adapterhost_plugin_entry` with @_cdecl: no AdapterHost Swift module is involved, so
// it builds with a bare `swiftc -emit-library` against the header.
//
// File layout (PEFT): `<prefix><module>.hra_u`, shape [n, r], where n = in_features for a
// linear layer and in_channels·k·k for a k×k convolution (PEFT's prefix: "base_model.model.").
//
// Math (peft/tuners/hra/layer.py, get_delta_weight and merge): with W viewed as [out, n]
// (a convolution's [out, in, k, k] flattened row-major, as PEFT's `.view` does),
//   W' = W · R,
//   R = H(û₀)·H(û₁)·…·H(û_{r-1}),  H(û) = I − 2ûûᵀ,  ûᵢ = uᵢ/‖uᵢ‖      (apply_GS = False)
//   R = I − 2QQᵀ, Q = Gram-Schmidt (modified, in column order) of u     (apply_GS = True)
// so the delta is ΔW = W·R − W; it depends on the current weight. At a strength s the host
// gets s·ΔW (PEFT has no scale for HRA; s = 1 is PEFT's merge).
//
// `apply_GS` lives in adapter_config.json, not in the safetensors file: set it with the extra
// function set_option("apply_GS", 1) before loading such a file (captured per adapter at load).

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CAdapterHostPlugin

// MARK: - Options

/// Plugin-wide option, read when an adapter is loaded. The host serialises calls into a plugin
/// (adapterhost_plugin.h, OWNERSHIP RULES), so a plain global is enough.
nonisolated(unsafe) private var optionApplyGS = false

private func fail(_ err: UnsafeMutablePointer<ah_error>?, _ status: ah_status, _ message: String) -> Int32 {
    if let err {
        err.pointee.code = Int32(status.rawValue)
        withUnsafeMutableBytes(of: &err.pointee.message) { raw in
            let bytes = Array(message.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }
    return Int32(status.rawValue)
}

// MARK: - The adapter

/// One module: its reflection vectors, ready to apply.
private struct HRAModule {
    /// Rows of R (n = in_features or in·k·k).
    let n: Int
    let r: Int
    /// apply_GS = false: the unit vectors ûᵢ; true: the orthonormal columns of Q. Column i at
    /// vectors[i*n ..< (i+1)*n].
    let vectors: [Double]
    let gramSchmidt: Bool

    init(u: UnsafePointer<Float>, n: Int, r: Int, gramSchmidt: Bool) {
        self.n = n
        self.r = r
        self.gramSchmidt = gramSchmidt
        // u is [n, r] row-major: column i is u[j*r + i].
        var cols = [Double](repeating: 0, count: n * r)
        for i in 0..<r { for j in 0..<n { cols[i * n + j] = Double(u[j * r + i]) } }
        if gramSchmidt {
            // PEFT: q₀ = u₀/‖u₀‖; uᵢ -= (qⱼᵀuᵢ)qⱼ for j < i, updating uᵢ each time; qᵢ = uᵢ/‖uᵢ‖.
            for i in 0..<r {
                for j in 0..<i {
                    var dot = 0.0
                    for k in 0..<n { dot += cols[j * n + k] * cols[i * n + k] }
                    for k in 0..<n { cols[i * n + k] -= dot * cols[j * n + k] }
                }
                HRAModule.normalize(&cols, column: i, n: n)
            }
        } else {
            for i in 0..<r { HRAModule.normalize(&cols, column: i, n: n) }
        }
        self.vectors = cols
    }

    private static func normalize(_ cols: inout [Double], column i: Int, n: Int) {
        var norm = 0.0
        for k in 0..<n { norm += cols[i * n + k] * cols[i * n + k] }
        norm = norm.squareRoot()
        // A zero column divides by zero in PEFT too (NaN); keep that behaviour visible.
        for k in 0..<n { cols[i * n + k] /= norm }
    }

    /// ΔW = s·(W·R − W) for W [rows, n], into `out`.
    func delta(weight w: UnsafePointer<Float>, rows: Int, strength: Float, out: UnsafeMutablePointer<Float>) {
        var wr = [Double](repeating: 0, count: rows * n)
        for i in 0..<(rows * n) { wr[i] = Double(w[i]) }
        var v = [Double](repeating: 0, count: rows)
        if gramSchmidt {
            // W·(I − 2QQᵀ) = W − 2(WQ)Qᵀ, with WQ from the original W.
            var wq = [Double](repeating: 0, count: rows * r)
            for o in 0..<rows {
                for i in 0..<r {
                    var s = 0.0
                    for k in 0..<n { s += wr[o * n + k] * vectors[i * n + k] }
                    wq[o * r + i] = s
                }
            }
            for o in 0..<rows {
                for k in 0..<n {
                    var s = 0.0
                    for i in 0..<r { s += wq[o * r + i] * vectors[i * n + k] }
                    wr[o * n + k] -= 2 * s
                }
            }
        } else {
            // ((W·H₀)·H₁)·…: each reflection W ← W − 2(Wû)ûᵀ, in PEFT's order.
            for i in 0..<r {
                let base = i * n
                for o in 0..<rows {
                    var s = 0.0
                    for k in 0..<n { s += wr[o * n + k] * vectors[base + k] }
                    v[o] = s
                }
                for o in 0..<rows {
                    let t = 2 * v[o]
                    for k in 0..<n { wr[o * n + k] -= t * vectors[base + k] }
                }
            }
        }
        let s = Double(strength)
        for i in 0..<(rows * n) { out[i] = Float(s * (wr[i] - Double(w[i]))) }
    }
}

private final class HRAAdapter {
    let modules: [HRAModule]
    /// The last delta (plugin-owned until the next call on this adapter or free_adapter).
    var result: UnsafeMutablePointer<Float>? = nil
    var resultCapacity = 0

    init(modules: [HRAModule]) { self.modules = modules }
    deinit { result?.deallocate() }

    func buffer(count: Int) -> UnsafeMutablePointer<Float> {
        if count > resultCapacity || result == nil {
            result?.deallocate()
            result = .allocate(capacity: max(count, 1))
            resultCapacity = count
        }
        return result!
    }

    static func from(_ handle: UnsafeMutableRawPointer?) -> HRAAdapter {
        Unmanaged<HRAAdapter>.fromOpaque(handle!).takeUnretainedValue()
    }
}

// MARK: - Entry points

private let suffix = ".hra_u"

private let claimKey: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, Int) -> Int32 = { key, out, size in
    guard let key, let out, size > 0 else { return 0 }
    let name = String(cString: key)
    guard name.hasSuffix(suffix), name.utf8.count > suffix.utf8.count else { return 0 }
    let module = Array(name.utf8.dropLast(suffix.utf8.count))
    guard module.count + 1 <= size else { return 0 }
    module.withUnsafeBytes { raw in
        UnsafeMutableRawPointer(out).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
    }
    out[module.count] = 0
    return 1
}

private let load: @convention(c) (UnsafePointer<ah_host_api>?, OpaquePointer?, UnsafePointer<UnsafePointer<CChar>?>?, Int,
                                  UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<ah_error>?) -> Int32 = {
    hostPointer, source, names, count, adapterOut, err in
    guard let host = hostPointer?.pointee, host.struct_size >= UInt32(MemoryLayout<ah_host_api>.size),
          let getTensor = host.get_tensor_f32 else {
        return fail(err, AH_ERR_INTERNAL, "host API table is older than this plugin's")
    }
    let gramSchmidt = optionApplyGS
    var modules: [HRAModule] = []
    for i in 0..<count {
        guard let namePointer = names?[i] else { return fail(err, AH_ERR_INTERNAL, "module name \(i) is NULL") }
        let key = String(cString: namePointer) + suffix
        var t = ah_tensor()
        let status = getTensor(source, key, &t, err)
        guard status == Int32(AH_OK.rawValue) else { return status }
        guard t.rank == 2, let data = t.data else {
            return fail(err, AH_ERR_INVALID_INPUT, "'\(key)' has rank \(t.rank), expected [n, r]")
        }
        let n = Int(t.shape.0), r = Int(t.shape.1)
        guard n > 0, r > 0, r <= n else {
            return fail(err, AH_ERR_INVALID_INPUT, "'\(key)' has shape [\(n), \(r)]: need 0 < r <= n")
        }
        // The host hands out contiguous F32 tensors (ABI rule).
        modules.append(HRAModule(u: data.assumingMemoryBound(to: Float.self), n: n, r: r, gramSchmidt: gramSchmidt))
    }
    adapterOut?.pointee = Unmanaged.passRetained(HRAAdapter(modules: modules)).toOpaque()
    return Int32(AH_OK.rawValue)
}

private let moduleType = UnsafePointer(strdup("hra")!)

private let moduleInfo: @convention(c) (UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<ah_module_info>?,
                                        UnsafeMutablePointer<ah_error>?) -> Int32 = { handle, index, out, err in
    let adapter = HRAAdapter.from(handle)
    guard index < adapter.modules.count, let out else { return fail(err, AH_ERR_INTERNAL, "module index \(index) out of range") }
    out.pointee.module_type = moduleType
    out.pointee.rank = Int32(adapter.modules[index].r)
    out.pointee.alpha = .nan
    out.pointee.depends_on_weight = 1
    out.pointee.changes_bias = 0
    return Int32(AH_OK.rawValue)
}

private let delta: @convention(c) (UnsafeMutableRawPointer?, Int, UnsafePointer<ah_tensor>?, Float,
                                   UnsafeMutablePointer<ah_tensor>?, UnsafeMutablePointer<ah_error>?) -> Int32 = {
    handle, index, weightPointer, strength, out, err in
    let adapter = HRAAdapter.from(handle)
    guard index < adapter.modules.count, let weight = weightPointer?.pointee, let out else {
        return fail(err, AH_ERR_INTERNAL, "bad delta call for module \(index)")
    }
    let m = adapter.modules[index]
    guard weight.rank == 2 || weight.rank == 4, let data = weight.data else {
        return fail(err, AH_ERR_UNSUPPORTED, "HRA adapts linear and conv2d layers; the weight has rank \(weight.rank)")
    }
    let shape = withUnsafeBytes(of: weight.shape) { Array($0.bindMemory(to: Int64.self).prefix(Int(weight.rank))) }
    let rows = Int(shape[0]), n = shape.dropFirst().reduce(1) { $0 * Int($1) }
    if weight.rank == 4 && shape[2] != shape[3] {
        return fail(err, AH_ERR_UNSUPPORTED, "PEFT's HRA assumes square kernels; got \(shape[2])x\(shape[3])")
    }
    guard n == m.n else {
        return fail(err, AH_ERR_INVALID_INPUT,
                    "hra_u has \(m.n) rows but the layer's weight \(shape) has \(n) inputs (in·k·k)")
    }
    let buffer = adapter.buffer(count: rows * n)
    m.delta(weight: data.assumingMemoryBound(to: Float.self), rows: rows, strength: strength, out: buffer)
    var t = ah_tensor()
    t.data = UnsafeMutableRawPointer(buffer)
    t.dtype = Int32(AH_DTYPE_F32.rawValue)
    t.rank = weight.rank
    t.shape = weight.shape
    // Contiguous strides for the weight's shape.
    withUnsafeMutableBytes(of: &t.strides) { raw in
        let strides = raw.bindMemory(to: Int64.self)
        var step: Int64 = 1
        for d in (0..<Int(weight.rank)).reversed() {
            strides[d] = step
            step *= shape[d]
        }
    }
    out.pointee = t
    return Int32(AH_OK.rawValue)
}

private let freeAdapter: @convention(c) (UnsafeMutableRawPointer?) -> Void = { handle in
    guard let handle else { return }
    Unmanaged<HRAAdapter>.fromOpaque(handle).release()
}

// MARK: - Extra functions (called by the host through libffi)

private let describeText = UnsafeMutablePointer<CChar>.allocate(capacity: 256)

private let describe: @convention(c) () -> UnsafePointer<CChar>? = {
    let text = "PEFT HRA plugin 1.0 (Swift): W' = W·∏(I − 2ûûᵀ), apply_GS=\(optionApplyGS ? 1 : 0)"
    let bytes = Array(text.utf8.prefix(255))
    bytes.withUnsafeBytes { UnsafeMutableRawPointer(describeText).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    describeText[bytes.count] = 0
    return UnsafePointer(describeText)
}

/// 0 = set, -1 = unknown option, -2 = bad value.
private let setOption: @convention(c) (UnsafePointer<CChar>?, Double) -> Int32 = { name, value in
    guard let name, String(cString: name) == "apply_GS" else { return -1 }
    guard value == 0 || value == 1 else { return -2 }
    optionApplyGS = value == 1
    return 0
}

private let getOption: @convention(c) (UnsafePointer<CChar>?) -> Double = { name in
    guard let name, String(cString: name) == "apply_GS" else { return .nan }
    return optionApplyGS ? 1 : 0
}

// MARK: - Descriptor

private func cString(_ s: String) -> UnsafePointer<CChar> { UnsafePointer(strdup(s)!) }

private func function(_ name: String, _ doc: String, _ fn: @convention(c) () -> Void, returns: ah_ffi_type,
                      _ args: [ah_ffi_type]) -> ah_plugin_function {
    var f = ah_plugin_function()
    f.name = cString(name)
    f.doc = cString(doc)
    f.fn = fn
    f.return_type = Int32(returns.rawValue)
    f.arg_count = Int32(args.count)
    withUnsafeMutableBytes(of: &f.arg_types) { raw in
        let types = raw.bindMemory(to: Int32.self)
        for (i, t) in args.enumerated() { types[i] = Int32(t.rawValue) }
    }
    return f
}

/// The descriptor and everything it points to live for the life of the process (allocated
/// once, never freed), as the ABI requires.
private let descriptor: UnsafePointer<ah_plugin_descriptor> = {
    let patterns = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: 1)
    patterns[0] = cString("*.hra_u")
    let functions = UnsafeMutablePointer<ah_plugin_function>.allocate(capacity: 3)
    // The function table's `fn` is type-erased; libffi calls it with the declared signature.
    functions[0] = function("describe", "one line about the plugin and its options",
                            unsafeBitCast(describe, to: (@convention(c) () -> Void).self), returns: AH_FFI_STRING, [])
    functions[1] = function("set_option", "set an option read at load: apply_GS (0|1); 0 = ok, -1 = unknown, -2 = bad value",
                            unsafeBitCast(setOption, to: (@convention(c) () -> Void).self), returns: AH_FFI_I32,
                            [AH_FFI_STRING, AH_FFI_F64])
    functions[2] = function("get_option", "the value of an option (NaN when unknown)",
                            unsafeBitCast(getOption, to: (@convention(c) () -> Void).self), returns: AH_FFI_F64,
                            [AH_FFI_STRING])
    var d = ah_plugin_descriptor()
    d.abi_version = UInt32(AH_PLUGIN_ABI_VERSION)
    d.struct_size = UInt32(MemoryLayout<ah_plugin_descriptor>.size)
    d.method_id = cString("hra")
    d.summary = cString("PEFT HRA: chained Householder reflections W·∏(I − 2ûûᵀ) (linear and conv2d; apply_GS via set_option)")
    d.key_patterns = UnsafePointer(patterns)
    d.key_pattern_count = 1
    d.claim_key = claimKey
    d.load = load
    d.module_info = moduleInfo
    d.delta = delta
    d.forward = nil  // weight-dependent: the host uses the dense delta
    d.free_adapter = freeAdapter
    d.functions = UnsafePointer(functions)
    d.function_count = 3
    let p = UnsafeMutablePointer<ah_plugin_descriptor>.allocate(capacity: 1)
    p.initialize(to: d)
    return UnsafePointer(p)
}()

@_cdecl("adapterhost_plugin_entry")
public func adapterhostPluginEntry() -> UnsafePointer<ah_plugin_descriptor> {
    descriptor
}
