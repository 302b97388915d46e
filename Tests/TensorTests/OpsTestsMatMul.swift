import Testing
@testable import Tensor

/// torch.matmul by definition in F64, for operands of rank >= 2 (batch axes broadcast).
/// Returns the values and, per output element, Σ|a||b| (the scale F32 rounding errors grow with).
private func referenceMatmul(_ a: Tensor, _ b: Tensor) -> (shape: [Int], values: [Double], scale: [Double]) {
    let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1], n = b.shape[b.rank - 1]
    let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
    let rank = max(batchA.count, batchB.count)
    let padA = [Int](repeating: 1, count: rank - batchA.count) + batchA
    let padB = [Int](repeating: 1, count: rank - batchB.count) + batchB
    let batch = zip(padA, padB).map { $0 == 1 ? $1 : $0 }
    // Pull both operands into plain arrays once (through their strides), then triple loops.
    let av = opsIndices(a.shape).map { opsElement(a, $0) }, bv = opsIndices(b.shape).map { opsElement(b, $0) }
    func flatBatch(_ index: [Int], _ shape: [Int]) -> Int {
        var f = 0
        for d in 0..<shape.count { f = f * shape[d] + (shape[d] == 1 ? 0 : index[d]) }
        return f
    }
    var values: [Double] = [], scale: [Double] = []
    for bi in opsIndices(batch) {
        let oa = flatBatch(bi, padA) * m * k, ob = flatBatch(bi, padB) * k * n
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0, s2 = 0.0
                for p in 0..<k {
                    let x = av[oa + i * k + p], y = bv[ob + p * n + j]
                    s += x * y
                    s2 += abs(x * y)
                }
                values.append(s)
                scale.append(s2)
            }
        }
    }
    return (batch + [m, n], values, scale)
}

/// F32 GEMM accuracy: |c − exact| ≤ tol · Σ_p |a_ip b_pj|. The worst-case bound for a K-term
/// dot product is ≈ K·u (u = 2^-24 ≈ 6e-8), but blocked GEMM error grows like √K·u in practice;
/// tol = 1e-5 is ~40·√512·u, still catching any wrong element, index or transpose (those give
/// O(1) relative errors) while leaving room for OpenBLAS's summation order.
private func expectGEMMClose(_ result: Tensor, _ reference: (shape: [Int], values: [Double], scale: [Double]),
                             _ what: String, tol: Double = 1e-5, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.shape == reference.shape, "\(what) shape", sourceLocation: sourceLocation)
    opsExpectClose(result.doubles, reference.values, what,
                   tolerance: { tol * reference.scale[$0] + 1e-30 }, sourceLocation: sourceLocation)
}

@Suite("OpsTests: matmul")
struct OpsTestsMatMul {
    @Test("GEMM layout of views: as stored, transposed, or needs a copy")
    func layouts() {
        let m = opsRandom([6, 8], seed: 51)
        #expect(gemmLayout(rows: 6, cols: 8, rowStride: 8, colStride: 1)! == (false, 8))
        let t = m.transposed() // [8, 6] with strides [1, 8]
        #expect(gemmLayout(rows: 8, cols: 6, rowStride: t.strides[0], colStride: t.strides[1])! == (true, 8))
        let columns = m.sliced(axis: 1, 2..<7) // [6, 5] inside rows of 8: ld 8
        #expect(gemmLayout(rows: 6, cols: 5, rowStride: columns.strides[0], colStride: columns.strides[1])! == (false, 8))
        let stepped = m.sliced(axis: 1, 0..<8, step: 2) // column stride 2: not BLAS-readable
        #expect(gemmLayout(rows: 6, cols: 4, rowStride: stepped.strides[0], colStride: stepped.strides[1]) == nil)
        #expect(gemmLayout(rows: 6, cols: 8, rowStride: 0, colStride: 1) == nil) // broadcast rows
        #expect(gemmLayout(rows: 1, cols: 8, rowStride: 0, colStride: 1)! == (false, 8)) // one row: any stride
        #expect(gemmLayout(rows: 6, cols: 1, rowStride: 1, colStride: 0)! == (false, 1)) // one column: ld 1 will do
        #expect(gemmLayout(rows: 1, cols: 6, rowStride: 0, colStride: 4)! == (true, 4)) // one row with a column stride
        // The operand keeps the view (no copy) for a transposed matrix.
        let operand = GEMMOperand<Float>(t)
        #expect(operand.transposed && operand.leadingDimension == 8 && operand.tensor.storage === m.storage)
        let copied = GEMMOperand<Float>(stepped)
        #expect(!copied.transposed && copied.tensor.storage !== m.storage)
    }

