import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

// Shared helpers of the PatchEngine*Tests (one test module: names start with `patch` or
// `Patch` so they do not collide with other suites' helpers).

/// Fixtures of the patch-engine tests: the tiny models (this target's resources) and the
/// peer-made LoRA files of Tests/LoRATests/Fixtures (read in place).
enum PatchFixtures {
    static let loraDirectory: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("LoRATests/Fixtures").path

    static func loraPath(_ name: String) -> String { "\(loraDirectory)/\(name).safetensors" }

    /// A fresh (uncached: the engine changes it) load of a tiny model: tensors map the file.
    static func model(_ name: String) throws -> ModelWeights {
        try ModelWeights.load(path: ModelFixtures.path("\(name).safetensors"))
    }

    /// The same model with every floating-point tensor copied to owned F32 storage.
    static func widened(_ model: ModelWeights) -> ModelWeights {
        var tensors: [String: Tensor] = [:]
        for key in model.keys {
            let t = model.tensor(key)!
            tensors[key] = t.dtype.isFloatingPoint ? t.to(.f32).copy() : t
        }
        return ModelWeights(path: model.path + " (F32)", keys: model.keys, tensors: tensors,
                            naming: model.naming, family: model.family)
    }

    static func registry() throws -> AdapterRegistry {
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        return registry
    }

    /// A peer-made LoRA fixture (`kohya_sd1_locon`, …), loaded through the registry.
    static func adapter(_ name: String) throws -> Adapter {
        try registry().load(try SafeTensorsFile(path: loraPath(name)))
    }

    /// A hand-built adapter file (F32 tensors, in the given key order).
    static func adapter(_ tensors: [(String, Tensor)], metadata: [String: String] = [:],
                        path: String = "handmade.safetensors") throws -> Adapter {
        try registry().load(InMemoryTensorSource(path: path, tensors: tensors, metadata: metadata))
    }
}

/// Deterministic pseudo-random values in [-scale, scale) (an LCG: the same on every run).
func patchSeeded(_ shape: [Int], seed: UInt64, scale: Float = 1, offset: Float = 0) -> Tensor {
    var state = seed &* 6364136223846793005 &+ 1442695040888963407
    let values = (0..<shape.reduce(1, *)).map { _ -> Float in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return (Float(Double(state >> 11) / Double(1 << 53)) * 2 - 1) * scale + offset
    }
    return Tensor(shape: shape, values: values)
}

/// A tensor's elements' bytes in row-major order.
func patchBytes(_ t: Tensor) -> [UInt8] {
    (t.isContiguous ? t : t.contiguous()).withUnsafeBytes { Array($0) }
}

/// max |a − b| in Double over flat element lists.
func patchMaxAbsDiff(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) elements")
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

func patchMaxAbs(_ a: [Double]) -> Double { a.reduce(0) { max($0, abs($1)) } }

/// Row-major `a [m, k] · b [k, n]` in Double.
func patchMatmul(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for p in 0..<k where a[i * k + p] != 0 { for j in 0..<n { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
    return c
}

/// Spacing of F32 numbers at |x| (one unit in the last place).
func patchULP32(_ x: Double) -> Double { Double(Float(abs(x)).ulp) }

/// Spacing of F16 numbers at |x| (subnormal spacing 2⁻²⁴ below 2⁻¹⁴).
func patchULP16(_ x: Double) -> Double {
    let a = abs(x)
    guard a >= 0x1p-14 else { return 0x1p-24 }
    return Double(sign: .plus, exponent: Int(floor(log2(a))) - 10, significand: 1)
}
