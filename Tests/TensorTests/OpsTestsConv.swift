import Testing
@testable import Tensor

/// conv2d by its definition (cross-correlation, zero padding) in F64, with Σ|x·w| per output.
private func referenceConv(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: (Int, Int), padding: (Int, Int))
    -> (shape: [Int], values: [Double], scale: [Double]) {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
    let oh = (h + 2 * padding.0 - kh) / stride.0 + 1, ow = (wd + 2 * padding.1 - kw) / stride.1 + 1
    let xv = opsIndices(x.shape).map { opsElement(x, $0) }, wv = opsIndices(w.shape).map { opsElement(w, $0) }
    var values: [Double] = [], scale: [Double] = []
    for b in 0..<n {
        for oc in 0..<o {
            for i in 0..<oh {
                for j in 0..<ow {
                    var s = bias.map { opsElement($0, [oc]) } ?? 0, s2 = abs(s)
                    for ic in 0..<c {
                        for ki in 0..<kh {
                            let ih = i * stride.0 - padding.0 + ki
                            if ih < 0 || ih >= h { continue }
                            for kj in 0..<kw {
                                let iw = j * stride.1 - padding.1 + kj
                                if iw < 0 || iw >= wd { continue }
                                let t = xv[((b * c + ic) * h + ih) * wd + iw] * wv[((oc * c + ic) * kh + ki) * kw + kj]
                                s += t
                                s2 += abs(t)
                            }
                        }
                    }
                    values.append(s)
                    scale.append(s2)
                }
            }
        }
    }
    return ([n, o, oh, ow], values, scale)
}

/// Same tolerance argument as GEMM: each output is a dot product of C·KH·KW (≤ 300) terms.
private func expectConvClose(_ result: Tensor, _ reference: (shape: [Int], values: [Double], scale: [Double]),
                             _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.shape == reference.shape, "\(what) shape", sourceLocation: sourceLocation)
    opsExpectClose(result.doubles, reference.values, what, tolerance: { 1e-5 * reference.scale[$0] + 1e-30 },
                   sourceLocation: sourceLocation)
}

@Suite("OpsTests: conv2d")
struct OpsTestsConv {
    struct Case: CustomTestStringConvertible, Sendable {
        let input: [Int], weight: [Int], stride: (Int, Int), padding: (Int, Int), bias: Bool
        var testDescription: String { "x\(input) w\(weight) s\(stride) p\(padding) bias \(bias)" }
    }

    static let cases: [Case] = [
        Case(input: [2, 3, 7, 6], weight: [4, 3, 3, 3], stride: (1, 1), padding: (1, 1), bias: true),
        Case(input: [2, 3, 8, 7], weight: [5, 3, 3, 3], stride: (2, 2), padding: (1, 1), bias: true),
        Case(input: [1, 4, 9, 9], weight: [2, 4, 3, 3], stride: (2, 2), padding: (0, 0), bias: false),
        Case(input: [2, 6, 5, 4], weight: [3, 6, 1, 1], stride: (1, 1), padding: (0, 0), bias: true),   // 1×1 fast path
        Case(input: [1, 6, 5, 4], weight: [3, 6, 1, 1], stride: (2, 2), padding: (0, 0), bias: false),  // 1×1 strided: im2col
        Case(input: [1, 2, 6, 9], weight: [3, 2, 3, 5], stride: (2, 1), padding: (1, 0), bias: true),   // asymmetric
        Case(input: [1, 2, 4, 4], weight: [2, 2, 3, 3], stride: (3, 3), padding: (2, 2), bias: true),   // padding > half kernel
        Case(input: [1, 3, 3, 3], weight: [2, 3, 3, 3], stride: (1, 1), padding: (0, 0), bias: false),  // 1×1 output
    ]

