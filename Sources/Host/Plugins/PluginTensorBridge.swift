#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CAdapterHostPlugin
import Tensor

/// Conversions between host tensors and the ABI's `ah_tensor` views, and `ah_error` helpers.
enum PluginTensorBridge {
    /// A view of `tensor` (F32, contiguous) for the plugin. The view borrows the tensor's
    /// storage: the caller keeps `tensor` alive for as long as the plugin may read it.
    static func view(of tensor: Tensor) -> ah_tensor {
        precondition(tensor.dtype == .f32 && tensor.isContiguous, "plugins receive contiguous F32 tensors")
        precondition(tensor.rank <= Int(AH_MAX_RANK), "rank \(tensor.rank) exceeds AH_MAX_RANK")
        var t = ah_tensor()
        t.data = tensor.baseAddress
        t.dtype = Int32(AH_DTYPE_F32.rawValue)
        t.rank = Int32(tensor.rank)
        let strides = Tensor.contiguousStrides(for: tensor.shape)
        withUnsafeMutableBytes(of: &t.shape) { raw in
            let p = raw.bindMemory(to: Int64.self)
            for (i, n) in tensor.shape.enumerated() { p[i] = Int64(n) }
        }
        withUnsafeMutableBytes(of: &t.strides) { raw in
            let p = raw.bindMemory(to: Int64.self)
            for (i, n) in strides.enumerated() { p[i] = Int64(n) }
        }
        return t
    }

    /// The shape of a plugin-returned tensor, after checking rank and dtype; a reason on failure.
    static func checkedShape(of t: ah_tensor) -> Result<[Int], OutputProblem> {
        guard t.dtype == Int32(AH_DTYPE_F32.rawValue) else {
            return .failure(.init("dtype \(dtypeName(t.dtype)), expected F32"))
        }
        guard (0...Int32(AH_MAX_RANK)).contains(t.rank) else {
            return .failure(.init("rank \(t.rank) is outside 0...\(AH_MAX_RANK)"))
        }
        let shape = withUnsafeBytes(of: t.shape) { Array($0.bindMemory(to: Int64.self).prefix(Int(t.rank))) }
        guard shape.allSatisfy({ $0 >= 0 && $0 <= Int64(Int32.max) }) else {
            return .failure(.init("shape \(shape) has a negative or huge dimension"))
        }
        return .success(shape.map { Int($0) })
    }

    /// An owned copy of a plugin-returned F32 tensor whose shape was checked to be `shape`.
    /// Honors the plugin's strides (which must be >= 0).
    static func copy(_ t: ah_tensor, shape: [Int]) -> Result<Tensor, OutputProblem> {
        let count = shape.reduce(1, *)
        let result = Tensor(uninitialized: shape, dtype: .f32)
        if count == 0 { return .success(result) }
        guard let data = t.data else { return .failure(.init("data is NULL for \(count) elements")) }
        let strides = withUnsafeBytes(of: t.strides) { Array($0.bindMemory(to: Int64.self).prefix(shape.count)) }
        guard strides.allSatisfy({ $0 >= 0 }) else { return .failure(.init("negative strides \(strides)")) }
        let src = data.assumingMemoryBound(to: Float.self)
        let contiguous = Tensor.contiguousStrides(for: shape).map(Int64.init)
        result.withMutableFloats { dst in
            // A dimension of size 1 may carry any stride; only the others decide contiguity.
            let isContiguous = zip(zip(shape, strides), contiguous).allSatisfy { $0.0 == 1 || $0.1 == $1 }
            if isContiguous {
                dst.baseAddress!.update(from: src, count: count)
                return
            }
            var index = [Int](repeating: 0, count: shape.count)
            for i in 0..<count {
                var offset = 0
                for d in 0..<shape.count { offset += index[d] * Int(strides[d]) }
                dst[i] = src[offset]
                var d = shape.count - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < shape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return .success(result)
    }

    /// A reason a plugin's output is unusable.
    struct OutputProblem: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    static func dtypeName(_ code: Int32) -> String {
        switch code {
        case 0: return "F32"
        case 1: return "F16"
        case 2: return "BF16"
        case 3: return "F64"
        case 4: return "I64"
        case 5: return "I32"
        case 6: return "U8"
        default: return "unknown dtype \(code)"
        }
    }

    /// The message of an `ah_error` the plugin filled. Reads at most the buffer, so a plugin
    /// that forgot the terminator cannot make the host read past it.
    static func message(of error: ah_error) -> String {
        withUnsafeBytes(of: error.message) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
    }

    /// Fills `err` for the plugin (host services reporting failure): code and a truncated,
    /// NUL-terminated message.
    static func fill(_ err: UnsafeMutablePointer<ah_error>?, status: ah_status, message: String) {
        guard let err else { return }
        err.pointee.code = Int32(status.rawValue)
        withUnsafeMutableBytes(of: &err.pointee.message) { raw in
            let utf8 = Array(message.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: utf8)
            raw[utf8.count] = 0
        }
    }
}
