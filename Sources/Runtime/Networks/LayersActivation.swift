import CKernels
import Tensor

/// Activation functions of SD's networks, on F32 tensors, vectorised (CKernels' ah_nn kernels).
public enum Activation: String, Sendable {
    /// x·sigmoid(x).
    case silu
    /// Exact GELU, x/2·(1 + erf(x/√2)) (erf to 1.5e−7 absolute).
    case gelu
    /// CLIP's quick GELU, x·sigmoid(1.702·x).
    case quickGELU

    /// The activation of every element of `x` (a new contiguous F32 tensor).
    public func callAsFunction(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
        let input = x.contiguousF32
        let out = newTensor(x.shape, workspace)
        let src = UnsafePointer(input.f32Pointer), dst = out.f32Pointer
        withExtendedLifetime(input) {
            Work.ranges(x.count, costPerItem: 8) { r in
                let s = src + r.lowerBound, d = dst + r.lowerBound
                switch self {
                case .silu: ah_nn_silu(s, d, r.count)
                case .gelu: ah_nn_gelu(s, d, r.count)
                case .quickGELU:
                    // silu(1.702x)/1.702 = x·sigmoid(1.702x).
                    ah_nn_affine(s, d, r.count, 1.702, 0, 1)
                    for i in 0..<r.count { d[i] /= 1.702 }
                }
            }
        }
        return out
    }
}

/// diffusers' `GEGLU` after its projection: for `projected` [..., 2·width] (hidden half,
/// then gate half), hidden · gelu(gate) → [..., width].
func geglu(_ projected: Tensor, workspace: Workspace? = nil) -> Tensor {
    let input = projected.contiguousF32
    let width = projected.shape[projected.rank - 1] / 2
    let rows = input.count / max(2 * width, 1)
    let out = newTensor(Array(projected.shape.dropLast()) + [width], workspace)
    let src = UnsafePointer(input.f32Pointer), dst = out.f32Pointer
    NetworkProfiler.measure("geglu") {
        withExtendedLifetime(input) {
            Work.ranges(rows, costPerItem: width * 8) { r in
                ah_nn_geglu(src + r.lowerBound * 2 * width, dst + r.lowerBound * width, r.count, width)
            }
        }
    }
    return out
}
