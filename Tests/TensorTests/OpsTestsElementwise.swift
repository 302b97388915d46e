import Foundation
import Testing
@testable import Tensor

/// Reference: `op` applied to every broadcast element pair, in F32 (one rounding, as the op does).
private func referenceBinary(_ a: Tensor, _ b: Tensor, _ op: (Float, Float) -> Float) -> (shape: [Int], values: [Double]) {
    let rank = max(a.rank, b.rank)
    var shape = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let da = i < rank - a.rank ? 1 : a.shape[i - (rank - a.rank)]
        let db = i < rank - b.rank ? 1 : b.shape[i - (rank - b.rank)]
        shape[i] = da == 1 ? db : da
    }
    let values = opsIndices(shape).map {
        Double(op(Float(opsBroadcastElement(a, $0)), Float(opsBroadcastElement(b, $0))))
    }
    return (shape, values)
}

@Suite("OpsTests: elementwise arithmetic")
struct OpsTestsElementwise {
    static let broadcastPairs: [([Int], [Int])] = [
        ([2, 3, 4], [2, 3, 4]), ([2, 3, 4], [4]), ([2, 1, 4], [3, 1]), ([3, 1, 5], [1, 4, 1]),
        ([2, 3], []), ([], [2, 3]), ([1], [5, 1]), ([4, 1], [1, 6]), ([2, 0, 3], [3]),
    ]

    @Test("+ - * / broadcast and agree exactly with F32 arithmetic", arguments: broadcastPairs)
    func broadcasting(shapes: ([Int], [Int])) {
        let a = opsRandom(shapes.0, seed: 1), b = opsRandom(shapes.1, seed: 2, 0.5, 2)
        let ops: [(String, (Tensor, Tensor) -> Tensor, (Float, Float) -> Float)] = [
            ("+", { $0 + $1 }, { $0 + $1 }), ("-", { $0 - $1 }, { $0 - $1 }),
            ("*", { $0 * $1 }, { $0 * $1 }), ("/", { $0 / $1 }, { $0 / $1 }),
        ]
        for (name, op, reference) in ops {
            let result = op(a, b)
            let expected = referenceBinary(a, b, reference)
            #expect(result.shape == expected.shape, "\(shapes.0) \(name) \(shapes.1)")
            #expect(result.dtype == .f32 && result.isContiguous)
            opsExpectExact(result.doubles, expected.values, "\(shapes.0) \(name) \(shapes.1)")
        }
    }

    @Test("Non-contiguous operands: permuted and step-sliced views")
    func stridedOperands() {
        let a = opsRandom([4, 5, 6], seed: 3).permuted([2, 0, 1])            // [6, 4, 5]
        let b = opsRandom([4, 10], seed: 4).sliced(axis: 1, 0..<10, step: 2)  // [4, 5], strides [10, 2]
        #expect(!a.isContiguous && !b.isContiguous)
        let expected = referenceBinary(a, b, { $0 * $1 })
        let result = a * b
        #expect(result.shape == [6, 4, 5])
        opsExpectExact(result.doubles, expected.values, "permuted * sliced")
        // Transposed plus itself: both operands strided differently.
        let m = opsRandom([7, 9], seed: 5)
        opsExpectExact((m.transposed() - m.transposed().contiguous()).doubles,
                       [Double](repeating: 0, count: 63), "t - contiguous(t)")
    }

    @Test("Large inputs run in parallel chunks that split rows")
    func parallelChunks() {
        // 601 × 499 = 299,899 elements ≥ Parallel.elementwiseThreshold (2^18): two chunks, whose
        // boundary falls inside a row; the transposed view makes every run strided.
        let a = opsRandom([499, 601], seed: 6).transposed(), b = opsRandom([499], seed: 7)
        #expect(a.count >= Parallel.elementwiseThreshold)
        let result = a + b
        let pa = a.contiguous().floats, pb = b.floats
        var expected = [Double](repeating: 0, count: a.count)
        for i in 0..<601 { for j in 0..<499 { expected[i * 499 + j] = Double(pa[i * 499 + j] + pb[j]) } }
        opsExpectExact(result.doubles, expected, "large transposed + row")
        // Contiguous in-place path over the same size.
        let y = opsRandom([601, 499], seed: 8).copy(), y0 = y.floats
        let x = opsRandom([601, 499], seed: 9), px = x.floats
        y.addScaled(x, alpha: -0.75)
        opsExpectExact(y.doubles, (0..<y0.count).map { Double(y0[$0] + Float(-0.75) * px[$0]) }, "large addScaled")
    }

