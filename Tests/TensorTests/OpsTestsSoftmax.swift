import Foundation
import Testing
@testable import Tensor

/// Softmax along `axis` by definition in F64, max-shifted. The shift `x − max` is rounded to
/// the input's precision first, as the op (and torch) computes it in F32: that rounding moves
/// exp's argument by up to ½ ulp of |x − max|, which no later step can undo.
private func referenceSoftmax(_ t: Tensor, axis: Int) -> [Double] {
    let shift: (Double, Double) -> Double = t.dtype == .f64 ? { $0 - $1 } : { Double(Float($0) - Float($1)) }
    let indices = opsIndices(t.shape)
    return indices.map { index -> Double in
        let slice = (0..<t.shape[axis]).map { k -> Double in
            var i = index
            i[axis] = k
            return opsElement(t, i)
        }
        let top = slice.max()!
        let total = slice.reduce(0) { $0 + exp(shift($1, top)) }
        return exp(shift(opsElement(t, index), top)) / total
    }
}

/// F32 softmax error: exp (< 1 ulp), the F64 sum and reciprocal (rounded once), and the final
/// product (½ ulp) give < 2 ulp of the exact value; allow 2 ulp plus a tiny absolute floor for
/// results near F32's subnormal range.
private func softmaxTolerance(_ expected: [Double]) -> (Int) -> Double {
    { 2 * opsULP(expected[$0]) + 1e-38 }
}

@Suite("OpsTests: softmax")
struct OpsTestsSoftmax {
    @Test("Last axis and middle/first axes against the definition")
    func axes() {
        let t = opsRandom([3, 5, 4], seed: 121, -4, 4)
        for axis in [-1, 2, 1, 0] {
            let positive = axis < 0 ? axis + 3 : axis
            let expected = referenceSoftmax(t, axis: positive)
            let result = t.softmax(axis: axis)
            #expect(result.shape == t.shape && result.dtype == .f32)
            opsExpectClose(result.doubles, expected, "softmax axis \(axis)", tolerance: softmaxTolerance(expected))
        }
        let strided = opsRandom([4, 6], seed: 122).transposed()
        let expectedStrided = referenceSoftmax(strided, axis: 1)
        opsExpectClose(strided.softmax().doubles, expectedStrided, "transposed input", tolerance: softmaxTolerance(expectedStrided))
    }

    @Test("Large logits do not overflow; masks (-inf) give exact zeros; all -inf gives NaN")
    func stability() {
        // torch.softmax(torch.tensor([1000., 1001, 1002]), 0) = [0.09003057, 0.24472848, 0.66524094].
        let big = Tensor(shape: [3], values: [1000, 1001, 1002]).softmax(axis: 0).doubles
        let torchValues = [0.09003057330846786, 0.2447284758090973, 0.6652409434318542]
        opsExpectClose(big, torchValues, "large logits", tolerance: { 2 * opsULP(torchValues[$0]) })
        let negative = Tensor(shape: [3], values: [-1000, -1001, -1002]).softmax(axis: 0).doubles
        opsExpectClose(negative, torchValues.reversed(), "large negative logits", tolerance: { 2 * opsULP(torchValues[2 - $0]) })
        let masked = Tensor(shape: [2, 3], values: [0, -.infinity, 0, -.infinity, -.infinity, -.infinity]).softmax().floats
        #expect(masked[0] == 0.5 && masked[1] == 0 && masked[2] == 0.5)
        #expect(masked[3...].allSatisfy { $0.isNaN })
        let huge = Tensor(shape: [2], values: [Float.greatestFiniteMagnitude, 0]).softmax().floats
        #expect(huge == [1, 0])
    }

    @Test("Rows sum to 1; wide strided axis (> 1024 columns) and parallel rows")
    func largeShapes() {
        let rows = opsRandom([300, 1000], seed: 123, -20, 20).softmax()
        let values = rows.floats
        for r in 0..<300 {
            let total = values[(r * 1000)..<((r + 1) * 1000)].reduce(0.0) { $0 + Double($1) }
            #expect(abs(total - 1) < 1e-5, "row \(r) sums to \(total)")
        }
        let wide = opsRandom([2, 3, 1500], seed: 124, -5, 5)
        let result = wide.softmax(axis: 1)
        let expected = referenceSoftmax(wide, axis: 1)
        opsExpectClose(result.doubles, expected, "axis 1 with inner 1500", tolerance: softmaxTolerance(expected))
    }

    @Test("F64 softmax stays F64; F16 widens to F32")
    func dtypes() {
        let t64 = Tensor(shape: [2, 2], doubles: [0.5, -0.25, 3, 3])
        let r = t64.softmax()
        #expect(r.dtype == .f64)
        let expected = [1 / (1 + exp(-0.75)), exp(-0.75) / (1 + exp(-0.75)), 0.5, 0.5]
        opsExpectClose(r.doubles, expected, "f64", tolerance: { 4e-16 * max(1, expected[$0]) })
        let h = opsRandom([2, 8], seed: 125).to(.f16)
        let expected16 = referenceSoftmax(h, axis: 1)
        #expect(h.softmax().dtype == .f32)
        opsExpectClose(h.softmax().doubles, expected16, "f16 input", tolerance: softmaxTolerance(expected16))
    }
}
