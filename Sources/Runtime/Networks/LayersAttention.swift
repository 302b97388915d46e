import CKernels
import Dispatch
import Host
import Tensor

/// Multi-head scaled dot-product attention with its projections (diffusers' `Attention` with
/// the default processor; CLIP's self-attention with `causal`).
///
/// q = x·W_qᵀ, k = c_k·W_kᵀ, v = c_v·W_vᵀ, softmax(q·kᵀ·scale)·v per head, then the output
/// projection (+ residual). Heads are column blocks of q/k/v, read in place by strided GEMMs
/// (no split/permute copies). Scores are computed for blocks of queries (≤ 4 MiB of scores
/// per block), so SD's 4096×4096 self-attention never materialises a full score matrix;
/// (image, head, query block) items run on all cores at once with single-threaded GEMMs.
///
/// Hypernetworks: when `usesContextTransforms`, the context the keys and values read (the
/// text for cross-attention, x itself for self-attention — A1111 hooks every attention
/// module) goes through `hooks.contextTransforms` in order; each transform answers only for
/// the widths it has modules for.
public struct Attention {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    /// The output projection (nil: the caller projects).
    public let output: Linear?
    public let heads: Int
    public let headDim: Int
    /// Mask keys after the query's own position (CLIP text encoders).
    public var causal: Bool
    /// Pass the keys' and values' context through the hooks' context transforms.
    public var usesContextTransforms: Bool
    /// Score scale (1/√headDim).
    public var scale: Float

    /// Scores one block of queries may hold (floats): 4 MiB per core. (Tests lower it.)
    var scoreBudget = 1 << 20

    public init(query: Linear, key: Linear, value: Linear, output: Linear?, heads: Int,
                causal: Bool = false, usesContextTransforms: Bool = false) throws {
        guard heads > 0, query.outFeatures % heads == 0, key.outFeatures == query.outFeatures,
              value.outFeatures % heads == 0 else {
            throw WeightLoaderError.badShape(model: query.weight.resolver.model.path, key: query.weight.diffusersKey,
                                             shape: query.weight.shape,
                                             rule: "q/k/v widths \(query.outFeatures)/\(key.outFeatures)/\(value.outFeatures) do not split into \(heads) heads")
        }
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.heads = heads
        self.headDim = query.outFeatures / heads
        self.causal = causal
        self.usesContextTransforms = usesContextTransforms
        self.scale = 1 / Float(headDim).squareRoot()
    }

    /// diffusers naming: `to_q`, `to_k`, `to_v`, `to_out.0`.
    public init(diffusers loader: WeightLoader, heads: Int, usesContextTransforms: Bool = true) throws {
        try self.init(query: Linear(loader.child("to_q")), key: Linear(loader.child("to_k")),
                      value: Linear(loader.child("to_v")), output: Linear(loader.child("to_out.0")),
                      heads: heads, usesContextTransforms: usesContextTransforms)
    }