    @Test("F16 and BF16 inputs widen to F32; any F64 operand makes the op F64")
    func dtypes() {
        let a16 = opsRandom([3, 4], seed: 10).to(.f16), b = opsRandom([4], seed: 11)
        let sum = a16 + b
        #expect(sum.dtype == .f32)
        opsExpectExact(sum.doubles, referenceBinary(a16.to(.f32), b, { $0 + $1 }).values, "f16 + f32")
        let aBF = opsRandom([3, 4], seed: 12).to(.bf16)
        #expect((aBF * aBF).dtype == .f32)
        opsExpectExact((aBF * aBF).doubles, referenceBinary(aBF.to(.f32), aBF.to(.f32), { $0 * $1 }).values, "bf16 * bf16")

        let a64 = Tensor(shape: [2, 2], doubles: [1.0 / 3, 2.0 / 3, 1e-300, -7])
        let product = a64 * Tensor(shape: [2], values: [0.1, 3])
        #expect(product.dtype == .f64)
        let tenth = Double(Float(0.1))
        let expectedProduct: [Double] = [1.0 / 3 * tenth, 2.0 / 3 * 3, 1e-300 * tenth, -21]
        #expect(product.doubles == expectedProduct)
        let expectedQuotient: [Double] = [1.0 / 3 / 3, 2.0 / 3 / 3, 1e-300 / 3, -7.0 / 3]
        #expect((a64 / 3).doubles == expectedQuotient)
        let expectedScaled: [Double] = [1.0 / 3 * 0.1, 2.0 / 3 * 0.1, 1e-300 * 0.1, -7 * 0.1]
        #expect(a64.scaled(by: 0.1).doubles == expectedScaled)
    }

    @Test("Scalar operators, scaled, negated")
    func scalars() {
        let a = opsRandom([5, 3], seed: 13), v = a.floats
        opsExpectExact((a + 0.3).doubles, v.map { Double($0 + Float(0.3)) }, "a + 0.3")
        opsExpectExact((a - 0.3).doubles, v.map { Double($0 - Float(0.3)) }, "a - 0.3")
        opsExpectExact((a * 0.3).doubles, v.map { Double($0 * Float(0.3)) }, "a * 0.3")
        opsExpectExact((0.3 * a).doubles, v.map { Double($0 * Float(0.3)) }, "0.3 * a")
        opsExpectExact((a / 0.3).doubles, v.map { Double($0 / Float(0.3)) }, "a / 0.3 (true division)")
        opsExpectExact(a.scaled(by: -2.5).doubles, v.map { Double($0 * -2.5) }, "scaled")
        opsExpectExact((-a).doubles, v.map { Double(-$0) }, "negated")
        #expect((Tensor(shape: [2], values: [1, -1]) / Tensor(shape: [], values: [0])).floats == [.infinity, -.infinity])
    }

    @Test("clamped: bounds, open ends, NaN and infinities pass as torch.clamp")
    func clamp() {
        let x = Tensor(shape: [7], values: [-3, -0.5, 0, 0.25, 2, .nan, .infinity])
        let both = x.clamped(min: -1, max: 1).floats
        #expect(both[0] == -1 && both[1] == -0.5 && both[2] == 0 && both[3] == 0.25 && both[4] == 1 && both[5].isNaN && both[6] == 1)
        let low = x.clamped(min: 0).floats
        #expect(low[0] == 0 && low[1] == 0 && low[4] == 2 && low[5].isNaN && low[6] == .infinity)
        let high = x.clamped(max: 0.1).floats
        #expect(high[0] == -3 && high[3] == Float(0.1) && high[5].isNaN && high[6] == Float(0.1))
        // Strided input.
        let m = opsRandom([6, 4], seed: 14).transposed()
        opsExpectExact(m.clamped(min: -0.5, max: 0.5).doubles,
                       opsIndices(m.shape).map { min(max(opsElement(m, $0), -0.5), 0.5) }, "clamp of transposed")
    }