    @Test("2-D products with every transpose combination and sliced operands")
    func twoD() {
        let a = opsRandom([7, 5], seed: 52), b = opsRandom([5, 9], seed: 53)
        let aT = opsRandom([5, 7], seed: 54).transposed(), bT = opsRandom([9, 5], seed: 55).transposed()
        expectGEMMClose(a.matmul(b), referenceMatmul(a, b), "a @ b")
        expectGEMMClose(aT.matmul(b), referenceMatmul(aT, b), "aᵀ @ b")
        expectGEMMClose(a.matmul(bT), referenceMatmul(a, bT), "a @ bᵀ")
        expectGEMMClose(aT.matmul(bT), referenceMatmul(aT, bT), "aᵀ @ bᵀ")
        let sub = opsRandom([10, 12], seed: 56).sliced(axis: 1, 2..<7).sliced(axis: 0, 1..<8) // [7, 5], ld 12
        expectGEMMClose(sub.matmul(b), referenceMatmul(sub, b), "submatrix @ b")
        let stepped = opsRandom([5, 18], seed: 57).sliced(axis: 1, 0..<18, step: 2) // [5, 9], copied
        expectGEMMClose(a.matmul(stepped), referenceMatmul(a, stepped), "a @ column-stepped")
        // Exact small case.
        let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), y = Tensor(shape: [3, 2], values: [7, 8, 9, 10, 11, 12])
        #expect(x.matmul(y).floats == [58, 64, 139, 154])
        #expect(x.transposed().matmul(x).floats == [17, 22, 27, 22, 29, 36, 27, 36, 45])
    }

    @Test("Batched products: broadcast batch axes, transposed batched operands, one-GEMM fold")
    func batched() {
        let cases: [(Tensor, Tensor, String)] = [
            (opsRandom([2, 3, 4, 5], seed: 58), opsRandom([2, 3, 5, 6], seed: 59), "same batch"),
            (opsRandom([2, 1, 4, 5], seed: 60), opsRandom([3, 5, 6], seed: 61), "broadcast [2,1] × [3]"),
            (opsRandom([4, 7, 5], seed: 62), opsRandom([5, 3], seed: 63), "3-D @ 2-D (one GEMM)"),
            (opsRandom([4, 7, 5], seed: 64), opsRandom([3, 5], seed: 65).transposed(), "3-D @ Wᵀ (one GEMM, transB)"),
            (opsRandom([7, 4, 5], seed: 66).permuted([1, 0, 2]), opsRandom([5, 3], seed: 67), "permuted batch (per-batch loop)"),
            (opsRandom([3, 4, 5], seed: 68), opsRandom([3, 6, 5], seed: 69).transposed(), "batched bᵀ"),
            (opsRandom([3, 5, 4], seed: 70).transposed(), opsRandom([3, 6, 5], seed: 71).transposed(), "batched aᵀ @ bᵀ"),
            (opsRandom([1, 4, 5], seed: 72), opsRandom([3, 5, 6], seed: 73), "a broadcast over batch"),
            (opsRandom([2, 1, 5], seed: 74), opsRandom([5, 6], seed: 75), "m = 1 rows fold"),
            (opsRandom([4, 1, 5], seed: 76).sliced(axis: 0, 0..<4, step: 2), opsRandom([5, 6], seed: 77), "m = 1, gapped batch"),
            (opsRandom([2, 3, 10], seed: 78).sliced(axis: 2, 0..<10, step: 2), opsRandom([2, 5, 4], seed: 79), "stepped a, copied"),
        ]
        for (a, b, label) in cases {
            expectGEMMClose(a.matmul(b), referenceMatmul(a, b), label)
        }
    }

    @Test("1-D operands follow torch.matmul")
    func vectors() {
        let v = Tensor(shape: [3], values: [1, 2, 3]), w = Tensor(shape: [3], values: [4, 5, 6])
        let dot = v.matmul(w)
        #expect(dot.shape == [] && dot.floats == [32])
        let m = Tensor(shape: [3, 2], values: [1, 2, 3, 4, 5, 6])
        #expect(v.matmul(m).shape == [2] && v.matmul(m).floats == [22, 28])
        #expect(m.transposed().matmul(v).shape == [2] && m.transposed().matmul(v).floats == [22, 28])
        let batch = opsRandom([2, 4, 3], seed: 80)
        let bv = batch.matmul(v)
        #expect(bv.shape == [2, 4])
        expectGEMMClose(bv, (shape: [2, 4], values: referenceMatmul(batch, v.reshaped([3, 1])).values,
                             scale: referenceMatmul(batch, v.reshaped([3, 1])).scale), "batch @ vector")
        #expect(v.matmul(batch.transposed()).shape == [2, 4])
    }

    @Test("Dtypes: F16/BF16 widen to F32; F64 goes through dgemm")
    func dtypes() {
        let a = opsRandom([6, 5], seed: 81).to(.f16), b = opsRandom([5, 4], seed: 82).to(.bf16)
        let c = a.matmul(b)
        #expect(c.dtype == .f32)
        expectGEMMClose(c, referenceMatmul(a.to(.f32), b.to(.f32)), "f16 @ bf16")
        let a64 = opsRandom([6, 5], seed: 83).to(.f64), b64 = opsRandom([5, 4], seed: 84).to(.f64).transposed(0, 1).contiguous().transposed()
        let c64 = a64.matmul(b64)
        #expect(c64.dtype == .f64)
        // F64: error ~K·2^-53 relative to Σ|a||b|.
        expectGEMMClose(c64, referenceMatmul(a64, b64), "f64 dgemm", tol: 1e-14)
        #expect(a64.matmul(opsRandom([5, 2], seed: 85)).dtype == .f64)
    }

    @Test("Empty dimensions: k = 0 gives zeros, m = 0 gives an empty result")
    func empty() {
        let z = Tensor(zeros: [3, 0]).matmul(Tensor(zeros: [0, 4]))
        #expect(z.shape == [3, 4] && z.floats == [Float](repeating: 0, count: 12))
        #expect(Tensor(zeros: [0, 5]).matmul(opsRandom([5, 2], seed: 86)).shape == [0, 2])
        #expect(Tensor(zeros: [2, 0, 3, 5]).matmul(opsRandom([5, 2], seed: 87)).shape == [2, 0, 3, 2])
    }

    @Test("Sizes on OpenBLAS's threaded path: 300×257 @ 257×129, plain and transposed")
    func large() throws {
        // 300·129·257 ≈ 10M multiply-adds: OpenBLAS splits this over its threads. The F64
        // reference is computed for every 7th row (and the last), all columns: rows from every
        // thread's share, at a fraction of a debug build's triple-loop time.
        let a = opsRandom([300, 257], seed: 88), b = opsRandom([257, 129], seed: 89)
        let aT = opsRandom([257, 300], seed: 90).transposed(), bT = opsRandom([129, 257], seed: 91).transposed()
        for (x, y, label) in [(a, b, "300x257 @ 257x129"), (aT, bT, "transposed views 300x257 @ 257x129")] {
            let c = x.matmul(y)
            #expect(c.shape == [300, 129])
            let xv = x.contiguous().floats, yv = y.contiguous().floats, cv = c.floats
            var rows = Array(stride(from: 0, to: 300, by: 7))
            rows.append(299)
            var actual: [Double] = [], expected: [Double] = [], scale: [Double] = []
            xv.withUnsafeBufferPointer { xp in
                yv.withUnsafeBufferPointer { yp in
                    for i in rows {
                        for j in 0..<129 {
                            var s = 0.0, s2 = 0.0
                            for p in 0..<257 {
                                let t = Double(xp[i * 257 + p]) * Double(yp[p * 129 + j])
                                s += t
                                s2 += abs(t)
                            }
                            actual.append(Double(cv[i * 129 + j]))
                            expected.append(s)
                            scale.append(s2)
                        }
                    }
                }
            }
            opsExpectClose(actual, expected, label, tolerance: { 1e-5 * scale[$0] })
        }
    }
}
