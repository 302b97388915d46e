#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels
import Dispatch
import Foundation
import Tensor

/// Memory a network reuses across layers and calls, so that after the first call it neither
/// allocates nor page-faults (a fresh 10 MB activation costs ~2,500 page faults; the SD VAE
/// makes 100+ MB ones):
///
/// - scratch buffers (widened weights, im2col columns, attention score blocks) that only grow;
/// - a pool of activation storages: `tensor(_:)` hands out a storage no tensor refers to any
///   more (Swift's reference count says so: a storage is reused only when the pool holds the
///   sole reference), else allocates one and keeps it for later.
///
/// The pool keeps up to the peak of activations alive between calls (`releaseAll()` returns
/// everything). One forward pass at a time per workspace: networks run each public call inside
/// `exclusive`, so a model shared between threads serialises its calls instead of two passes
/// handing each other's activations out of one pool.
public final class Workspace: @unchecked Sendable {
    /// Held for a whole forward pass (recursive: a public call may call another).
    private let passLock = NSRecursiveLock()
    private var buffers: [Slot: (pointer: UnsafeMutableRawPointer, bytes: Int)] = [:]
    /// Nesting depth of `withF32` scopes: each depth widens into its own buffer.
    private var weightDepth = 0
    /// Activation storages, reusable when uniquely referenced (by this array).
    private var pool: [Storage] = []
    /// Most bytes the pool keeps; storages beyond it are allocated but not pooled.
    public var poolLimit = 3 << 30

    enum Slot: Hashable {
        case weight(depth: Int)
        case columns
        case tileColumns(worker: Int)
        case scores(worker: Int)
        case packedKeys
        case packedValues
        case temporary(Int)
    }

    public init() {
        // The layers that use a workspace call GEMM; they check BLAS when they are built, and
        // direct kernel callers (tests) get it loaded here. A missing OpenBLAS surfaces as
        // `BLAS.Unavailable` from those constructors.
        _ = try? BLAS.ensureLoaded()
    }

    deinit {
        for (_, b) in buffers { free(b.pointer) }
    }

    /// Runs `body` (one forward pass) with this workspace to itself.
    public func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        passLock.lock()
        defer { passLock.unlock() }
        return try body()
    }

    /// Bytes held in scratch buffers and pooled storages (for memory reports).
    public var byteCount: Int { buffers.values.reduce(0) { $0 + $1.bytes } + pool.reduce(0) { $0 + $1.byteCount } }

    /// Releases every buffer and pooled storage (they are re-made on the next use; storages
    /// that tensors still refer to live on with them).
    public func releaseAll() {
        for (_, b) in buffers { free(b.pointer) }
        buffers.removeAll()
        pool.removeAll()
    }

    /// A new F32 tensor of `shape` whose elements the caller must write before reading, backed
    /// by a pooled storage when one of a fitting size (up to 1/8 larger) is free.
    func tensor(_ shape: [Int]) -> Tensor {
        let bytes = shape.reduce(1, *) * MemoryLayout<Float>.stride
        var best: Int? = nil
        for i in pool.indices where pool[i].byteCount >= bytes && pool[i].byteCount - bytes <= bytes {
            // Unique: no tensor (or view) refers to this storage any more.
            if isKnownUniquelyReferenced(&pool[i]), best.map({ pool[i].byteCount < pool[$0].byteCount }) ?? true {
                best = i
            }
        }
        if let best { return Tensor(storage: pool[best], dtype: .f32, shape: shape) }
        let storage = Storage(uninitializedByteCount: bytes)
        adviseHugePages(storage.bytes, byteCount: bytes)
        var pooled = pool.reduce(0) { $0 + $1.byteCount }
        if pooled + bytes > poolLimit {
            // Make room by dropping free storages, largest first.
            var dropped = Set<Int>()
            for i in pool.indices.sorted(by: { pool[$0].byteCount > pool[$1].byteCount })
            where pooled + bytes > poolLimit && isKnownUniquelyReferenced(&pool[i]) {
                pooled -= pool[i].byteCount
                dropped.insert(i)
            }
            pool = pool.enumerated().filter { !dropped.contains($0.offset) }.map(\.element)
        }
        if pooled + bytes <= poolLimit { pool.append(storage) }
        return Tensor(storage: storage, dtype: .f32, shape: shape)
    }

    /// A buffer of at least `count` floats for `slot`, valid until the slot is asked for again
    /// with a larger count. Contents are undefined.
    func floats(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        if let b = buffers[slot], b.bytes >= bytes {
            return b.pointer.assumingMemoryBound(to: Float.self)
        }
        if let old = buffers[slot] { free(old.pointer) }
        var raw: UnsafeMutableRawPointer? = nil
        // 64-byte alignment: whole cache lines, aligned vector loads.
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory: \(bytes) bytes of scratch") }
        adviseHugePages(raw, byteCount: bytes)
        buffers[slot] = (raw, bytes)
        return raw.assumingMemoryBound(to: Float.self)
    }

    /// Calls `body` with `tensor`'s elements as F32 in row-major order: the tensor's own memory
    /// when it is contiguous F32 (zero-copy, including memory-mapped weights), else a widened
    /// copy in a reused buffer (F16/BF16 through the vector conversion kernels). The pointer is
    /// valid only inside `body`; nested calls use separate buffers.
    func withF32<R>(_ tensor: Tensor, _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        if tensor.dtype == .f32 && tensor.isContiguous {
            return try withExtendedLifetime(tensor) {
                try body(UnsafePointer(tensor.baseAddress.assumingMemoryBound(to: Float.self)))
            }
        }
        let source = tensor.isContiguous ? tensor : tensor.contiguous()
        weightDepth += 1
        defer { weightDepth -= 1 }
        let n = source.count
        let buffer = floats(.weight(depth: weightDepth), count: n)
        switch source.dtype {
        case .f16, .bf16:
            let src = source.baseAddress.assumingMemoryBound(to: UInt16.self)
            let isHalf = source.dtype == .f16
            Parallel.forChunks(n) { r in
                if isHalf {
                    ah_f16_to_f32(src + r.lowerBound, buffer + r.lowerBound, r.count)
                } else {
                    ah_bf16_to_f32(src + r.lowerBound, buffer + r.lowerBound, r.count)
                }
            }
        default:
            let widened = source.to(.f32)
            widened.withFloats { buffer.update(from: $0.baseAddress!, count: n) }
        }
        return try withExtendedLifetime(source) { try body(UnsafePointer(buffer)) }
    }
}

