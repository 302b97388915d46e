/// Elementwise arithmetic with NumPy broadcasting, scalar ops, clamp, `y += alpha * x`, and
/// the unary functions activations are built from.
///
/// Dtypes: results are F32, computed in F32, unless an operand is F64, in which case the op
/// computes in and returns F64 (as torch promotes). Every other input dtype (F16, BF16, F8,
/// integers) is widened to F32 first. Scalars (`Double` parameters) are rounded to the compute
/// dtype before use, as torch does with Python numbers.
///
/// Unary method names avoid the global math functions' names (`exp`, `sqrt`, `abs`, `max`...):
/// a `Tensor` method named `sqrt` would shadow `sqrt(_:)` inside every `Tensor` extension.
extension Tensor {
    // MARK: Binary, broadcasting

    /// Elementwise sum, broadcasting `lhs` and `rhs` to a common shape (NumPy rules).
    public static func + (lhs: Tensor, rhs: Tensor) -> Tensor { binaryOp(lhs, rhs, "add", AddFamily.self) }
    /// Elementwise difference, broadcasting.
    public static func - (lhs: Tensor, rhs: Tensor) -> Tensor { binaryOp(lhs, rhs, "sub", SubFamily.self) }
    /// Elementwise product, broadcasting.
    public static func * (lhs: Tensor, rhs: Tensor) -> Tensor { binaryOp(lhs, rhs, "mul", MulFamily.self) }
    /// Elementwise quotient (IEEE: x/0 is ±inf or NaN), broadcasting.
    public static func / (lhs: Tensor, rhs: Tensor) -> Tensor { binaryOp(lhs, rhs, "div", DivFamily.self) }

    // MARK: With a scalar

    /// Adds a scalar to every element.
    public static func + (lhs: Tensor, rhs: Double) -> Tensor { lhs + scalarOperand(rhs, for: lhs) }
    /// Subtracts a scalar from every element.
    public static func - (lhs: Tensor, rhs: Double) -> Tensor { lhs - scalarOperand(rhs, for: lhs) }
    /// Multiplies every element by a scalar (same as `scaled(by:)`).
    public static func * (lhs: Tensor, rhs: Double) -> Tensor { lhs.scaled(by: rhs) }
    /// Multiplies every element by a scalar.
    public static func * (lhs: Double, rhs: Tensor) -> Tensor { rhs.scaled(by: lhs) }
    /// Divides every element by a scalar (a true division, not a multiply by the reciprocal).
    public static func / (lhs: Tensor, rhs: Double) -> Tensor { lhs / scalarOperand(rhs, for: lhs) }
    /// Negates every element.
    public static prefix func - (operand: Tensor) -> Tensor { operand.negated() }

    /// `self * factor`.
    public func scaled(by factor: Double) -> Tensor {
        switch computeDType(self) {
        case .f64: return unaryOp(Double.self, ScaleOp(factor: factor))
        default: return unaryOp(Float.self, ScaleOp(factor: Float(factor)))
        }
    }

    /// Every element limited to `[min, max]` (a nil bound is open). NaN stays NaN, as in
    /// `torch.clamp`. Precondition: `min <= max` when both are given.
    public func clamped(min lower: Double? = nil, max upper: Double? = nil) -> Tensor {
        if let lower, let upper {
            precondition(lower <= upper, "clamped: min \(lower) > max \(upper) for shape \(shape)")
        }
        let lo = lower ?? -.infinity, hi = upper ?? .infinity
        switch computeDType(self) {
        case .f64: return unaryOp(Double.self, ClampOp(lower: lo, upper: hi))
        default: return unaryOp(Float.self, ClampOp(lower: Float(lo), upper: Float(hi)))
        }
    }

    // MARK: y + alpha * x

