#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels

/// The element types ops compute in: F32 (the runtime's compute type) and F64 (reference
/// computations). Ops are written once, generic over this protocol, and specialized by the
/// optimizer for each conformer, so inner loops run on concrete `Float` / `Double`.
protocol ComputeScalar: BinaryFloatingPoint, Sendable {
    /// The tensor dtype holding this type.
    static var dtype: DType { get }
    /// This value as F64 (exact for both conformers).
    var doubleValue: Double { get }
    /// `value` rounded to this type (to nearest even).
    init(roundingDouble value: Double)
    /// e^x.
    static func exponential(_ x: Self) -> Self
    /// Natural logarithm.
    static func naturalLog(_ x: Self) -> Self
    /// Hyperbolic tangent.
    static func hyperbolicTangent(_ x: Self) -> Self
    /// Gauss error function.
    static func errorFunction(_ x: Self) -> Self
    /// Row-major GEMM: c = alpha * op(a) * op(b) + beta * c (BLAS must be loaded).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Self,
                     a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
}

extension Float: ComputeScalar {
    static var dtype: DType { .f32 }
    @inline(__always) var doubleValue: Double { Double(self) }
    @inline(__always) init(roundingDouble value: Double) { self = Float(value) }
    /// The vectorizable `exp` (< 1 ulp, see VectorExp.swift), not libm: loops over it vectorize.
    @inline(__always) static func exponential(_ x: Float) -> Float { vectorizableExp(x) }
    @inline(__always) static func naturalLog(_ x: Float) -> Float { logf(x) }
    @inline(__always) static func hyperbolicTangent(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) static func errorFunction(_ x: Float) -> Float { erff(x) }
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        // Int32(...) traps on overflow: BLAS takes 32-bit dimensions (LP64 OpenBLAS).
        ah_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha,
                 a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

extension Double: ComputeScalar {
    static var dtype: DType { .f64 }
    @inline(__always) var doubleValue: Double { self }
    @inline(__always) init(roundingDouble value: Double) { self = value }
    @inline(__always) static func exponential(_ x: Double) -> Double { exp(x) }
    @inline(__always) static func naturalLog(_ x: Double) -> Double { log(x) }
    @inline(__always) static func hyperbolicTangent(_ x: Double) -> Double { tanh(x) }
    @inline(__always) static func errorFunction(_ x: Double) -> Double { erf(x) }
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                     a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                     beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        ah_dgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha,
                 a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

/// The dtype an op computes in for these operands: F64 when any operand is F64 (as torch
/// promotes), otherwise F32. Every other dtype (F16, BF16, F8, integers) is widened to F32.
func computeDType(_ operands: Tensor...) -> DType {
    operands.contains { $0.dtype == .f64 } ? .f64 : .f32
}

extension Tensor {
    /// This tensor as `T`'s dtype: `self` (any layout, no copy) when it already is, else a
    /// contiguous converted copy. Unlike `to(_:)`, never copies a strided view of the right dtype.
    func asCompute<T: ComputeScalar>(_: T.Type) -> Tensor {
        dtype == T.dtype ? self : to(T.dtype)
    }

    /// Typed pointer to the first element. The caller guarantees `dtype == T.dtype`.
    func typedBase<T: ComputeScalar>(_: T.Type) -> UnsafeMutablePointer<T> {
        precondition(dtype == T.dtype, "expected \(T.dtype.rawValue), got \(dtype.rawValue)")
        return baseAddress.assumingMemoryBound(to: T.self)
    }

    /// Normalizes a possibly negative axis, naming the op and shape when it is out of range.
    func normalizedAxis(_ axis: Int, _ op: String) -> Int {
        let a = axis < 0 ? axis + rank : axis
        precondition(a >= 0 && a < rank, "\(op): axis \(axis) out of range for shape \(shape)")
        return a
    }
}
