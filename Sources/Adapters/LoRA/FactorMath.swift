import Tensor

/// The few tensor contractions the LoRA family needs, written with matmul over views
/// (the tensor core has no einsum). All results are F32 and contiguous.
enum FactorMath {
    /// `t` as a matrix `[shape[0], rest]` (a view when contiguous).
    static func matrix(_ t: Tensor) -> Tensor {
        t.reshaped([t.shape[0], t.count / max(t.shape[0], 1)])
    }

    /// Tucker (CP) rebuild `Σ_{n,m} up[i,n]·mid[n,m,k,l]·down[m,j]` → `[out, in, kh, kw]`,
    /// i.e. A1111's `einsum('n m k l, i n, m j -> i j k l', mid, up, down)`.
    /// `up` is `[out, r1]` (or `[out, r1, 1, 1]`), `down` `[r2, in]` (or `[r2, in, 1, 1]`),
    /// `mid` `[r1, r2, kh, kw]`.
    static func tucker(up: Tensor, mid: Tensor, down: Tensor) -> Tensor {
        let u = matrix(up), d = matrix(down)
        // mid as a batch over the kernel positions: [kh, kw, r1, r2].
        let perPosition = mid.permuted([2, 3, 0, 1])
        let product = u.matmul(perPosition).matmul(d)           // [kh, kw, out, in]
        return product.permuted([2, 3, 0, 1]).contiguous()     // [out, in, kh, kw]
    }

    /// LyCORIS's CP form for LoHa/LoKr (`make_weight_cp`): `wa` is `[r, out]` and `wb`
    /// `[r, in]` (both "1-mode" factors, rank first), `t` `[r, r, kh, kw]` →
    /// `einsum('i j k l, j r, i p -> p r k l', t, wb, wa)` = `[out, in, kh, kw]`.
    static func cp(t: Tensor, wa: Tensor, wb: Tensor) -> Tensor {
        tucker(up: matrix(wa).transposed(), mid: t, down: matrix(wb))
    }

    /// `a @ b` of two factors given as matrices (trailing axes flattened).
    static func product(_ a: Tensor, _ b: Tensor) -> Tensor {
        matrix(a).matmul(matrix(b))
    }

    /// `x` as F32 (contiguous).
    static func f32(_ x: Tensor) -> Tensor { x.to(.f32) }
}
