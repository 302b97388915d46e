import Testing
@testable import Tensor

@Suite("OpsTests: concat and pad")
struct OpsTestsConcatPad {
    @Test("concat along each axis, with strided inputs, matches the index definition")
    func concatAxes() {
        let a = opsRandom([2, 3, 4], seed: 31)
        let b = opsRandom([4, 2, 3], seed: 32).permuted([1, 2, 0])  // [2, 3, 4], strided
        let c = opsRandom([2, 3, 5], seed: 33)
        for axis in [0, 1, 2, -1] {
            let positive = axis < 0 ? axis + 3 : axis
            var third = [2, 3, 4]
            third[positive] = 1
            let d = opsRandom(third, seed: 34)
            let parts = [a, b, d]
            let result = Tensor.concat(parts, axis: axis)
            var expectedShape = [2, 3, 4]
            expectedShape[positive] = [2, 3, 4][positive] * 2 + 1
            #expect(result.shape == expectedShape, "axis \(axis)")
            // Reference: walk the output index, find which part and local index it maps to.
            let expected = opsIndices(expectedShape).map { index -> Double in
                var i = index
                for part in parts {
                    if i[positive] < part.shape[positive] { return opsElement(part, i) }
                    i[positive] -= part.shape[positive]
                }
                fatalError("index out of range")
            }
            opsExpectExact(result.doubles, expected, "concat axis \(axis)")
        }
        let wide = Tensor.concat([a, c], axis: 2)
        #expect(wide.shape == [2, 3, 9])
        #expect(wide.sliced(axis: 2, 4..<9).contiguous().floats == c.floats)
        #expect(Tensor.concat([a], axis: 0).floats == a.floats)
    }

    @Test("concat keeps a shared dtype bit for bit; mixed dtypes go to the compute dtype")
    func concatDtypes() {
        let h1 = opsRandom([2, 3], seed: 35).to(.f16), h2 = opsRandom([1, 3], seed: 36).to(.f16)
        let joined = Tensor.concat([h1, h2], axis: 0)
        #expect(joined.dtype == .f16)
        let bits = joined.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let h1Bits = h1.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let h2Bits = h2.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(bits == h1Bits + h2Bits)
        let mixed = Tensor.concat([h1, opsRandom([2, 3], seed: 37)], axis: 1)
        #expect(mixed.dtype == .f32 && mixed.shape == [2, 6])
        #expect(Tensor.concat([h1, Tensor(shape: [1, 3], doubles: [1, 2, 3])], axis: 0).dtype == .f64)
        // Empty pieces are fine.
        #expect(Tensor.concat([h1.to(.f32), Tensor(zeros: [0, 3])], axis: 0).floats == h1.to(.f32).floats)
    }

    @Test("padded(torchPad:) follows F.pad's last-axis-first order")
    func torchOrder() {
        let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        // F.pad(x, (1, 2)) pads the last axis: one zero left, two right.
        let p1 = x.padded(torchPad: [1, 2])
        #expect(p1.shape == [2, 6])
        #expect(p1.floats == [0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0])
        // F.pad(x, (0, 1, 1, 0), value=9): last axis (0, 1), then first axis (1, 0).
        let p2 = x.padded(torchPad: [0, 1, 1, 0], value: 9)
        #expect(p2.shape == [3, 4])
        #expect(p2.floats == [9, 9, 9, 9, 1, 2, 3, 9, 4, 5, 6, 9])
        // Negative pads crop: F.pad(x, (-1, 0)) drops the first column.
        #expect(x.padded(torchPad: [-1, 0]).floats == [2, 3, 5, 6])
        #expect(x.padded(torchPad: [-1, 1, 0, -1]).floats == [2, 3, 0])
    }

