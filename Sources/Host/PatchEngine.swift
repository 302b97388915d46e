import Tensor

/// Applies plans to a model in place (merged mode) and restores it bit-exactly.
///
/// Merged mode: W' = W + Σ wᵢ·ΔWᵢ, computed in F32 and stored in W's dtype. The engine never
/// writes into a tensor's storage: it swaps a new tensor in and keeps the original (a view,
/// zero-copy for mapped files) as the backup, so restore is bit-exact and the backup costs
/// at most the touched tensors — nothing for mapped models.
public final class PatchEngine {
    public let model: ModelWeights
    private var backup: [String: Tensor] = [:]

    public init(model: ModelWeights) { self.model = model }

    /// Keys currently patched.
    public var patchedKeys: [String] { model.keys.filter { backup[$0] != nil } }

    /// Applies `plan` on top of the current weights. On any module error the model is left
    /// as it was before this call. `progress(done, total)` is called after each tensor.
    @discardableResult
    public func apply(_ plan: PatchPlan, progress: ((Int, Int) -> Void)? = nil) throws -> PatchReport {
        precondition(plan.model === model, "plan was made for another model")
        let keys = plan.touchedKeys
        var computed: [(String, Tensor)] = []
        computed.reserveCapacity(keys.count)
        for (i, key) in keys.enumerated() {
            // Nothing is swapped in until every tensor computed: an error leaves the model whole.
            computed.append((key, try plan.patchedTensor(for: key)!))
            progress?(i + 1, keys.count)
        }
        for (key, tensor) in computed {
            if backup[key] == nil { backup[key] = model.tensor(key)! }
            model.replace(key, with: tensor)
        }
        return plan.report
    }

    /// Puts back every original tensor (bit-exact: the originals themselves).
    public func restore() {
        for (key, original) in backup { model.replace(key, with: original) }
        backup.removeAll()
    }
}

/// Bypass mode: weights untouched; the runtime asks, per layer, for the adapters' additive
/// contribution to the layer's output: y = f(x) + Σ forwardTermᵢ(x).
///
/// On a layer where some module depends on the weight (DoRA, IA3, OFT, GLoRA), the terms do
/// not add up independently (each such module sees W as changed by the modules before it,
/// see `PatchPlan`): the contribution is then that of the whole chain, x·(W_chain − W)ᵀ, so
/// bypass and merged mode agree.
public final class BypassPatch {
    public let plan: PatchPlan
    /// A dense delta: of one planned module (`module` set; the same adapter may be twice in a
    /// stack with other options), or of a weight's whole chain (`module` nil), per row block.
    private struct DenseKey: Hashable {
        let weightKey: String
        let rows: Range<Int>?
        let module: ObjectIdentifier?
        let strength: Float
        let dynRank: Int?
    }
    /// Dense deltas of modules without a cheaper forward form, and chain deltas, computed once.
    private var denseCache: [DenseKey: Tensor] = [:]

    public init(plan: PatchPlan) { self.plan = plan }

    /// True when some adapter adds to the layer whose weight is `weightKey`.
    public func hasTerms(for weightKey: String) -> Bool { plan.modulesByWeightKey[weightKey] != nil }

    /// The summed contribution for input `x` of the layer with weight `weightKey`, or nil.
    /// Modules with a forward form (LoRA: x·Dᵀ·Uᵀ·s) use it; others use their dense delta:
    /// x·ΔWᵀ for linear layers, conv2d(x, ΔW) for convolutions.
    public func contribution(for weightKey: String, input x: Tensor, layer: LayerKind) throws -> Tensor? {
        guard let planned = plan.modulesByWeightKey[weightKey] else { return nil }
        if planned.contains(where: { $0.module.dependsOnWeight }) {
            precondition(planned.allSatisfy { $0.target.rows == nil }, "bypass on fused in_proj rows is applied by the runtime per q/k/v")
            return denseTerm(try chainDelta(weightKey, rows: nil, planned), input: x, layer: layer, weightKey: weightKey)
        }
        var sum: Tensor? = nil
        for p in planned {
            precondition(p.target.rows == nil, "bypass on fused in_proj rows is applied by the runtime per q/k/v")
            let term: Tensor
            if let t = try p.module.forwardTerm(input: x, layer: layer, options: p.options) {
                term = t
            } else {
                term = denseTerm(try denseDelta(p), input: x, layer: layer, weightKey: weightKey)
            }
            sum = sum.map { $0 + term } ?? term
        }
        return sum
    }

