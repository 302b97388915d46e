import Foundation
import Tensor

/// Reproduces `torch.Generator("cpu").manual_seed(seed)` and the F32 draws
/// `torch.randn(shape, generator: g)` and `torch.rand(shape, generator: g)` bit for bit,
/// including the state carried between successive calls on one generator.
///
/// What torch does (ATen: CPUGeneratorImpl, DistributionsHelper.h, cpu/DistributionTemplates.h):
/// - Engine: MT19937 seeded with the low 32 bits of the seed. `random()` is one 32-bit draw;
///   `random64()` is two, the first in the high half.
/// - F32 uniform in [0, 1): `(random() & (2²⁴-1)) · 2⁻²⁴`. F64: `(random64() & (2⁵³-1)) · 2⁻⁵³`.
/// - `randn` of fewer than 16 elements: per element, `normal_distribution<double>`: two F64
///   uniforms u1, u2, `r = √(-2·log1p(-u2))`, `θ = 2π·u1`; returns `r·cos θ` and caches
///   `r·sin θ` in the generator for the next scalar draw (also across calls; reseeding clears it).
///   The double is narrowed to F32.
/// - `randn` of 16 or more elements: fill all with F32 uniforms, then Box-Muller in place over
///   blocks of 16 (element j pairs with j+8). When the count is not a multiple of 16, the last 16
///   elements are overwritten with 16 fresh uniforms and transformed again. This path neither
///   reads nor writes the scalar cache. Its arithmetic depends on the CPU; see `TorchNormalKernel`.
///
/// Not covered: F64/F16/BF16 `randn` (other code paths), non-contiguous outputs, CUDA's Philox.
public struct TorchCPUGenerator: Sendable {
    private var engine: MersenneTwister19937
    private var cachedNormal: Double?
    /// The Box-Muller kernel used for draws of 16 or more elements.
    public var normalKernel: TorchNormalKernel
    /// The seed last given, as `Generator.initial_seed()` reports it.
    public private(set) var seed: UInt64

    /// A generator in the state of `torch.Generator("cpu").manual_seed(seed)`.
    /// Negative Python seeds map to their two's complement, as torch does.
    public init(seed: UInt64, normalKernel: TorchNormalKernel = .avx2) {
        self.engine = MersenneTwister19937(seed: seed)
        self.cachedNormal = nil
        self.normalKernel = normalKernel
        self.seed = seed
    }

    /// `manual_seed(seed)`: restarts the engine and clears the cached normal sample.
    public mutating func manualSeed(_ seed: UInt64) {
        engine = MersenneTwister19937(seed: seed)
        cachedNormal = nil
        self.seed = seed
    }

    /// One 32-bit draw (`random()`).
    public mutating func nextUInt32() -> UInt32 { engine.nextUInt32() }

    /// One 64-bit draw from two 32-bit ones, the first as the high half (`random64()`).
    public mutating func nextUInt64() -> UInt64 {
        let high = UInt64(engine.nextUInt32())
        let low = UInt64(engine.nextUInt32())
        return (high << 32) | low
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2⁻²⁴ (exact).
    public mutating func nextUniformFloat() -> Float {
        Float(nextUInt32() & 0x00ff_ffff) * 0x1p-24
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2⁻⁵³ (exact).
    public mutating func nextUniformDouble() -> Double {
        Double(nextUInt64() & ((1 << 53) - 1)) * 0x1p-53
    }

    /// `normal_distribution<double>(0, 1)`, with torch's cached second sample.
    public mutating func nextNormalDouble() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = nextUniformDouble()
        let u2 = nextUniformDouble()
        let radius = (-2.0 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = radius * Foundation.sin(theta)
        return radius * Foundation.cos(theta)
    }

    /// `torch.randn(count)` as F32 values in order.
    public mutating func normalFloats(count: Int) -> [Float] {
        precondition(count >= 0, "normalFloats: negative count \(count)")
        if count < 16 {
            return (0..<count).map { _ in Float(nextNormalDouble()) }
        }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { data in
            let base = data.baseAddress!
            for i in 0..<count { base[i] = nextUniformFloat() }
            var i = 0
            while i + 16 <= count {
                normalKernel.fill16(base + i, mean: 0, std: 1)
                i += 16
            }
            if count % 16 != 0 {
                // Torch redraws the last 16 (overlapping the last full block) and transforms them.
                let tail = base + (count - 16)
                for k in 0..<16 { tail[k] = nextUniformFloat() }
                normalKernel.fill16(tail, mean: 0, std: 1)
            }
        }
        return values
    }

    /// `torch.rand(count)` as F32 values in order.
    public mutating func uniformFloats(count: Int) -> [Float] {
        precondition(count >= 0, "uniformFloats: negative count \(count)")
        return (0..<count).map { _ in nextUniformFloat() }
    }

    /// `torch.randn(shape, generator=g)`: a contiguous F32 tensor of standard normal samples.
    public mutating func randn(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, values: normalFloats(count: shape.reduce(1, *)))
    }

    /// `torch.rand(shape, generator=g)`: a contiguous F32 tensor of uniform samples in [0, 1).
    public mutating func rand(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, values: uniformFloats(count: shape.reduce(1, *)))
    }
}

extension TorchCPUGenerator {
    /// The generator for a seed as Python code writes it (`manual_seed(-1)` is `2⁶⁴-1`).
    public init(pythonSeed: Int64, normalKernel: TorchNormalKernel = .avx2) {
        self.init(seed: UInt64(bitPattern: pythonSeed), normalKernel: normalKernel)
    }
}