    /// `self + alpha * x`, with `x` broadcast to `self`'s shape, as a new tensor.
    /// Computed as one rounding of the product and one of the sum (no fused multiply-add;
    /// torch's vectorized `add(alpha:)` fuses, so results can differ by 1 ulp).
    public func addingScaled(_ x: Tensor, alpha: Double) -> Tensor {
        precondition(broadcastShape(shape, x.shape, "addingScaled") == shape,
                     "addingScaled: \(x.shape) does not broadcast to \(shape)")
        switch computeDType(self, x) {
        case .f64:
            return Tensor.binaryOp(asCompute(Double.self), x.asCompute(Double.self), "addingScaled",
                            AddScaledOp(alpha: alpha))
        default:
            return Tensor.binaryOp(asCompute(Float.self), x.asCompute(Float.self), "addingScaled",
                            AddScaledOp(alpha: Float(alpha)))
        }
    }

    /// `self += alpha * x` in place (e.g. `W += w * delta`), with `x` broadcast to `self`'s
    /// shape and widened to `self`'s dtype. Precondition: `self` is contiguous, F32 or F64, and
    /// owns writable storage (not a file mapping), and `x` does not view the same storage in
    /// another layout (`w.addScaled(w, ...)` is fine). Every tensor sharing the storage sees the change.
    public func addScaled(_ x: Tensor, alpha: Double) {
        precondition(dtype == .f32 || dtype == .f64,
                     "addScaled: in-place target must be F32 or F64, got \(dtype.rawValue) \(shape)")
        precondition(isContiguous && storage.isWritable,
                     "addScaled: in-place target \(shape) must be contiguous and writable")
        precondition(broadcastShape(shape, x.shape, "addScaled") == shape,
                     "addScaled: \(x.shape) does not broadcast to \(shape)")
        let source = dtype == .f64 ? x.asCompute(Double.self) : x.asCompute(Float.self)
        // Element i reads source[i] after earlier elements were written: a source that views
        // this storage in any other layout would read updated values.
        precondition(source.storage !== storage
                     || (source.offset == offset && source.expanded(to: shape).strides == strides),
                     "addScaled: x \(x.shape) overlaps the target \(shape) in a different layout")
        if dtype == .f64 {
            applyBinaryInPlace(AddScaledOp(alpha: alpha), target: self, source)
        } else {
            applyBinaryInPlace(AddScaledOp(alpha: Float(alpha)), target: self, source)
        }
    }

    // MARK: Unary functions

    /// `-x`.
    public func negated() -> Tensor { unaryFunction(NegateOp.self, cost: 1) }
    /// `|x|`.
    public func absoluteValue() -> Tensor { unaryFunction(AbsoluteOp.self, cost: 1) }
    /// `x * x`.
    public func squared() -> Tensor { unaryFunction(SquareOp.self, cost: 1) }
    /// `√x` (NaN for negative x), correctly rounded.
    public func squareRoot() -> Tensor { unaryFunction(SquareRootOp.self, cost: 2) }
    /// `1 / √x`, as a true division of 1 by the correctly rounded root.
    public func reciprocalSquareRoot() -> Tensor { unaryFunction(ReciprocalSquareRootOp.self, cost: 3) }
    /// `eˣ`: F32 uses a vectorized polynomial (< 1 ulp, VectorExp.swift), F64 libm `exp`.
    public func exponential() -> Tensor { unaryFunction(ExponentialOp.self, cost: 8) }
    /// Natural logarithm (libm).
    public func logarithm() -> Tensor { unaryFunction(LogarithmOp.self, cost: 8) }
    /// `tanh(x)` (libm).
    public func hyperbolicTangent() -> Tensor { unaryFunction(HyperbolicTangentOp.self, cost: 8) }
    /// `erf(x)` (libm), for exact GELU.
    public func errorFunction() -> Tensor { unaryFunction(ErrorFunctionOp.self, cost: 8) }
    /// `1 / (1 + e⁻ˣ)`; saturates to exactly 0 or 1 without NaN for large |x|.
    public func sigmoid() -> Tensor { unaryFunction(SigmoidOp.self, cost: 8) }

