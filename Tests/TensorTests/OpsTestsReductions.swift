import Foundation
import Testing
@testable import Tensor

/// Reference reduction along `axis` in F64: the slice values at every output index.
private func referenceReduce(_ t: Tensor, axis: Int, keepDims: Bool,
                             _ fold: ([Double]) -> Double) -> (shape: [Int], values: [Double]) {
    var outShape = t.shape
    outShape[axis] = 1
    let values = opsIndices(outShape).map { index -> Double in
        let slice = (0..<t.shape[axis]).map { k -> Double in
            var i = index
            i[axis] = k
            return opsElement(t, i)
        }
        return fold(slice)
    }
    if !keepDims { outShape.remove(at: axis) }
    return (outShape, values)
}

private let sumOf: ([Double]) -> Double = { $0.reduce(0, +) }
private let meanOf: ([Double]) -> Double = { $0.reduce(0, +) / Double($0.count) }
private let maxOf: ([Double]) -> Double = { $0.contains { $0.isNaN } ? .nan : $0.max()! }
private let minOf: ([Double]) -> Double = { $0.contains { $0.isNaN } ? .nan : $0.min()! }
private let normOf: ([Double]) -> Double = { $0.reduce(0) { $0 + $1 * $1 }.squareRoot() }

/// Runs every axis reduction of `t` along `axis` and compares with the F64 reference.
/// Sums accumulate in F64 and round once, so the F32 result is the reference rounded to F32,
/// up to F64 summation-order differences far below an F32 ulp: tolerance 1 ulp.
private func checkAllReductions(_ t: Tensor, axis: Int, keepDims: Bool, _ label: String,
                                sourceLocation: SourceLocation = #_sourceLocation) {
    let positive = axis < 0 ? axis + t.rank : axis
    let cases: [(String, Tensor, ([Double]) -> Double)] = [
        ("sum", t.sum(axis: axis, keepDims: keepDims), sumOf),
        ("mean", t.mean(axis: axis, keepDims: keepDims), meanOf),
        ("maximum", t.maximum(axis: axis, keepDims: keepDims), maxOf),
        ("minimum", t.minimum(axis: axis, keepDims: keepDims), minOf),
        ("norm", t.norm(axis: axis, keepDims: keepDims), normOf),
    ]
    for (name, result, fold) in cases {
        let expected = referenceReduce(t, axis: positive, keepDims: keepDims, fold)
        #expect(result.shape == expected.shape, "\(label) \(name) shape", sourceLocation: sourceLocation)
        #expect(result.dtype == (t.dtype == .f64 ? .f64 : .f32), sourceLocation: sourceLocation)
        opsExpectClose(result.doubles, expected.values, "\(label) \(name) axis \(axis) keepDims \(keepDims)",
                       tolerance: { t.dtype == .f64 ? 1e-12 * abs(expected.values[$0]) : opsULP(expected.values[$0]) },
                       sourceLocation: sourceLocation)
    }
}

@Suite("OpsTests: reductions")
struct OpsTestsReductions {
    @Test("sum/mean/maximum/minimum/norm along every axis, keepDims on and off")
    func everyAxis() {
        let t = opsRandom([3, 4, 5], seed: 21)
        for axis in [0, 1, 2, -1, -3] {
            for keepDims in [false, true] { checkAllReductions(t, axis: axis, keepDims: keepDims, "[3,4,5]") }
        }
        #expect(t.sum(axis: 1, keepDims: true).shape == [3, 1, 5])
        #expect(t.sum(axis: -1).shape == [3, 4])
        // Rank 1 down to rank 0.
        let v = Tensor(shape: [4], values: [1, 2, 3, 4])
        #expect(v.sum(axis: 0).shape == [] && v.sum(axis: 0).floats == [10])
        #expect(v.mean(axis: 0, keepDims: true).shape == [1] && v.mean(axis: 0).floats == [2.5])
    }

    @Test("Strided, F16 and F64 inputs")
    func layoutsAndDtypes() {
        let permuted = opsRandom([4, 3, 6], seed: 22).permuted([2, 0, 1]) // [6, 4, 3]
        for axis in 0..<3 { checkAllReductions(permuted, axis: axis, keepDims: axis == 1, "permuted") }
        let stepped = opsRandom([5, 12], seed: 23).sliced(axis: 1, 1..<12, step: 3)
        checkAllReductions(stepped, axis: 1, keepDims: false, "step-sliced")
        checkAllReductions(opsRandom([3, 7], seed: 24).to(.f16), axis: 1, keepDims: true, "f16")
        let doubles = Tensor(shape: [2, 3], doubles: [1e-10, 1, 1e10, 2, -3, 0.1])
        checkAllReductions(doubles, axis: 1, keepDims: false, "f64")
        let expectedRowSums: [Double] = [1e10 + 1 + 1e-10, 2 - 3 + 0.1]
        #expect(doubles.sum(axis: 1).doubles == expectedRowSums)
    }

