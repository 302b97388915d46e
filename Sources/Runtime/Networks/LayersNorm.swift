import CKernels
import Tensor

/// `torch.nn.GroupNorm` on NCHW F32, optionally fused with the SiLU that follows it in every
/// SD resnet: y = silu((x − mean_g)/√(var_g + eps)·γ_c + β_c). Statistics are accumulated in
/// F64 (one pass of Σx and Σx²; F64 keeps E[x²] − E[x]² exact enough for F32 data), then each
/// channel is one fused multiply-add (+ SiLU) pass.
public struct GroupNorm {
    public let weight: Parameter?
    public let bias: Parameter?
    public let groups: Int
    public let channels: Int
    public let eps: Float

    /// The layer at `loader` (affine `weight`/`bias` when present).
    public init(_ loader: WeightLoader, groups: Int, eps: Float, channels: Int? = nil) throws {
        self.weight = try loader.optionalParameter("weight")
        self.bias = try loader.optionalParameter("bias")
        guard let count = channels ?? weight?.shape.first else {
            throw WeightLoaderError.missing(model: loader.model.path, key: loader.diffusersKey("weight"), tried: nil)
        }
        self.channels = count
        self.groups = groups
        self.eps = eps
        if let weight { try weight.require(weight.shape == [count], "a norm scale must have \(count) elements") }
        try (weight ?? bias)?.require(count % groups == 0, "\(count) channels do not split into \(groups) groups")
    }

    /// The normalised `x` [B, C, ...] (then SiLU when `silu`).
    public func callAsFunction(_ x: Tensor, silu: Bool = false, workspace: Workspace? = nil) throws -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == channels, "GroupNorm: input \(x.shape) does not have \(channels) channels")
        return try NetworkProfiler.measure("groupnorm" + (silu ? "+silu" : "")) { try normalize(x, silu: silu, workspace: workspace) }
    }

    private func normalize(_ x: Tensor, silu: Bool, workspace: Workspace?) throws -> Tensor {
        let input = x.contiguousF32
        let batch = x.shape[0], plane = x.shape.dropFirst(2).reduce(1, *)
        let out = newTensor(x.shape, workspace)
        let gamma = try weight?.floats(), beta = try bias?.floats()
        let perGroup = channels / groups
        let src = UnsafePointer(input.f32Pointer), dst = out.f32Pointer
        // Statistics per (image, group).
        var mean = [Float](repeating: 0, count: batch * groups), rstd = mean
        mean.withUnsafeMutableBufferPointer { meanBuffer in
            rstd.withUnsafeMutableBufferPointer { rstdBuffer in
                let m = meanBuffer.baseAddress!, r = rstdBuffer.baseAddress!
                Work.parallel(batch * groups, costPerItem: perGroup * plane) { item in
                    var sum = 0.0, squares = 0.0
                    ah_nn_moments(src + item * perGroup * plane, perGroup * plane, &sum, &squares)
                    let n = Double(perGroup * plane)
                    let mu = sum / n
                    let variance = max(0, squares / n - mu * mu)
                    m[item] = Float(mu)
                    r[item] = Float(1 / (variance + Double(eps)).squareRoot())
                }
            }
        }
        withExtendedLifetime(input) {
            Work.parallel(batch * channels, costPerItem: plane * (silu ? 4 : 1)) { bc in
                let c = bc % channels, group = (bc / channels) * groups + c / perGroup
                let scale = rstd[group] * (gamma?[c] ?? 1)
                let shift = (beta?[c] ?? 0) - mean[group] * scale
                ah_nn_affine(src + bc * plane, dst + bc * plane, plane, scale, shift, silu ? 1 : 0)
            }
        }
        return out
    }
}

/// `torch.nn.LayerNorm` over the last axis (biased variance, two passes for accuracy).
public struct LayerNorm {
    public let weight: Parameter?
    public let bias: Parameter?
    public let width: Int
    public let eps: Float

    /// The layer at `loader` (affine `weight`/`bias` when present).
    public init(_ loader: WeightLoader, eps: Float = 1e-5, width: Int? = nil) throws {
        self.weight = try loader.optionalParameter("weight")
        self.bias = try loader.optionalParameter("bias")
        guard let count = width ?? weight?.shape.first else {
            throw WeightLoaderError.missing(model: loader.model.path, key: loader.diffusersKey("weight"), tried: nil)
        }
        self.width = count
        self.eps = eps
        if let weight { try weight.require(weight.shape == [count], "a norm scale must have \(count) elements") }
    }

    /// The normalised `x` [..., width].
    public func callAsFunction(_ x: Tensor, workspace: Workspace? = nil) throws -> Tensor {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] == width, "LayerNorm: input \(x.shape) does not end in \(width)")
        return try NetworkProfiler.measure("layernorm") { try normalize(x, workspace: workspace) }
    }

    private func normalize(_ x: Tensor, workspace: Workspace?) throws -> Tensor {
        let input = x.contiguousF32
        let rows = input.count / max(width, 1)
        let out = newTensor(x.shape, workspace)
        let gamma = try weight?.floats(), beta = try bias?.floats()
        let src = UnsafePointer(input.f32Pointer), dst = out.f32Pointer
        let (w, eps) = (width, eps)
        withExtendedLifetime(input) {
            gamma.withOptionalBuffer { g in
                beta.withOptionalBuffer { b in
                    Work.ranges(rows, costPerItem: w * 3) { r in
                        ah_nn_layernorm_rows(src + r.lowerBound * w, dst + r.lowerBound * w, r.count, w, g, b, eps)
                    }
                }
            }
        }
        return out
    }
}