    /// Applies `transform` to every element, in F32 (F64 inputs are narrowed). For one-off
    /// functions: the closure is called per element and is not vectorized.
    public func map(_ transform: (Float) -> Float) -> Tensor {
        let x = asCompute(Float.self)
        let out = Tensor(uninitialized: shape, dtype: .f32)
        let runs = StridedRuns(shape: shape, aStrides: x.strides, bStrides: [Int](repeating: 0, count: rank))
        let src = x.typedBase(Float.self), dst = out.typedBase(Float.self), step = runs.aRunStride
        withExtendedLifetime(x) {
            runs.forEachRun(in: 0..<runs.count) { o, a, _, n in
                for i in 0..<n { dst[o + i] = transform(src[a + i * step]) }
            }
        }
        return out
    }
}

// MARK: - Kernels

/// A two-input elementwise function on one compute type. Conformers are tiny structs; the
/// generic drivers are specialized per conformer, so `apply` inlines into vectorizable loops.
protocol BinaryElementOp {
    associatedtype Scalar: ComputeScalar
    func apply(_ a: Scalar, _ b: Scalar) -> Scalar
}

/// A one-input elementwise function on one compute type.
protocol UnaryElementOp {
    associatedtype Scalar: ComputeScalar
    func apply(_ x: Scalar) -> Scalar
}

/// Stateless unary ops that exist for every compute type.
protocol StatelessUnaryOp { static func apply<T: ComputeScalar>(_ x: T) -> T }

struct AddOp<T: ComputeScalar>: BinaryElementOp {
    @inline(__always) func apply(_ a: T, _ b: T) -> T { a + b }
}
struct SubOp<T: ComputeScalar>: BinaryElementOp {
    @inline(__always) func apply(_ a: T, _ b: T) -> T { a - b }
}
struct MulOp<T: ComputeScalar>: BinaryElementOp {
    @inline(__always) func apply(_ a: T, _ b: T) -> T { a * b }
}
struct DivOp<T: ComputeScalar>: BinaryElementOp {
    @inline(__always) func apply(_ a: T, _ b: T) -> T { a / b }
}
struct AddScaledOp<T: ComputeScalar>: BinaryElementOp {
    let alpha: T
    @inline(__always) func apply(_ a: T, _ b: T) -> T { a + alpha * b }
}

struct ScaleOp<T: ComputeScalar>: UnaryElementOp {
    let factor: T
    @inline(__always) func apply(_ x: T) -> T { x * factor }
}
struct ClampOp<T: ComputeScalar>: UnaryElementOp {
    let lower: T, upper: T
    // Comparisons are false for NaN, so NaN passes through unchanged (torch.clamp does the same).
    @inline(__always) func apply(_ x: T) -> T { x < lower ? lower : (x > upper ? upper : x) }
}
/// Adapts a `StatelessUnaryOp` to one compute type.
struct StatelessUnary<F: StatelessUnaryOp, T: ComputeScalar>: UnaryElementOp {
    @inline(__always) func apply(_ x: T) -> T { F.apply(x) }
}

enum NegateOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { -x } }
enum AbsoluteOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { x.magnitude } }
enum SquareOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { x * x } }
enum SquareRootOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { x.squareRoot() } }
enum ReciprocalSquareRootOp: StatelessUnaryOp {
    @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { 1 / x.squareRoot() }
}
enum ExponentialOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { T.exponential(x) } }
enum LogarithmOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { T.naturalLog(x) } }
enum HyperbolicTangentOp: StatelessUnaryOp {
    @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { T.hyperbolicTangent(x) }
}
enum ErrorFunctionOp: StatelessUnaryOp { @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { T.errorFunction(x) } }
enum SigmoidOp: StatelessUnaryOp {
    // e^-x overflows to +inf for x < ~-88 (F32), giving 1/inf = 0: the right limit, no NaN.
    @inline(__always) static func apply<T: ComputeScalar>(_ x: T) -> T { 1 / (1 + T.exponential(-x)) }
}

