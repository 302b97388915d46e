import CKernels
import Tensor

/// `gemm`: square F32 GEMM (C = A·B, row-major) through OpenBLAS, in GFLOP/s (2·n³ flops).
/// PyTorch's side (tools/bench_peers.py) times torch.matmul on the same sizes.
func runGEMM(sizes: [Int], runs: Int) throws -> [Measurement] {
    try BLAS.ensureLoaded() // ah_sgemm calls through pointers set by the loader
    var rng = BenchRandom(state: 1)
    return sizes.map { n in
        let a = (0..<(n * n)).map { _ in rng.nextFloat() }
        let b = (0..<(n * n)).map { _ in rng.nextFloat() }
        var c = [Float](repeating: 0, count: n * n)
        let call = {
            c.withUnsafeMutableBufferPointer { c in
                ah_sgemm(0, 0, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, c.baseAddress, Int32(n))
            }
        }
        // One call to size the runs (and warm caches, threads and page tables).
        let first = now(); call(); let single = now() - first
        let time = timeBest(warmup: 1, runs: runs, repetitions: repetitions(forCallTaking: single), call)
        blackHole(c)
        let flops = 2 * Double(n) * Double(n) * Double(n)
        return Measurement(name: "gemm_n\(n)", value: flops / time.best / 1e9, unit: "GFLOP/s", better: .higher,
                           bestSeconds: time.best, spread: time.worst / time.best,
                           note: "ah_sgemm \(n)x\(n)x\(n), \(BLAS.threadCount) threads")
    }
}
