#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Tensor

/// Sinusoidal timestep embeddings, as diffusers' `get_timestep_embedding` computes them in F32:
/// frequencies fᵢ = exp(−ln(maxPeriod)·i / (half − shift)), arguments t·fᵢ, then
/// [sin, cos] (or [cos, sin] with `flipSinToCos`, SD's setting); an odd dimension gets a zero
/// column. Each F32 step rounds where torch's does; exp/sin/cos are computed in F64 and
/// rounded once, so values agree with torch to an ulp or two.
public func timestepEmbedding(_ timesteps: [Float], dimension: Int, flipSinToCos: Bool = true,
                              downscaleFreqShift: Float = 0, maxPeriod: Double = 10000) -> Tensor {
    let half = dimension / 2
    let logPeriod = Float(-log(maxPeriod))
    let frequencies: [Float] = (0..<half).map { i in
        let exponent = (logPeriod * Float(i)) / (Float(half) - downscaleFreqShift)
        return Float(exp(Double(exponent)))
    }
    var values = [Float](repeating: 0, count: timesteps.count * dimension)
    for (row, t) in timesteps.enumerated() {
        for i in 0..<half {
            let argument = Double(t * frequencies[i])
            let (sine, cosine) = (Float(sin(argument)), Float(cos(argument)))
            values[row * dimension + i] = flipSinToCos ? cosine : sine
            values[row * dimension + half + i] = flipSinToCos ? sine : cosine
        }
    }
    return Tensor(shape: [timesteps.count, dimension], values: values)
}

/// diffusers' `TimestepEmbedding`: `linear_1`, SiLU, `linear_2`.
public struct TimestepEmbeddingMLP {
    public let linear1: Linear
    public let linear2: Linear

    public init(_ loader: WeightLoader) throws {
        linear1 = try Linear(loader.child("linear_1"))
        linear2 = try Linear(loader.child("linear_2"))
    }

    /// linear_2(silu(linear_1(x))).
    public func callAsFunction(_ x: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        try linear2(Activation.silu(linear1(x, hooks: hooks, workspace: workspace)), hooks: hooks, workspace: workspace)
    }
}