// MARK: - Drivers

extension Tensor {
    /// A rank-0 tensor holding `value` in the dtype `other` computes in.
    static func scalarOperand(_ value: Double, for other: Tensor) -> Tensor {
        computeDType(other) == .f64 ? Tensor(shape: [], doubles: [value]) : Tensor(scalar: Float(value))
    }

    /// Runs a stateless binary op in the operands' compute dtype.
    static func binaryOp<Family: StatelessBinaryFamily>(_ a: Tensor, _ b: Tensor, _ name: String,
                                                        _: Family.Type) -> Tensor {
        switch computeDType(a, b) {
        case .f64: return binaryOp(a.asCompute(Double.self), b.asCompute(Double.self), name, Family.op(Double.self))
        default: return binaryOp(a.asCompute(Float.self), b.asCompute(Float.self), name, Family.op(Float.self))
        }
    }

    /// `op(a, b)` over the broadcast shape into a new contiguous tensor. `a` and `b` already
    /// have `Op.Scalar`'s dtype; any layout.
    static func binaryOp<Op: BinaryElementOp>(_ a: Tensor, _ b: Tensor, _ name: String, _ op: Op) -> Tensor {
        let shape = broadcastShape(a.shape, b.shape, name)
        let out = Tensor(uninitialized: shape, dtype: Op.Scalar.dtype)
        applyBinary(op, a, b, into: out)
        return out
    }

    /// Runs a stateless unary op in this tensor's compute dtype.
    func unaryFunction<F: StatelessUnaryOp>(_: F.Type, cost: Int) -> Tensor {
        switch computeDType(self) {
        case .f64: return unaryOp(Double.self, StatelessUnary<F, Double>(), cost: cost)
        default: return unaryOp(Float.self, StatelessUnary<F, Float>(), cost: cost)
        }
    }

    /// `op(x)` for every element, into a new contiguous tensor of `T`'s dtype.
    func unaryOp<Op: UnaryElementOp>(_: Op.Scalar.Type, _ op: Op, cost: Int = 1) -> Tensor {
        let x = asCompute(Op.Scalar.self)
        let out = Tensor(uninitialized: shape, dtype: Op.Scalar.dtype)
        applyUnary(op, x, into: out, cost: cost)
        return out
    }
}

/// Families of binary ops that exist for both compute types, chosen by dtype at run time.
protocol StatelessBinaryFamily {
    associatedtype F32Op: BinaryElementOp where F32Op.Scalar == Float
    associatedtype F64Op: BinaryElementOp where F64Op.Scalar == Double
    static func op(_: Float.Type) -> F32Op
    static func op(_: Double.Type) -> F64Op
}
enum AddFamily: StatelessBinaryFamily {
    static func op(_: Float.Type) -> AddOp<Float> { AddOp() }
    static func op(_: Double.Type) -> AddOp<Double> { AddOp() }
}
enum SubFamily: StatelessBinaryFamily {
    static func op(_: Float.Type) -> SubOp<Float> { SubOp() }
    static func op(_: Double.Type) -> SubOp<Double> { SubOp() }
}
enum MulFamily: StatelessBinaryFamily {
    static func op(_: Float.Type) -> MulOp<Float> { MulOp() }
    static func op(_: Double.Type) -> MulOp<Double> { MulOp() }
}
enum DivFamily: StatelessBinaryFamily {
    static func op(_: Float.Type) -> DivOp<Float> { DivOp() }
    static func op(_: Double.Type) -> DivOp<Double> { DivOp() }
}