/// Asks Linux to back the 2 MiB-aligned interior of a fresh, never-written allocation of at
/// least 4 MiB with transparent huge pages (THP "madvise" mode only does so on request): one
/// fault per 2 MiB instead of per 4 KiB on first touch. Harmless where THP is off.
func adviseHugePages(_ p: UnsafeMutableRawPointer, byteCount: Int) {
    #if os(Linux)
    guard byteCount >= 4 << 20 else { return }
    let huge = 2 << 20
    let start = (Int(bitPattern: p) + huge - 1) & ~(huge - 1), end = (Int(bitPattern: p) + byteCount) & ~(huge - 1)
    guard end > start, let first = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(first, end - start, MADV_HUGEPAGE)
    #endif
}

/// Row-major single-precision GEMM through OpenBLAS: C = alpha·op(A)·op(B) + beta·C.
/// `BLAS.ensureLoaded()` must have succeeded (networks check it when they are built).
@inline(__always)
func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
           beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        // No products: C = beta·C (BLAS rejects k = 0 leading dimensions on some builds).
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
        return
    }
    // Int32(...) traps on overflow: LP64 OpenBLAS takes 32-bit dimensions.
    ah_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
             b, Int32(ldb), beta, c, Int32(ldc))
}

/// Work splitting for the runtime's kernels.
enum Work {
    /// Runs `body(i)` for i in 0..<count on all cores (inline when count is 1 or the
    /// total work, `count·costPerItem` element-operations, is small).
    static func parallel(_ count: Int, costPerItem: Int, _ body: (Int) -> Void) {
        parallelWorkers(count, costPerItem: costPerItem) { _, i in body(i) }
    }

    /// How many workers `parallelWorkers` uses for this much work.
    static func workerCount(_ count: Int, costPerItem: Int) -> Int {
        count <= 1 || count * costPerItem < (1 << 16) ? 1 : min(Parallel.coreCount, count)
    }

    /// Runs `body(worker, i)` for i in 0..<count, `worker` < `workerCount(count, costPerItem)`
    /// naming the thread's share (for per-worker scratch).
    static func parallelWorkers(_ count: Int, costPerItem: Int, _ body: (Int, Int) -> Void) {
        let workers = workerCount(count, costPerItem: costPerItem)
        if workers == 1 {
            for i in 0..<count { body(0, i) }
            return
        }
        // Static interleaving: items are equal-sized in every caller, and interleaving keeps
        // neighbouring items (adjacent memory) on different cores at the same time.
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var i = w
            while i < count {
                body(w, i)
                i += workers
            }
        }
    }

    /// Splits `0..<count` into one contiguous range per core (inline when small).
    static func ranges(_ count: Int, costPerItem: Int, _ body: (Range<Int>) -> Void) {
        Parallel.forChunks(count, cost: max(1, costPerItem) * 4, body)
    }

    /// Runs `body` with OpenBLAS single-threaded, for regions that call GEMM from several
    /// threads at once (each call then runs on its caller's core; OpenBLAS ≥ 0.3.7 allows
    /// concurrent calls). The previous thread count is restored afterwards.
    static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        let previous = BLAS.threadCount
        if previous <= 1 { return try body() }
        BLAS.threadCount = 1
        defer { BLAS.threadCount = previous }
        return try body()
    }
}

/// A new F32 tensor to be fully written: from `workspace`'s pool when there is one.
func newTensor(_ shape: [Int], _ workspace: Workspace?) -> Tensor {
    workspace?.tensor(shape) ?? Tensor(uninitialized: shape)
}

extension Tensor {
    /// A contiguous F32 version (self when it already is).
    var contiguousF32: Tensor {
        dtype == .f32 ? (isContiguous ? self : contiguous()) : to(.f32)
    }

    /// Typed pointer to a contiguous F32 tensor's first element.
    var f32Pointer: UnsafeMutablePointer<Float> {
        precondition(dtype == .f32 && isContiguous, "expected contiguous F32, got \(dtype) \(shape)")
        return baseAddress.assumingMemoryBound(to: Float.self)
    }
}
