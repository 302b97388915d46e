import Testing
@testable import Tensor

// Shared helpers for the OpsTests* suites: a seeded generator, element access that goes
// through strides directly (independent of the ops' own iteration code), and tolerance checks.

/// SplitMix64: a small deterministic generator so every test sees the same numbers.
struct OpsRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [lo, hi), from the top 24 bits (exactly representable in F32).
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
}

/// A contiguous F32 tensor of uniform values in [lo, hi).
func opsRandom(_ shape: [Int], seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) -> Tensor {
    var rng = OpsRNG(seed: seed)
    return Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.uniform(lo, hi) })
}

/// Every multi-index of `shape`, row-major.
func opsIndices(_ shape: [Int]) -> [[Int]] {
    var result: [[Int]] = [[]]
    for size in shape {
        result = result.flatMap { prefix in (0..<size).map { prefix + [$0] } }
    }
    return result
}

/// Element at `index`, read through the tensor's own strides and offset (any layout, any dtype).
func opsElement(_ t: Tensor, _ index: [Int]) -> Double {
    precondition(index.count == t.rank)
    var offset = t.offset
    for d in 0..<t.rank { offset += index[d] * t.strides[d] }
    return readDouble(UnsafeRawPointer(t.storage.bytes), t.dtype, offset)
}

/// Element at `index` of a tensor broadcast to `shape` (NumPy rules: trailing alignment, size-1 axes repeat).
func opsBroadcastElement(_ t: Tensor, _ index: [Int]) -> Double {
    let lead = index.count - t.rank
    return opsElement(t, (0..<t.rank).map { t.shape[$0] == 1 ? 0 : index[lead + $0] })
}

/// Checks `|actual - expected| <= tolerance(i)` element by element; reports the worst index.
func opsExpectClose(_ actual: [Double], _ expected: [Double], _ what: String,
                    tolerance: (Int) -> Double, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.count) values, expected \(expected.count)",
            sourceLocation: sourceLocation)
    guard actual.count == expected.count else { return }
    var worst: (index: Int, excess: Double)? = nil
    for i in actual.indices {
        let a = actual[i], e = expected[i]
        if a.isNaN && e.isNaN { continue }
        if a == e { continue } // also covers equal infinities
        let excess = abs(a - e) - tolerance(i)
        if !(excess <= 0), worst == nil || excess > worst!.excess || excess.isNaN { worst = (i, excess) }
    }
    if let worst {
        Issue.record("\(what): index \(worst.index) got \(actual[worst.index]), expected \(expected[worst.index]) (tolerance \(tolerance(worst.index)))",
                     sourceLocation: sourceLocation)
    }
}

/// Checks bitwise-equal F32 values (NaN matches NaN).
func opsExpectExact(_ actual: [Double], _ expected: [Double], _ what: String,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    opsExpectClose(actual, expected, what, tolerance: { _ in 0 }, sourceLocation: sourceLocation)
}

/// F32 rounding of a Double, as a Double (the value an exact-then-rounded F32 op would produce).
func opsF32(_ x: Double) -> Double { Double(Float(x)) }

/// One unit in the last place of `Float(x)` (for |x| in the normal range; the subnormal spacing below).
func opsULP(_ x: Double) -> Double {
    let f = Swift.max(abs(Float(x)), Float.leastNormalMagnitude)
    return Double(f.ulp)
}
