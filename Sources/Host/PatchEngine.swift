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
/// contribution to the layer's output: y = f(x) + Σ forwardTermᵢ(x) + Σ Δbᵢ.
///
/// On a layer where some module depends on the weight (DoRA, IA3, OFT, GLoRA), the terms do
/// not add up independently (each such module sees W as changed by the modules before it,
/// see `PatchPlan`): the contribution is then that of the whole chain, x·(W_chain − W)ᵀ, so
/// bypass and merged mode agree.
///
/// Bias deltas (LyCORIS `diff_b`, `b_norm`, PEFT's `lora_B.bias`) are a constant per output
/// channel, broadcast over the x-dependent term (the last axis of a linear layer's output,
/// axis 1 of a convolution's NCHW output). As in merged mode, a bias delta on a layer without
/// a bias in the model is not applied (the plan reports it).
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
    /// Bias deltas (F32 `[out]`, or the row block's) of modules and chains, computed once.
    private var biasCache: [DenseKey: Tensor] = [:]

    public init(plan: PatchPlan) { self.plan = plan }

    /// True when some adapter adds to the layer whose weight is `weightKey`.
    public func hasTerms(for weightKey: String) -> Bool { plan.modulesByWeightKey[weightKey] != nil }

    /// The summed contribution for input `x` of the layer with weight `weightKey`, or nil.
    /// Modules with a forward form (LoRA: x·Dᵀ·Uᵀ·s) use it; others use their dense delta:
    /// x·ΔWᵀ for linear layers, conv2d(x, ΔW) for convolutions; bias deltas are added last.
    public func contribution(for weightKey: String, input x: Tensor, layer: LayerKind) throws -> Tensor? {
        guard let planned = plan.modulesByWeightKey[weightKey] else { return nil }
        precondition(planned.allSatisfy { $0.target.rows == nil }, "bypass on fused in_proj rows is applied by the runtime per q/k/v")
        return try summedContribution(weightKey, rows: nil, planned, input: x, layer: layer)
    }

    /// `contribution(for:input:layer:)` added to `out` in place (the layer's output:
    /// contiguous F32 in the layout the contribution has, `[..., out]` for a linear layer,
    /// NCHW for a convolution). Modules independent of the weight and without bias deltas
    /// accumulate their forward terms straight into `out` (`addForwardTerm`); other layers
    /// add their summed contribution. False when no adapter adds to the layer.
    public func addContribution(for weightKey: String, input x: Tensor, layer: LayerKind, into out: Tensor) throws -> Bool {
        guard let planned = plan.modulesByWeightKey[weightKey] else { return false }
        precondition(planned.allSatisfy { $0.target.rows == nil }, "bypass on fused in_proj rows is applied by the runtime per q/k/v")
        if planned.contains(where: { $0.module.dependsOnWeight || $0.module.changesBias || !$0.module.changesWeight }) {
            guard let term = try summedContribution(weightKey, rows: nil, planned, input: x, layer: layer) else { return false }
            out.addScaled(term.reshaped(out.shape), alpha: 1)
            return true
        }
        for p in planned where !(try p.module.addForwardTerm(input: x, layer: layer, options: p.options, into: out)) {
            let term = denseTerm(try denseDelta(p), input: x, layer: layer, weightKey: weightKey)
            out.addScaled(term.reshaped(out.shape), alpha: 1)
        }
        return true
    }

    /// x·ΔWᵀ for a linear layer (a 1×1 convolution's [out, in, 1, 1] delta read as its
    /// matrix: the runtime runs pointwise convolutions on rows of pixels as linear layers),
    /// conv2d(x, ΔW) for a convolution.
    private func denseTerm(_ delta: Tensor, input x: Tensor, layer: LayerKind, weightKey: String) -> Tensor {
        switch layer {
        case .linear:
            if delta.rank == 4 {
                precondition(delta.shape[2] * delta.shape[3] == 1, "\(weightKey): a \(delta.shape) delta on a linear layer")
                return x.matmul(delta.reshaped([delta.shape[0], delta.shape[1]]).transposed())
            }
            return x.matmul(delta.transposed())
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
        guard case .linear = layer else {
            preconditionFailure("fused row blocks are linear weights; \(weightKey) is \(layer)")
        }
        return try summedContribution(weightKey, rows: rows, planned, input: x, layer: layer)
    }

    /// The x-dependent terms of `planned` (or of their chain) plus their bias deltas.
    private func summedContribution(_ weightKey: String, rows: Range<Int>?, _ planned: [PlannedModule],
                                    input x: Tensor, layer: LayerKind) throws -> Tensor? {
        if planned.contains(where: { $0.module.dependsOnWeight }) {
            let chain = try chainDelta(weightKey, rows: rows, planned)
            return addBias(chain.bias, to: denseTerm(chain.weight, input: x, layer: layer, weightKey: weightKey),
                           layer: layer)
        }
        var sum: Tensor? = nil
        var biasSum: Tensor? = nil
        for p in planned {
            if p.module.changesWeight {
                let term: Tensor
                if let t = try p.module.forwardTerm(input: x, layer: layer, options: p.options) {
                    term = t
                } else {
                    term = denseTerm(try denseDelta(p), input: x, layer: layer, weightKey: weightKey)
                }
                sum = sum.map { $0 + term } ?? term
            }
            if let b = try biasDelta(p) { biasSum = biasSum.map { $0 + b } ?? b }
        }
        guard let biasSum else { return sum }
        // Only bias deltas: the layer's output shape carries them.
        let base: Tensor
        if let sum {
            base = sum
        } else {
            base = Tensor(zeros: outputShape(weightKey, rows: rows, input: x, layer: layer), dtype: .f32)
        }
        return addBias(biasSum, to: base, layer: layer)
    }

    /// `term` + `bias` broadcast per output channel (a new F32 tensor; `term` unchanged).
    private func addBias(_ bias: Tensor?, to term: Tensor, layer: LayerKind) -> Tensor {
        guard let bias else { return term }
        // A fresh copy: `term` may be a module's cached or shared tensor.
        let out = term.to(.f32).copy()
        let b = bias.to(.f32).contiguous()
        let channels = b.count
        // Linear: channels are the last axis; convolution (NCHW): axis 1, `plane` elements each.
        let plane: Int
        switch layer {
        case .conv2d:
            precondition(out.rank == 4 && out.shape[1] == channels, "bias delta [\(channels)] on output \(out.shape)")
            plane = out.shape[2] * out.shape[3]
        default:
            precondition(out.rank >= 1 && out.shape[out.rank - 1] == channels, "bias delta [\(channels)] on output \(out.shape)")
            plane = 1
        }
        out.withMutableFloats { o in
            b.withFloats { bp in
                let groups = o.count / (channels * plane)
                for g in 0..<groups {
                    for c in 0..<channels {
                        let v = bp[c], start = (g * channels + c) * plane
                        for i in start..<(start + plane) { o[i] += v }
                    }
                }
            }
        }
        return out
    }

    /// The output shape of the layer `weightKey` (its `rows` block) for input `x`.
    private func outputShape(_ weightKey: String, rows: Range<Int>?, input x: Tensor, layer: LayerKind) -> [Int] {
        let w = plan.model.tensor(weightKey)!
        let out = rows?.count ?? w.shape[0]
        switch layer {
        case let .conv2d(stride, padding):
            let oh = (x.shape[2] + 2 * padding - w.shape[2]) / stride + 1
            let ow = (x.shape[3] + 2 * padding - w.shape[3]) / stride + 1
            return [x.shape[0], out, oh, ow]
        default:
            return Array(x.shape.dropLast()) + [out]
        }
    }

    /// The bias key whose delta bypass applies for `p` (nil when the plan applies none: the
    /// module changes no bias, or the model's layer has no bias).
    private func appliedBiasKey(_ p: PlannedModule) -> String? {
        guard let b = p.target.biasKey, plan.weightKeyForBias[b] != nil else { return nil }
        return b
    }

    /// One module's bias delta (its rows of a fused bias are its own), or nil.
    private func biasDelta(_ p: PlannedModule) throws -> Tensor? {
        guard p.module.changesBias, appliedBiasKey(p) != nil else { return nil }
        let id = DenseKey(weightKey: p.target.weightKey, rows: p.target.rows, module: ObjectIdentifier(p.module),
                          strength: p.options.strength, dynRank: p.options.dynRank)
        if let b = biasCache[id] { return b }
        let stored = plan.model.tensor(p.target.weightKey)!
        let weight = (p.target.rows.map { stored.sliced(axis: 0, $0) } ?? stored).to(.f32).contiguous()
        let b: Tensor?
        do {
            b = try p.module.biasDelta(weight: weight, options: p.options)
        } catch {
            throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name, reason: "\(error)")
        }
        guard let b else { return nil }
        guard b.count == weight.shape[0] else {
            throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                                          reason: "bias delta of shape \(b.shape) does not fit \(weight.shape[0]) outputs")
        }
        let flat = b.to(.f32).contiguous().reshaped([b.count])
        biasCache[id] = flat
        return flat
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

    /// W_chain − W (and b_chain − b) for the modules `planned` on `weightKey` (F32; only `rows`
    /// of a fused weight): what merged mode adds, with each weight-dependent module seeing the
    /// weight as the modules before it left it. The bias part is nil when no bias changes.
    private func chainDelta(_ weightKey: String, rows: Range<Int>?, _ planned: [PlannedModule]) throws -> (weight: Tensor, bias: Tensor?) {
        let id = DenseKey(weightKey: weightKey, rows: rows, module: nil, strength: 0, dynRank: nil)
        if let d = denseCache[id] { return (d, biasCache[id]) }
        let stored = plan.model.tensor(weightKey)!
        let biasKey = planned.lazy.compactMap { self.appliedBiasKey($0) }.first
        let storedBias = biasKey.flatMap { plan.model.tensor($0) }
        let chain = try plan.applyChain(planned, to: stored, bias: storedBias)
        var delta = chain.weight - stored.to(.f32)
        if let rows { delta = delta.sliced(axis: 0, rows).contiguous() }
        denseCache[id] = delta
        var biasDelta: Tensor? = nil
        if let storedBias, let changed = chain.bias, planned.contains(where: { $0.module.changesBias }) {
            var d = (changed - storedBias.to(.f32)).reshaped([storedBias.count])
            if let rows { d = d.sliced(axis: 0, rows).contiguous() }
            biasDelta = d
            biasCache[id] = d
        }
        return (delta, biasDelta)
    }
}