    @Test("conv2d against the direct definition", arguments: cases)
    func definition(c: Case) {
        let x = opsRandom(c.input, seed: 101), w = opsRandom(c.weight, seed: 102)
        let bias = c.bias ? opsRandom([c.weight[0]], seed: 103) : nil
        let result = x.conv2d(weight: w, bias: bias, stride: (c.stride.0, c.stride.1), padding: (c.padding.0, c.padding.1))
        #expect(result.dtype == .f32)
        expectConvClose(result, referenceConv(x, w, bias, stride: c.stride, padding: c.padding), c.testDescription)
    }

    @Test("Blocked im2col (a few output rows per GEMM) equals the one-block result")
    func blocked() {
        let x = opsRandom([2, 3, 9, 7], seed: 104), w = opsRandom([4, 3, 3, 3], seed: 105), bias = opsRandom([4], seed: 106)
        let reference = referenceConv(x, w, bias, stride: (2, 2), padding: (1, 1))
        // depth 27 × outW 4 = 108 elements per output row: a budget of 200 gives 1-row blocks,
        // 300 gives 2-row blocks with a short last block (outH = 5).
        for budget in [1, 200, 300, 1 << 21] {
            let result = conv2dTyped(Float.self, x, w, bias, (2, 2), (1, 1), blockElements: budget)
            expectConvClose(result, reference, "budget \(budget)")
        }
    }

    @Test("Strided input, unbatched CHW, F16 weights, F64, stride/padding Int overload")
    func layoutsAndDtypes() {
        let nhwc = opsRandom([2, 6, 5, 3], seed: 107), x = nhwc.permuted([0, 3, 1, 2]) // NCHW view of NHWC data
        let w = opsRandom([4, 3, 3, 3], seed: 108)
        expectConvClose(x.conv2d(weight: w, stride: 1, padding: 1), referenceConv(x, w, nil, stride: (1, 1), padding: (1, 1)), "NHWC view")
        let chw = opsRandom([3, 5, 5], seed: 109)
        let unbatched = chw.conv2d(weight: w, padding: 1)
        #expect(unbatched.shape == [4, 5, 5])
        expectConvClose(unbatched.reshaped([1, 4, 5, 5]), referenceConv(chw.reshaped([1, 3, 5, 5]), w, nil, stride: (1, 1), padding: (1, 1)), "CHW")
        let w16 = w.to(.f16)
        expectConvClose(x.conv2d(weight: w16, stride: 2, padding: 1), referenceConv(x, w16.to(.f32), nil, stride: (2, 2), padding: (1, 1)), "f16 weight")
        let x64 = x.to(.f64), w64 = w.to(.f64)
        let r64 = x64.conv2d(weight: w64, bias: Tensor(shape: [4], doubles: [1, 2, 3, 4]), stride: 1, padding: 0)
        #expect(r64.dtype == .f64)
        let ref64 = referenceConv(x64, w64, Tensor(shape: [4], doubles: [1, 2, 3, 4]), stride: (1, 1), padding: (0, 0))
        opsExpectClose(r64.doubles, ref64.values, "f64 conv", tolerance: { 1e-14 * ref64.scale[$0] })
    }

    @Test("A conv large enough to unfold in parallel (32 channels, 32×32)")
    func parallelUnfold() {
        // depth 32·9 = 288 rows × 1024 columns ≥ the parallel threshold.
        let x = opsRandom([1, 32, 32, 32], seed: 110), w = opsRandom([8, 32, 3, 3], seed: 111), bias = opsRandom([8], seed: 112)
        expectConvClose(x.conv2d(weight: w, bias: bias, stride: 1, padding: 1),
                        referenceConv(x, w, bias, stride: (1, 1), padding: (1, 1)), "32ch 32x32")
    }

    @Test("A 1×1 conv is the matrix product W[O, C] · X[C, H·W]")
    func pointwiseIsGEMM() {
        let x = opsRandom([1, 5, 3, 4], seed: 113), w = opsRandom([6, 5, 1, 1], seed: 114)
        let viaMatmul = w.reshaped([6, 5]).matmul(x.reshaped([5, 12]))
        #expect(x.conv2d(weight: w).reshaped([6, 12]).floats == viaMatmul.floats)
    }
}