    /// Attention of tokens `x` [B, N, C] over `context` [B, M, C_ctx] (nil: self-attention),
    /// through the output projection, plus `residual` (x's shape after projection) when given.
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, hooks: GenerationHooks = .none,
                               workspace: Workspace, adding residual: Tensor? = nil) throws -> Tensor {
        precondition(x.rank == 3, "attention input \(x.shape) is not [B, N, C]")
        let source = context ?? x
        precondition(source.rank == 3 && source.shape[0] == x.shape[0],
                     "attention context \(source.shape) does not match input \(x.shape)")
        var keyInput = source, valueInput = source
        if usesContextTransforms && !hooks.contextTransforms.isEmpty {
            (keyInput, valueInput) = try Attention.transformedContext(source, hooks.contextTransforms)
        }
        let q = try query(x, hooks: hooks, workspace: workspace)
        let k = try key(keyInput, hooks: hooks, workspace: workspace)
        let v = try value(valueInput, hooks: hooks, workspace: workspace)
        let attended = attend(q: q, k: k, v: v, workspace: workspace)
        if let output { return try output(attended, hooks: hooks, workspace: workspace, adding: residual) }
        if let residual { addInPlace(attended, residual) }
        return attended
    }

    /// softmax(q·kᵀ·scale)·v per head, for projected q [B, N, H·d], k [B, M, H·d], v [B, M, H·d_v].
    public func attend(q: Tensor, k: Tensor, v: Tensor, workspace: Workspace) -> Tensor {
        let (batch, queries, keys) = (q.shape[0], q.shape[1], k.shape[1])
        let valueWidth = v.shape[2]
        precondition(k.shape[0] == batch && v.shape[0] == batch && v.shape[1] == keys && k.shape[2] == q.shape[2],
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape) do not fit")
        let (qc, kc, vc) = (q.contiguousF32, k.contiguousF32, v.contiguousF32)
        let out = workspace.tensor([batch, queries, valueWidth])
        NetworkProfiler.measure("attention.core", flops: 2 * Double(batch * queries * keys * (q.shape[2] + valueWidth))) {
            withExtendedLifetime((qc, kc, vc)) {
                Attention.multiHead(q: qc.f32Pointer, k: kc.f32Pointer, v: vc.f32Pointer, out: out.f32Pointer,
                                    batch: batch, queries: queries, keys: keys, heads: heads,
                                    headDim: q.shape[2] / heads, valueDim: valueWidth / heads,
                                    scale: scale, causal: causal, scoreBudget: scoreBudget, workspace: workspace)
            }
        }
        return out
    }

    /// The keys' and values' inputs after the context transforms, chained as A1111 chains
    /// hypernetworks: k_{i+1} = T_i(k_i).key, v_{i+1} = T_i(v_i).value, starting from k = v = context.
    static func transformedContext(_ context: Tensor,
                                   _ transforms: [(transform: any ContextTransform, strength: Float)]) throws -> (Tensor, Tensor) {
        var k = context, v = context
        var shared = true // k and v are still the same tensor: one call gives both
        for (transform, strength) in transforms {
            let width = k.shape[k.rank - 1]
            if shared {
                if let r = try transform.transform(context: k, width: width, strength: strength) {
                    (k, v) = (r.key, r.value)
                    shared = false
                }
            } else if let r = try transform.transform(key: k, value: v, width: width, strength: strength) {
                // One call: the key MLP on k, the value MLP on v (not both MLPs on each).
                (k, v) = (r.key, r.value)
            }
        }
        return (k, v)
    }

    /// Head widths up to this use the fused kernel (scores never leave L1/L2); wider heads (the
    /// VAE's single 512-wide head) use GEMMs, which block the value matrix better.
    static let fusedHeadLimit = 160

    /// Queries per work item of the fused kernel (a multiple of its 6-row tile).
    static let fusedBlockRows = 96

    /// The fused path. Per (image, head), keys are packed once into 16-key panels (the score
    /// kernel then reads each panel front to back) and values into dense rows (streamed by
    /// P·V); then per (image, head, block of queries) scores, softmax and P·V run in one C
    /// kernel (CKernels' ah_nn_attention_rows), on all cores at once.
    static func fusedMultiHead(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, batch: Int, queries: Int, keys: Int, heads: Int,
                               headDim: Int, valueDim: Int, scale: Float, causal: Bool, workspace: Workspace) {
        let (qStride, vStride) = (heads * headDim, heads * valueDim)
        let ldkt = (keys + 15) & ~15
        let keyPanels = workspace.floats(.packedKeys, count: batch * heads * headDim * ldkt)
        let values = workspace.floats(.packedValues, count: batch * heads * keys * valueDim)
        Work.parallel(batch * heads, costPerItem: (headDim + valueDim) * keys) { bh in
            let (b, h) = (bh / heads, bh % heads)
            ah_nn_pack_keys(k + b * keys * qStride + h * headDim, qStride, keys, headDim, keyPanels + bh * headDim * ldkt)
            let source = v + b * keys * vStride + h * valueDim, dense = values + bh * keys * valueDim
            for j in 0..<keys { (dense + j * valueDim).update(from: source + j * vStride, count: valueDim) }
        }
        let blockRows = fusedBlockRows, blocks = (queries + blockRows - 1) / blockRows
        let items = batch * heads * blocks
        let cost = 2 * min(blockRows, queries) * keys * (headDim + valueDim)
        let workers = Work.workerCount(items, costPerItem: cost)
        // Scratch per worker (6 score rows), made before the parallel region.
        let scratch = (0..<workers).map { workspace.floats(.scores(worker: $0), count: 6 * ldkt) }
        Work.parallelWorkers(items, costPerItem: cost) { worker, item in
            let q0 = (item % blocks) * blockRows, rows = min(blockRows, queries - q0)
            let bh = item / blocks, (b, h) = (bh / heads, bh % heads)
            ah_nn_attention_rows(q + (b * queries + q0) * qStride + h * headDim, qStride, rows, headDim,
                                 keyPanels + bh * headDim * ldkt, keys,
                                 values + bh * keys * valueDim, valueDim, valueDim,
                                 out + (b * queries + q0) * vStride + h * valueDim, vStride, scale,
                                 causal ? q0 : -1, scratch[worker])
        }
    }

    /// The attention kernel on raw rows: q [B, N, H·d], k [B, M, H·d], v [B, M, H·dv] → out
    /// [B, N, H·dv], all row-major and contiguous.
    static func multiHead(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          out: UnsafeMutablePointer<Float>, batch: Int, queries: Int, keys: Int, heads: Int,
                          headDim: Int, valueDim: Int, scale: Float, causal: Bool, scoreBudget: Int = 1 << 20,
                          workspace: Workspace) {
        if batch * queries * heads == 0 { return }
        let (qStride, vStride) = (heads * headDim, heads * valueDim)
        if keys == 0 {
            for i in 0..<(batch * queries * vStride) { out[i] = 0 }
            return
        }
        if headDim <= fusedHeadLimit && valueDim <= fusedHeadLimit {
            fusedMultiHead(q: q, k: k, v: v, out: out, batch: batch, queries: queries, keys: keys, heads: heads,
                           headDim: headDim, valueDim: valueDim, scale: scale, causal: causal, workspace: workspace)
            return
        }
        let block = max(1, min(queries, scoreBudget / keys))
        let blocks = (queries + block - 1) / block
        let items = batch * heads * blocks
        let work = 2 * block * keys * (headDim + valueDim)
        let workers = items > 1 && items * work >= (1 << 20) ? min(Parallel.coreCount, items) : 1
        // Scratch per worker, made before the parallel region (Workspace is not thread-safe).
        let scores = (0..<workers).map { workspace.floats(.scores(worker: $0), count: block * keys) }

        func run(_ item: Int, _ s: UnsafeMutablePointer<Float>) {
            let q0 = (item % blocks) * block, rows = min(block, queries - q0)
            let head = (item / blocks) % heads, b = item / (blocks * heads)
            // S = scale · Q_blk · K_hᵀ (head h: columns h·d ..< (h+1)·d, row stride H·d).
            sgemm(transB: true, m: rows, n: keys, k: headDim, alpha: scale,
                  a: q + (b * queries + q0) * qStride + head * headDim, lda: qStride,
                  b: k + b * keys * qStride + head * headDim, ldb: qStride,
                  c: s, ldc: keys)
            if causal {
                for i in 0..<rows where q0 + i + 1 < keys {
                    (s + i * keys + q0 + i + 1).update(repeating: -.infinity, count: keys - (q0 + i + 1))
                }
            }
            ah_nn_softmax_rows(s, rows, keys, keys)
            // O_blk = P · V_h.
            sgemm(m: rows, n: valueDim, k: keys, a: s, lda: keys,
                  b: v + b * keys * vStride + head * valueDim, ldb: vStride,
                  c: out + (b * queries + q0) * vStride + head * valueDim, ldc: vStride)
        }

        if workers == 1 {
            for item in 0..<items { run(item, scores[0]) }
            return
        }
        Work.withSingleThreadedBLAS {
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var item = w
                while item < items {
                    run(item, scores[w])
                    item += workers
                }
            }
        }
    }
}
