import CKernels
import Tensor

/// `convert`: dtype conversion throughput on `count` elements, in G elements/s.
///
/// Two forms per direction, each matched on PyTorch's side (tools/bench_peers.py):
/// - `widen_f16_f32` etc.: `Tensor.to(_:)`, which allocates its output like `t.float()` does
///   (so first-touch page faults of a fresh 256 MB buffer are part of both figures);
/// - `…_into`: the kernels into a reused output, split over cores like `Tensor.to` does,
///   against `out.copy_(t)` into a reused tensor.
func runConvert(count: Int, runs: Int) -> [Measurement] {
    var rng = BenchRandom(state: 2)
    let f32 = Tensor(uninitialized: [count], dtype: .f32)
    f32.withMutableFloats { p in for i in 0..<count { p[i] = rng.nextFloat() * 4 } }
    let f16 = f32.to(.f16), bf16 = f32.to(.bf16)

    func measure(_ name: String, _ source: Tensor, to target: DType) -> Measurement {
        let time = timeBest(warmup: 1, runs: runs) { blackHole(source.to(target)) }
        return Measurement(name: name, value: Double(count) / time.best / 1e9, unit: "Gelem/s", better: .higher,
                           bestSeconds: time.best, spread: time.worst / time.best,
                           note: "Tensor.to(.\(target)) on \(count >> 20)Mi elements, new output each call")
    }

    /// The kernel alone into a reused destination, chunked over cores as Tensor.to chunks it.
    func measureInto(_ name: String, _ source: Tensor, _ destination: Tensor,
                     _ kernel: @escaping (UnsafeRawPointer, UnsafeMutableRawPointer, Int) -> Void) -> Measurement {
        let sourceSize = source.dtype.byteSize, destinationSize = destination.dtype.byteSize
        let s = UnsafeRawPointer(source.baseAddress), d = destination.baseAddress
        let time = timeBest(warmup: 1, runs: runs) {
            Parallel.forChunks(count) { r in
                kernel(s + r.lowerBound * sourceSize, d + r.lowerBound * destinationSize, r.count)
            }
        }
        return Measurement(name: name, value: Double(count) / time.best / 1e9, unit: "Gelem/s", better: .higher,
                           bestSeconds: time.best, spread: time.worst / time.best,
                           note: "kernel into a reused output, \(Parallel.coreCount) chunks")
    }

    let wide = Tensor(uninitialized: [count], dtype: .f32)
    let narrow = Tensor(uninitialized: [count], dtype: .f16)
    return [
        measure("widen_f16_f32", f16, to: .f32),
        measure("widen_bf16_f32", bf16, to: .f32),
        measure("narrow_f32_f16", f32, to: .f16),
        measure("narrow_f32_bf16", f32, to: .bf16),
        measureInto("widen_f16_f32_into", f16, wide) { s, d, n in
            ah_f16_to_f32(s.assumingMemoryBound(to: UInt16.self), d.assumingMemoryBound(to: Float.self), n)
        },
        measureInto("widen_bf16_f32_into", bf16, wide) { s, d, n in
            ah_bf16_to_f32(s.assumingMemoryBound(to: UInt16.self), d.assumingMemoryBound(to: Float.self), n)
        },
        measureInto("narrow_f32_f16_into", f32, narrow) { s, d, n in
            ah_f32_to_f16(s.assumingMemoryBound(to: Float.self), d.assumingMemoryBound(to: UInt16.self), n)
        },
        measureInto("narrow_f32_bf16_into", f32, narrow) { s, d, n in
            ah_f32_to_bf16(s.assumingMemoryBound(to: Float.self), d.assumingMemoryBound(to: UInt16.self), n)
        },
    ]
}