    @Test("padded NCHW (VAE downsample (0, 1, 0, 1)), strided input, per-axis widths, dtypes")
    func paddedGeneral() {
        let x = opsRandom([2, 3, 4, 5], seed: 38).permuted([0, 1, 3, 2]) // [2, 3, 5, 4], strided
        let p = x.padded(torchPad: [0, 1, 0, 1])
        #expect(p.shape == [2, 3, 6, 5])
        let expected = opsIndices(p.shape).map { i -> Double in
            i[2] < 5 && i[3] < 4 ? opsElement(x, i) : 0
        }
        opsExpectExact(p.doubles, expected, "NCHW pad")
        // Per-axis widths on every axis, with a fill value.
        let q = x.padded([(1, 0), (0, 2), (2, 1), (1, 1)], value: -0.5)
        #expect(q.shape == [3, 5, 8, 6])
        let expectedQ = opsIndices(q.shape).map { i -> Double in
            let s = [i[0] - 1, i[1], i[2] - 2, i[3] - 1]
            let inside = s[0] >= 0 && s[1] < 3 && s[2] >= 0 && s[2] < 5 && s[3] >= 0 && s[3] < 4
            return inside ? opsElement(x, s) : -0.5
        }
        opsExpectExact(q.doubles, expectedQ, "all-axis pad")
        // Keeps F16 (fill converted to F16); BF16 too.
        let h = Tensor(shape: [2], values: [1.5, -2]).to(.f16).padded(torchPad: [1, 1], value: 0.1)
        #expect(h.dtype == .f16 && h.floats == [Float(Float16(0.1)), 1.5, -2, Float(Float16(0.1))])
        let bf = Tensor(shape: [1], values: [3]).to(.bf16).padded(torchPad: [2, 0])
        #expect(bf.dtype == .bf16 && bf.floats == [0, 0, 3])
        #expect(Tensor(shape: [1, 1], doubles: [7]).padded(torchPad: [1, 0]).doubles == [0, 7])
    }
}

@Suite("OpsTests: kron")
struct OpsTestsKron {
    /// torch.kron by definition, for equal ranks: out[i·bshape + j] = a[i]·b[j].
    private func referenceKron(_ a: Tensor, _ b: Tensor) -> (shape: [Int], values: [Double]) {
        let shape = zip(a.shape, b.shape).map { $0 * $1 }
        let values = opsIndices(shape).map { index -> Double in
            let i = (0..<index.count).map { index[$0] / b.shape[$0] }
            let j = (0..<index.count).map { index[$0] % b.shape[$0] }
            return Double(Float(opsElement(a, i)) * Float(opsElement(b, j)))
        }
        return (shape, values)
    }

    @Test("2-D, 4-D LoKr conv shapes, strided operands", arguments: [
        ([2, 3], [4, 5]), ([1, 1], [3, 2]), ([3, 1], [1, 4]), ([3, 2, 1, 1], [4, 5, 3, 3]), ([2, 2, 2], [2, 1, 3]),
    ])
    func definition(shapes: ([Int], [Int])) {
        let a = opsRandom(shapes.0, seed: 41), b = opsRandom(shapes.1, seed: 42)
        let expected = referenceKron(a, b)
        let result = a.kron(b)
        #expect(result.shape == expected.shape && result.dtype == .f32)
        opsExpectExact(result.doubles, expected.values, "kron \(shapes)")
    }

    @Test("Strided inputs, lower-rank operand gets leading ones, F64")
    func layouts() {
        let a = opsRandom([3, 2], seed: 43).transposed(), b = opsRandom([5, 4], seed: 44).sliced(axis: 0, 0..<5, step: 2)
        opsExpectExact(a.kron(b).doubles, referenceKron(a.contiguous(), b.contiguous()).values, "strided kron")
        // [3] ⊗ [2, 4]: torch treats [3] as [1, 3] → [2, 12].
        let v = Tensor(shape: [3], values: [1, 2, 3]), m = opsRandom([2, 4], seed: 45)
        let vm = v.kron(m)
        #expect(vm.shape == [2, 12])
        opsExpectExact(vm.doubles, referenceKron(v.reshaped([1, 3]), m).values, "rank 1 ⊗ rank 2")
        #expect(Tensor(shape: [2], values: [1, 10]).kron(Tensor(shape: [2], values: [3, 4])).floats == [3, 4, 30, 40])
        let d = Tensor(shape: [2], doubles: [0.1, 1]).kron(Tensor(shape: [1], doubles: [3]))
        #expect(d.dtype == .f64 && d.doubles == [0.1 * 3, 3])
    }
}
