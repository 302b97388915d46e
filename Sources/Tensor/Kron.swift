/// The Kronecker product.
extension Tensor {
    /// `torch.kron(self, other)`: for equal ranks, `out[i * other.shape + j] = self[i] * other[j]`
    /// per axis, so the result's shape is the elementwise product of the shapes. A tensor of
    /// lower rank is first given leading axes of size 1 (as torch does). Works for any rank;
    /// LoKr uses 2-D, and 4-D for convolutions (`[a, b, 1, 1] ⊗ [c, d, kh, kw]`).
    /// Computes in F32 (F64 when either is F64); either input may be any layout.
    public func kron(_ other: Tensor) -> Tensor {
        let rank = Swift.max(self.rank, other.rank)
        let a = leadingOnes(to: rank), b = other.leadingOnes(to: rank)
        // Interleave: a as [a0, 1, a1, 1, ...], b as [1, b0, 1, b1, ...] (stride 0 on the new
        // size-1 axes), so broadcasting them gives [a0, b0, a1, b1, ...] with element
        // a[i0, i1, ...] * b[j0, j1, ...], which is the Kronecker layout once axes are merged.
        func interleaved(_ t: Tensor, first: Bool) -> Tensor {
            var shape: [Int] = [], strides: [Int] = []
            for d in 0..<rank {
                let pair = [(t.shape[d], t.strides[d]), (1, 0)]
                for (size, stride) in first ? pair : pair.reversed() {
                    shape.append(size)
                    strides.append(stride)
                }
            }
            return Tensor(storage: t.storage, dtype: t.dtype, shape: shape, strides: strides, offset: t.offset)
        }
        let product = interleaved(a, first: true) * interleaved(b, first: false)
        return product.reshaped((0..<rank).map { a.shape[$0] * b.shape[$0] })
    }

    /// A view with size-1 axes prepended up to `rank`.
    func leadingOnes(to rank: Int) -> Tensor {
        var t = self
        while t.rank < rank { t = t.unsqueezed(0) }
        return t
    }
}