    @Test("Large reductions: parallel chunks, column tiles wider than 1024")
    func largeShapes() {
        // inner = 2000 > the 1024-column tile; outer·inner·length ≥ the parallel threshold.
        let wide = opsRandom([2, 70, 2000], seed: 25)
        let sums = wide.sum(axis: 1).floats, means = wide.mean(axis: 1).floats
        let values = wide.floats
        for o in 0..<2 {
            for j in stride(from: 0, to: 2000, by: 7) {
                var s = 0.0
                for k in 0..<70 { s += Double(values[(o * 70 + k) * 2000 + j]) }
                #expect(abs(Double(sums[o * 2000 + j]) - s) <= opsULP(s), "sum column \(o),\(j)")
                #expect(abs(Double(means[o * 2000 + j]) - s / 70) <= opsULP(s / 70), "mean column \(o),\(j)")
            }
        }
        // Long rows (inner = 1) in parallel: 300 rows × 1000 ≥ the threshold.
        let rows = opsRandom([300, 1000], seed: 26), flat = rows.floats
        let rowSums = rows.sum(axis: 1).floats, rowMax = rows.maximum(axis: 1).floats, rowNorms = rows.norm(axis: 1).floats
        for r in 0..<300 {
            let slice = flat[(r * 1000)..<((r + 1) * 1000)].map(Double.init)
            let s = slice.reduce(0, +), n = slice.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(abs(Double(rowSums[r]) - s) <= opsULP(s), "row sum \(r)")
            #expect(Double(rowMax[r]) == slice.max()!, "row max \(r)")
            #expect(abs(Double(rowNorms[r]) - n) <= opsULP(n), "row norm \(r)")
        }
    }

    @Test("NaN propagates through maximum and minimum; empty axes")
    func nanAndEmpty() {
        let t = Tensor(shape: [2, 3], values: [1, .nan, 3, -1, -2, -3])
        let mx = t.maximum(axis: 1).floats, mn = t.minimum(axis: 1).floats
        #expect(mx[0].isNaN && mx[1] == -1)
        #expect(mn[0].isNaN && mn[1] == -3)
        #expect(t.maximum().isNaN && t.minimum().isNaN)
        let nanFirst = Tensor(shape: [3], values: [.nan, 5, 7])
        #expect(nanFirst.maximum().isNaN && nanFirst.maximum(axis: 0).floats[0].isNaN)
        let allNegInf = Tensor(shape: [2], values: [-.infinity, -.infinity])
        #expect(allNegInf.maximum() == -.infinity)
        let empty = Tensor(zeros: [2, 0, 3])
        #expect(empty.sum(axis: 1).shape == [2, 3] && empty.sum(axis: 1).floats == [Float](repeating: 0, count: 6))
        let emptyMeans = empty.mean(axis: 1).floats
        #expect(emptyMeans.count == 6 && emptyMeans.allSatisfy { $0.isNaN })
        #expect(empty.sum() == 0 && empty.mean().isNaN)
        #expect(empty.sum(axis: 2).shape == [2, 0])
    }

    @Test("Whole-tensor sum, mean, maximum, minimum, Frobenius norm")
    func wholeTensor() {
        let t = opsRandom([37, 29], seed: 27).transposed()
        let v = t.contiguous().floats.map(Double.init)
        let sum = v.reduce(0, +)
        let magnitude = v.reduce(0) { $0 + abs($1) }
        #expect(abs(t.sum() - sum) <= 1e-12 * magnitude)
        #expect(abs(t.mean() - sum / Double(v.count)) <= 1e-12)
        #expect(t.maximum() == v.max()! && t.minimum() == v.min()!)
        let frobenius = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(t.frobeniusNorm() - frobenius) <= 1e-12 * frobenius)
        #expect(Tensor(shape: [2, 2], values: [3, 0, 0, 4]).frobeniusNorm() == 5)
        // Not a loose accumulation: 1 + 2^-30 ... survives in the F64 accumulator.
        let tiny = Tensor(shape: [4], values: [1, 0x1p-30, 0x1p-30, -1])
        #expect(tiny.sum() == 0x1p-29)
    }
}