    @Test("addScaled in place and addingScaled: W + w·delta, with broadcasting")
    func addScaled() {
        let w0 = opsRandom([8, 6], seed: 15), delta = opsRandom([8, 6], seed: 16)
        let expected = zip(w0.floats, delta.floats).map { Double($0 + Float(0.3) * $1) }
        opsExpectExact(w0.addingScaled(delta, alpha: 0.3).doubles, expected, "addingScaled")
        let w = w0.copy()
        w.addScaled(delta, alpha: 0.3)
        opsExpectExact(w.doubles, expected, "addScaled in place")
        #expect(w0.doubles != w.doubles) // the source of the copy is untouched

        // Broadcast row and a transposed (strided) delta.
        let bias = opsRandom([6], seed: 17), wb = w0.copy()
        wb.addScaled(bias, alpha: 2)
        opsExpectExact(wb.doubles, opsIndices([8, 6]).map { Double(Float(opsElement(w0, $0)) + 2 * Float(opsElement(bias, [$0[1]]))) }, "broadcast bias")
        let deltaT = opsRandom([6, 8], seed: 18).transposed(), wt = w0.copy()
        wt.addScaled(deltaT, alpha: -1.5)
        opsExpectExact(wt.doubles, opsIndices([8, 6]).map { Double(Float(opsElement(w0, $0)) + Float(-1.5) * Float(opsElement(deltaT, $0))) }, "transposed delta")
        // The target itself as the source (same layout): y += 0.5·y.
        let self3 = Tensor(shape: [3], values: [2, -4, 8])
        self3.addScaled(self3, alpha: 0.5)
        #expect(self3.floats == [3, -6, 12])
        // F16 delta widened into an F64 target.
        let w64 = Tensor(shape: [2], doubles: [1, 2]), d16 = Tensor(shape: [2], values: [0.5, 0.25]).to(.f16)
        w64.addScaled(d16, alpha: 0.1)
        #expect(w64.doubles == [1 + 0.1 * 0.5, 2 + 0.1 * 0.25])
    }

    @Test("Unary functions against libm / exact arithmetic")
    func unary() {
        let x = opsRandom([4, 50], seed: 19, -6, 6), v = x.floats.map(Double.init)
        let positive = opsRandom([200], seed: 20, 1e-3, 50), p = positive.floats.map(Double.init)
        opsExpectExact(x.absoluteValue().doubles, v.map { abs($0) }, "abs")
        opsExpectExact(x.squared().doubles, v.map { opsF32($0 * $0) }, "square")
        opsExpectExact(positive.squareRoot().doubles, p.map { Double(Float($0).squareRoot()) }, "sqrt (correctly rounded)")
        opsExpectExact(positive.reciprocalSquareRoot().doubles, p.map { Double(1 / Float($0).squareRoot()) }, "rsqrt")
        opsExpectExact(positive.logarithm().doubles, p.map { Double(logf(Float($0))) }, "log")
        opsExpectExact(x.hyperbolicTangent().doubles, v.map { Double(tanhf(Float($0))) }, "tanh")
        opsExpectExact(x.errorFunction().doubles, v.map { Double(erff(Float($0))) }, "erf")
        // exp: the vectorized polynomial is within 1 ulp of the exact value (see vectorExpAccuracy).
        opsExpectClose(x.exponential().doubles, v.map { exp($0) }, "exp", tolerance: { opsULP(exp(v[$0])) })
        // sigmoid = 1 / (1 + e^-x): exp's 1 ulp plus the add and divide roundings.
        opsExpectClose(x.sigmoid().doubles, v.map { 1 / (1 + exp(-$0)) }, "sigmoid", tolerance: { 3 * opsULP(1 / (1 + exp(-v[$0]))) })
        let extremes = Tensor(shape: [4], values: [-200, 200, .nan, 0]).sigmoid().floats
        #expect(extremes[0] == 0 && extremes[1] == 1 && extremes[2].isNaN && extremes[3] == 0.5)
        // F64 uses libm's double functions.
        let x64 = Tensor(shape: [3], doubles: [-1.5, 0.1, 3])
        #expect(x64.exponential().doubles == [exp(-1.5), exp(0.1), exp(3)])
        #expect(x64.map { $0 * 2 }.floats == [-3, Float(0.1) * 2, 6])
    }

    @Test("Vectorized F32 exp: < 1 ulp over the whole range, exact limits")
    func vectorExpAccuracy() {
        // A dense sweep of [-104, 89] plus small arguments, against exp in F64.
        var worstULP = 0.0, worstX: Float = 0
        var xs: [Float] = stride(from: Float(-104), through: 89, by: 0.0037).map { $0 }
        xs += stride(from: Float(-1e-3), through: 1e-3, by: 1.3e-6).map { $0 }
        xs += [0, -0.0, Float.leastNormalMagnitude, 88.72283, -87.33655, -103.9, -100, 1, -1, 0.5, Float(M_LN2)]
        for x in xs {
            let exact = exp(Double(x)), got = Double(vectorizableExp(x))
            // Subnormal results: measure in units of the subnormal spacing 2^-149.
            let unit = exact < Double(Float.leastNormalMagnitude) ? Double(Float.leastNonzeroMagnitude) : opsULP(exact)
            let error = abs(got - exact) / unit
            if error > worstULP { worstULP = error; worstX = x }
        }
        #expect(worstULP < 1, "worst error \(worstULP) ulp at x = \(worstX)")
        #expect(vectorizableExp(0) == 1)
        #expect(vectorizableExp(89) == .infinity && vectorizableExp(.infinity) == .infinity)
        #expect(vectorizableExp(-105) == 0 && vectorizableExp(-.infinity) == 0)
        #expect(vectorizableExp(.nan).isNaN)
    }
}