    /// x·ΔWᵀ for a linear layer, conv2d(x, ΔW) for a convolution.
    private func denseTerm(_ delta: Tensor, input x: Tensor, layer: LayerKind, weightKey: String) -> Tensor {
        switch layer {
        case .linear: return x.matmul(delta.transposed())
        case let .conv2d(stride, padding): return x.conv2d(weight: delta, stride: stride, padding: padding)
        case .norm, .embedding:
            preconditionFailure("bypass is for linear and conv layers; \(weightKey) is \(layer)")
        }
    }

    /// True when some adapter adds to the row block `rows` of the fused weight `weightKey`
    /// (nil: an unfused weight, as `hasTerms(for:)`).
    public func hasTerms(for weightKey: String, rows: Range<Int>?) -> Bool {
        plan.modulesByWeightKey[weightKey]?.contains { $0.target.rows == rows } ?? false
    }

    /// `contribution(for:input:layer:)` for one row block of a fused weight (OpenCLIP's
    /// `in_proj_weight`: q, k, v stacked by rows): only modules whose target has exactly these
    /// `rows` add, and a dense delta is computed against those rows of the weight. With
    /// `rows` nil it is `contribution(for:input:layer:)` for an unfused weight.
    public func contribution(for weightKey: String, rows: Range<Int>?, input x: Tensor,
                             layer: LayerKind) throws -> Tensor? {
        guard let planned = plan.modulesByWeightKey[weightKey]?.filter({ $0.target.rows == rows }),
              !planned.isEmpty else { return nil }
        guard let rows else { return try contribution(for: weightKey, input: x, layer: layer) }
        if planned.contains(where: { $0.module.dependsOnWeight }) {
            guard case .linear = layer else {
                preconditionFailure("fused row blocks are linear weights; \(weightKey) is \(layer)")
            }
            return x.matmul(try chainDelta(weightKey, rows: rows, planned).transposed())
        }
        var sum: Tensor? = nil
        for p in planned {
            let term: Tensor
            if let t = try p.module.forwardTerm(input: x, layer: layer, options: p.options) {
                term = t
            } else {
                guard case .linear = layer else {
                    preconditionFailure("fused row blocks are linear weights; \(weightKey) is \(layer)")
                }
                term = x.matmul(try denseDelta(p).transposed())
            }
            sum = sum.map { $0 + term } ?? term
        }
        return sum
    }

    private func denseDelta(_ p: PlannedModule) throws -> Tensor {
        let id = DenseKey(weightKey: p.target.weightKey, rows: p.target.rows, module: ObjectIdentifier(p.module),
                          strength: p.options.strength, dynRank: p.options.dynRank)
        if let d = denseCache[id] { return d }
        let stored = plan.model.tensor(p.target.weightKey)!
        // A fused target's module sees only its rows (as in `PatchPlan.applyChain`).
        let weight = (p.target.rows.map { stored.sliced(axis: 0, $0) } ?? stored).to(.f32).contiguous()
        guard let raw = try p.module.delta(weight: weight, options: p.options).weight,
              let fitted = DeltaFitting.fit(raw, to: weight.shape) else {
            throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                                          reason: "no weight delta that fits \(weight.shape)")
        }
        denseCache[id] = fitted
        return fitted
    }

    /// W_chain − W for the modules `planned` on `weightKey` (F32; only `rows` of a fused
    /// weight): what merged mode adds, with each weight-dependent module seeing the weight as
    /// the modules before it left it.
    private func chainDelta(_ weightKey: String, rows: Range<Int>?, _ planned: [PlannedModule]) throws -> Tensor {
        let id = DenseKey(weightKey: weightKey, rows: rows, module: nil, strength: 0, dynRank: nil)
        if let d = denseCache[id] { return d }
        let stored = plan.model.tensor(weightKey)!
        var delta = try plan.applyChain(planned, to: stored, bias: nil).weight - stored.to(.f32)
        if let rows { delta = delta.sliced(axis: 0, rows).contiguous() }
        denseCache[id] = delta
        return delta
    }
}