@Suite("OpsTests: quantile (torch 'linear')")
struct OpsTestsQuantile {
    @Test("Hand-computed torch.quantile values")
    func handComputed() {
        // Sorted: [1, 1, 2, 3, 4, 5, 6, 9], n - 1 = 7.
        let x = Tensor(shape: [8], values: [3, 1, 4, 1, 5, 9, 2, 6])
        #expect(x.quantile(0) == 1)
        #expect(x.quantile(1) == 9)
        #expect(x.quantile(0.5) == 3.5)      // rank 3.5: between 3 and 4
        #expect(x.quantile(0.25) == 1.75)    // rank 1.75: 1 + 0.75·(2 − 1)
        // Values from torch 2.x (torch.quantile(torch.tensor([3.,1,4,1,5,9,2,6]), q)), and by hand:
        // q = 0.9: r = Double(Float(0.9))·7 = 6.2999998331; w = Float(0.2999998331) = 0.29999983;
        // fma(w, 9 − 6, 6) = 6.89999950 → F32 6.8999996185 (a non-fused F32 lerp gives 6.8999991).
        #expect(x.quantile(0.9) == 6.899999618530273)
        // q = 0.8: r = 5.5999998331, w = 0.59999983 ≥ 0.5: fma(w − 1, 6 − 5, 6) = 5.59999983 → 5.5999999046.
        #expect(x.quantile(0.8) == 5.599999904632568)
        #expect(x.quantile(0.3) == 2.1000001430511475)
        #expect(x.quantile(0.77) == 5.389999866485596)
        #expect(x.quantile(0.1) == 1)
        // Ties and a single element.
        #expect(Tensor(shape: [4], values: [2, 2, 2, 2]).quantile(0.37) == 2)
        #expect(Tensor(shape: [1], values: [-4]).quantile(0.5) == -4)
        // NaN anywhere: NaN (torch.quantile, not nanquantile).
        #expect(Tensor(shape: [3], values: [1, .nan, 2]).quantile(0.1).isNaN)
        // F64: rank 0.3·4 = 1.2 in F64, between 10 and 20.
        let x64 = Tensor(shape: [5], doubles: [10, 0, 40, 20, 30])
        #expect(x64.quantile(0.3) == 12) // torch: 12.0
    }

    @Test("Along an axis, keepDims, strided input")
    func alongAxis() {
        // Rows sorted: [1,2,3,4,5] and [10,20,30,40,50]; q = 0.3 → rank 1.2 (F32 1.2).
        let t = Tensor(shape: [2, 5], values: [5, 1, 4, 2, 3, 50, 10, 40, 20, 30])
        // torch: [2.200000047683716, 22.0] (w = Float(Double(Float(0.3))·4 − 1) = 0.20000005).
        let expected = [2.200000047683716, 22.0]
        #expect(t.quantile(0.3, axis: 1).shape == [2])
        #expect(t.quantile(0.3, axis: 1).doubles == expected)
        #expect(t.quantile(0.3, axis: -1, keepDims: true).shape == [2, 1])
        // Same data transposed: reduce axis 0 of a strided view.
        let tt = t.transposed()
        #expect(tt.quantile(0.3, axis: 0).doubles == expected)
        // Columns: q = 0.5 of pairs is their midpoint.
        #expect(t.quantile(0.5, axis: 0).doubles == [27.5, 5.5, 22, 11, 16.5])
        let withNaN = Tensor(shape: [2, 2], values: [1, .nan, 3, 4]).quantile(0.5, axis: 1).floats
        #expect(withNaN[0].isNaN && withNaN[1] == 3.5)
    }

    @Test("Selection agrees with a full sort on larger inputs with duplicates")
    func selectionMatchesSort() {
        var rng = OpsRNG(seed: 28)
        for (n, distinct) in [(1000, 1000), (1001, 17), (4096, 3), (37, 37)] {
            let values = (0..<n).map { _ in Float(Int(rng.next() % UInt64(distinct))) * 0.25 - 3 }
            let t = Tensor(shape: [n], values: values)
            let sorted = values.sorted()
            for q in [0.0, 0.001, 0.1, 0.25, 0.5, 0.77, 0.9, 0.999, 1.0] {
                // torch's formula (see Tensor.quantile), written out with the F64 fma, which
                // equals the F32 one here: F64 holds w·(b − a) + a exactly for these inputs
                // (24-bit w times a few-bit span), so the single rounding to F32 is the same.
                let rank = Double(Float(q)) * Double(n - 1)
                let lo = Int(rank.rounded(.down)), hi = Int(rank.rounded(.up))
                let weight = Double(Float(rank - Double(lo))), a = Double(sorted[lo]), b = Double(sorted[hi])
                let reference = Float(weight < 0.5 ? a + weight * (b - a) : b + (weight - 1) * (b - a))
                #expect(t.quantile(q) == Double(reference), "n \(n) distinct \(distinct) q \(q)")
            }
        }
        // Already sorted and reversed inputs (quickselect's classic worst cases).
        let ascending = Tensor(shape: [5000], values: (0..<5000).map(Float.init))
        #expect(ascending.quantile(0.5) == 2499.5)
        let descending = Tensor(shape: [5000], values: (0..<5000).reversed().map(Float.init))
        #expect(descending.quantile(0.25) == 1249.75)
    }
}