/// Writes `op(a, b)` broadcast over `out.shape` into `out` (contiguous, writable, not
/// overlapping `a` or `b`). `a`, `b` have `Op.Scalar`'s dtype and broadcast to `out.shape`.
func applyBinary<Op: BinaryElementOp>(_ op: Op, _ a: Tensor, _ b: Tensor, into out: Tensor) {
    typealias T = Op.Scalar
    let av = a.expanded(to: out.shape), bv = b.expanded(to: out.shape)
    let runs = StridedRuns(shape: out.shape, aStrides: av.strides, bStrides: bv.strides)
    let pa = UnsafePointer(av.typedBase(T.self)), pb = UnsafePointer(bv.typedBase(T.self))
    let po = out.typedBase(T.self)
    let sa = runs.aRunStride, sb = runs.bRunStride
    Parallel.forChunks(runs.count) { range in
        runs.forEachRun(in: range) { o, ao, bo, n in
            binaryRun(op, pa + ao, sa, pb + bo, sb, po + o, n)
        }
    }
}

/// One run of a binary op. The unit-stride and broadcast-scalar cases get their own loops so
/// the compiler vectorizes them; the general strided case is a plain gather loop.
@inline(__always)
func binaryRun<Op: BinaryElementOp>(_ op: Op, _ a: UnsafePointer<Op.Scalar>, _ sa: Int,
                                    _ b: UnsafePointer<Op.Scalar>, _ sb: Int,
                                    _ out: UnsafeMutablePointer<Op.Scalar>, _ n: Int) {
    if sa == 1 && sb == 1 {
        for i in 0..<n { out[i] = op.apply(a[i], b[i]) }
    } else if sa == 1 && sb == 0 {
        let y = b[0]
        for i in 0..<n { out[i] = op.apply(a[i], y) }
    } else if sa == 0 && sb == 1 {
        let x = a[0]
        for i in 0..<n { out[i] = op.apply(x, b[i]) }
    } else {
        for i in 0..<n { out[i] = op.apply(a[i * sa], b[i * sb]) }
    }
}

/// `target[i] = op(target[i], b[i])` with `b` broadcast to `target.shape` (contiguous, writable).
/// A separate loop from `binaryRun` because an output that aliases an input defeats the
/// vectorizer's runtime overlap check; here the single read-write pointer is explicit.
func applyBinaryInPlace<Op: BinaryElementOp>(_ op: Op, target: Tensor, _ b: Tensor) {
    typealias T = Op.Scalar
    let bv = b.expanded(to: target.shape)
    let runs = StridedRuns(shape: target.shape, aStrides: target.strides, bStrides: bv.strides)
    let py = target.typedBase(T.self), pb = UnsafePointer(bv.typedBase(T.self))
    let sb = runs.bRunStride
    Parallel.forChunks(runs.count) { range in
        runs.forEachRun(in: range) { o, _, bo, n in
            let y = py + o, x = pb + bo
            if sb == 1 {
                for i in 0..<n { y[i] = op.apply(y[i], x[i]) }
            } else if sb == 0 {
                let v = x[0]
                for i in 0..<n { y[i] = op.apply(y[i], v) }
            } else {
                for i in 0..<n { y[i] = op.apply(y[i], x[i * sb]) }
            }
        }
    }
}

/// Writes `op(x)` into `out` (contiguous, same shape, not overlapping `x`); `x` any layout.
func applyUnary<Op: UnaryElementOp>(_ op: Op, _ x: Tensor, into out: Tensor, cost: Int = 1) {
    typealias T = Op.Scalar
    let runs = StridedRuns(shape: out.shape, aStrides: x.strides, bStrides: [Int](repeating: 0, count: out.rank))
    let px = UnsafePointer(x.typedBase(T.self)), po = out.typedBase(T.self)
    let sx = runs.aRunStride
    Parallel.forChunks(runs.count, cost: cost) { range in
        runs.forEachRun(in: range) { o, xo, _, n in
            let src = px + xo, dst = po + o
            if sx == 1 {
                for i in 0..<n { dst[i] = op.apply(src[i]) }
            } else {
                for i in 0..<n { dst[i] = op.apply(src[i * sx]) }
            }
        }
    }
}
