import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

// Helpers of the LoRA operation tests (combine, extract, resize, convert, metadata).

/// Tests/LoRATests/Fixtures/ops (tools/gen_lora_ops_fixtures.py).
let opsFixtures = "\(loraFixtures)/ops"

/// A temporary directory removed when the value goes away.
final class OpsScratch {
    let path: String
    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("lora-ops-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

/// Writes `tensors` as a safetensors file and returns its path.
func writeOpsFile(_ dir: OpsScratch, _ name: String, _ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws -> String {
    let path = dir.file(name)
    var writer = SafeTensorsWriter(metadata: metadata)
    for (key, tensor) in tensors { writer.add(key, tensor: tensor) }
    try writer.write(to: path)
    return path
}

/// A kohya module's three tensors: down [r, in], up [out, r], alpha.
func kohyaModule(_ name: String, out: Int, in inFeatures: Int, rank: Int, alpha: Float?, seed: UInt64,
                 kernel: Int = 1) -> [(String, Tensor)] {
    var tensors: [(String, Tensor)] = [
        ("\(name).lora_down.weight", kernel == 1 ? seededTensor([rank, inFeatures], seed: seed, scale: 0.5)
                                                 : seededTensor([rank, inFeatures, kernel, kernel], seed: seed, scale: 0.5)),
        ("\(name).lora_up.weight", kernel == 1 ? seededTensor([out, rank], seed: seed &+ 1, scale: 0.5)
                                               : seededTensor([out, rank, 1, 1], seed: seed &+ 1, scale: 0.5)),
    ]
    if let alpha { tensors.append(("\(name).alpha", Tensor(shape: [], values: [alpha]))) }
    return tensors
}

/// Every module's unit delta (scale · product), as F64 values and shape, by module name.
func unitDeltas(_ path: String) throws -> [String: (values: [Double], shape: [Int])] {
    let adapter = try loraRegistry().load(try SafeTensorsFile(path: path))
    var out: [String: (values: [Double], shape: [Int])] = [:]
    for module in adapter.modules {
        guard let linear = module as? LinearAdapterModule, let w = try linear.unitDelta(dynRank: nil).weight else { continue }
        out[module.name] = (w.doubles, w.shape)
    }
    return out
}

/// ‖a − b‖ / max(‖b‖, tiny) for F64 arrays.
func relativeDistance(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) { num += (x - y) * (x - y); den += y * y }
    return num.squareRoot() / max(den.squareRoot(), 1e-300)
}

/// The optimal rank-k Frobenius error of a matrix: √(Σ_{i≥k} σᵢ²), from LAPACK's full SVD in F64.
func optimalError(_ matrix: Tensor, rank k: Int) throws -> Double {
    let s = try svd(matrix.to(.f64)).s.doubles
    return s.dropFirst(k).reduce(0) { $0 + $1 * $1 }.squareRoot()
}

/// scale · up · down in F64 (naive loops), as a matrix [out, in·k].
func naiveDelta(up: Tensor, down: Tensor, scale: Double) -> [Double] {
    let r = down.shape[0], out = up.shape[0], width = down.count / r
    return naiveMatmul(up.doubles, down.doubles, m: out, k: r, n: width).map { $0 * scale }
}
