import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

// Shared helpers of the LoRA tests (one test module: helpers are internal, named to be unique).

/// Tests/LoRATests/Fixtures (the target's copied resources).
let loraFixtures: String = Bundle.module.resourceURL!.appendingPathComponent("Fixtures").path

/// The tiny base models made by tools/gen_model_fixtures.py (HostTests' fixtures, read in place).
let tinyModels: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("HostTests/Fixtures/models").path

/// A registry with the LoRA family registered.
func loraRegistry() throws -> AdapterRegistry {
    let registry = AdapterRegistry()
    try registerLoRAFamily(into: registry)
    return registry
}

/// Loads an in-memory adapter (F64 reference tensors are stored as F32, as files are).
func loadAdapter(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], path: String = "mem.safetensors") throws -> Adapter {
    let source = InMemoryTensorSource(path: path, tensors: tensors.map { ($0.0, $0.1.to(.f32)) }, metadata: metadata)
    return try loraRegistry().load(source)
}

/// max |a − b| over all elements (any float dtypes).
func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Double {
    let x = a.doubles, y = b.doubles
    precondition(x.count == y.count, "shapes \(a.shape) vs \(b.shape)")
    return zip(x, y).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

func maxAbs(_ a: Tensor) -> Double { a.doubles.reduce(0) { max($0, abs($1)) } }

/// Row-major naive product in Double.
func naiveMatmul(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for p in 0..<k { for j in 0..<n { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
    return c
}

/// Deterministic pseudo-random values in [-1, 1).
func seededValues(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 6364136223846793005 &+ 1442695040888963407
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Double(state >> 11) / Double(1 << 53)) * 2 - 1
    }
}

func seededTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    Tensor(shape: shape, values: seededValues(shape.reduce(1, *), seed: seed).map { $0 * scale })
}

/// The same model with every floating-point tensor widened to F32 (merges then stay in F32).
func widenedToF32(_ model: ModelWeights) -> ModelWeights {
    var tensors: [String: Tensor] = [:]
    for key in model.keys {
        let t = model.tensor(key)!
        tensors[key] = t.dtype.isFloatingPoint ? t.to(.f32) : t
    }
    return ModelWeights(path: model.path + " (F32)", keys: model.keys, tensors: tensors, naming: model.naming,
                        family: model.family)
}
