import Tensor

/// One adapter in a stack, with A1111's weights: `<lora:name:te:unet:dyn>`.
public struct AdapterApplication {
    public let adapter: Adapter
    /// Strength on text-encoder layers.
    public let textEncoderWeight: Float
    /// Strength on UNet layers (A1111: defaults to the text-encoder weight).
    public let unetWeight: Float
    /// Use only the first `dynRank` ranks of low-rank modules (A1111's `dyn`).
    public let dynRank: Int?

    public init(adapter: Adapter, weight: Float = 1, unetWeight: Float? = nil, dynRank: Int? = nil) {
        self.adapter = adapter
        self.textEncoderWeight = weight
        self.unetWeight = unetWeight ?? weight
        self.dynRank = dynRank
    }

    /// The strength for a target in `part`.
    public func strength(for part: ModelPart) -> Float {
        part.isTextEncoder ? textEncoderWeight : unetWeight
    }
}

/// Errors that stop a patch before anything changes.
public enum PatchError: Error, CustomStringConvertible {
    /// The adapter was made for another base-model family.
    case baseModelMismatch(adapter: String, adapterFamily: ModelFamily, model: String, modelFamily: ModelFamily)
    /// A module could not compute its delta (bad tensors in the file).
    case moduleFailed(adapter: String, module: String, reason: String)
    /// The adapter is a difference from one exact base file (`Adapter.requiredBaseHash`) and
    /// the model is another file (or no single file: `modelHash` nil).
    case baseFileMismatch(adapter: String, requiredHash: String, model: String, modelHash: String?)

    public var description: String {
        switch self {
        case let .baseModelMismatch(adapter, af, model, mf):
            return "\(adapter): made for \(af.rawValue), but the model \(model) is \(mf.rawValue); refusing to apply it"
        case let .moduleFailed(adapter, module, reason):
            return "\(adapter): module '\(module)': \(reason)"
        case let .baseFileMismatch(adapter, required, model, actual):
            let what = actual.map { "has SHA-256 \($0)" } ?? "is not a single file, so its SHA-256 cannot be checked"
            return "\(adapter): a difference from the base file with SHA-256 \(required), but the model \(model) \(what); "
                + "refusing to apply it (force to apply it anyway)"
        }
    }
}

/// What a plan applies and what it leaves out, with reasons.
public struct PatchReport {
    /// A module that is not applied, and why.
    public struct Skipped: CustomStringConvertible {
        public let adapter: String
        public let module: String
        public let reason: String
        public var description: String { "\(adapter): \(module): \(reason)" }
    }
    /// Modules that change the model.
    public internal(set) var applied = 0
    /// Modules in all adapters of the stack.
    public internal(set) var total = 0
    /// Modules left out (no such layer, or a shape that does not fit).
    public internal(set) var skipped: [Skipped] = []
    /// Keys no method took, per adapter file.
    public internal(set) var unclaimedKeys: [(adapter: String, keys: [String])] = []
    /// Modules applied without part of what they change (counted in `applied`), and why: a
    /// bias delta on a layer that has no bias in this model.
    public internal(set) var partial: [Skipped] = []

    /// "k of n modules applied", then "m in part (…reasons)" when some modules lost a part.
    public var summary: String {
        let base = "\(applied) of \(total) modules applied"
        guard !partial.isEmpty else { return base }
        return base + ", \(partial.count) in part (" + partial.map(\.description).joined(separator: "; ") + ")"
    }
}

/// A module scheduled on one target, with its options.
public struct PlannedModule {
    public let module: any AdapterModule
    public let adapterPath: String
    public let target: Target
    public let options: DeltaOptions
}

/// Which modules change which model tensors, in stack order; built once, then used for an
/// in-place merge (`PatchEngine`), a streamed merge into a new file, or bypass at run time.
///
/// Order semantics: modules apply in stack order, per target. A weight-dependent module
/// (DoRA, IA3, OFT, GLoRA's W-term) sees W as already changed by the adapters before it
/// (W₁ = W₀ + Δ₁(W₀), W₂ = W₁ + Δ₂(W₁), …): A1111 and ComfyUI both do this. So order
/// matters for such modules, and one plan of a stack equals applying its adapters one after
/// another — bit for bit on an F32 model; on F16/BF16 one plan rounds to the weight's dtype
/// once, at the end, where one-by-one application (and A1111) rounds after each adapter.
/// Weight-independent deltas (LoRA, LoHa, LoKr, full) do not depend on W, so such stacks
/// commute — up to F32 rounding: deltas are added one by one into an F32 copy of W and F32
/// addition is not associative, so (W + Δa) + Δb and (W + Δb) + Δa may differ in the last
/// bit (before the result is stored in the weight's dtype).
public struct PatchPlan {
    public let model: ModelWeights
    /// Planned modules by the weight key they change.
    public let modulesByWeightKey: [String: [PlannedModule]]
    /// Weight keys touched, in model order.
    public let weightKeys: [String]
    /// Bias key → its weight key, for modules that change biases.
    public let weightKeyForBias: [String: String]
    public let report: PatchReport

    /// Plans `stack` on `model`. Throws on a base-model mismatch before any work; modules
    /// without a target, or whose `deltaShape` cannot fit the target, are reported (skipped,
    /// with the reason), not dropped silently.
    /// An adapter with a `requiredBaseHash` needs the model's file to have that SHA-256
    /// (computed only then); `force` skips that check (never the family check).
    public init(model: ModelWeights, stack: [AdapterApplication], force: Bool = false) throws {
        for app in stack {
            if let family = app.adapter.baseModel, family != model.family {
                throw PatchError.baseModelMismatch(adapter: app.adapter.path, adapterFamily: family,
                                                   model: model.path, modelFamily: model.family)
            }
            if let required = app.adapter.requiredBaseHash, !force {
                let actual = try model.fileSHA256()
                guard actual == required else {
                    throw PatchError.baseFileMismatch(adapter: app.adapter.path, requiredHash: required,
                                                      model: model.path, modelHash: actual)
                }
            }
        }
        var report = PatchReport()
        var byKey: [String: [PlannedModule]] = [:]
        var biasMap: [String: String] = [:]
        let index = model.targetIndex
        for app in stack {
            if !app.adapter.unclaimedKeys.isEmpty {
                report.unclaimedKeys.append((app.adapter.path, app.adapter.unclaimedKeys))
            }
            for module in app.adapter.modules {
                report.total += 1
                guard let target = index.resolve(module.name) else {
                    report.skipped.append(.init(adapter: app.adapter.path, module: module.name,
                                                reason: "no layer of this \(model.family.rawValue) model has that name"))
                    continue
                }
                guard let stored = model.tensor(target.weightKey) else {
                    report.skipped.append(.init(adapter: app.adapter.path, module: module.name,
                                                reason: "target tensor \(target.weightKey) is missing"))
                    continue
                }
                // A fused target's module sees only its rows (as in `applyChain`).
                var targetShape = stored.shape
                if let rows = target.rows { targetShape[0] = rows.count }
                if let deltaShape = module.deltaShape, !DeltaFitting.canFit(deltaShape, to: targetShape) {
                    report.skipped.append(.init(adapter: app.adapter.path, module: module.name,
                        reason: "delta of shape \(deltaShape) does not fit \(target.weightKey) \(targetShape)"))
                    continue
                }
                // A weight-dependent module (DoRA) renormalises W + ΔW, which needs ΔW in W's
                // shape: a 4-channel delta on an inpainting conv_in (9 channels) is zero-padded
                // only after the module's delta (A1111 fails on it the same way and skips the
                // module); say so here instead of failing the whole patch at compute time.
                if module.dependsOnWeight, let deltaShape = module.deltaShape,
                   DeltaFitting.needsInpaintingPad(deltaShape, to: targetShape) {
                    report.skipped.append(.init(adapter: app.adapter.path, module: module.name,
                        reason: "a \(module.moduleType) module renormalises the whole weight, and its delta \(deltaShape) "
                            + "covers only 4 of the 9 input channels of the inpainting layer \(target.weightKey) \(targetShape)"))
                    continue
                }
                var biasDropped = false
                if module.changesBias {
                    if let b = target.biasKey, model.tensor(b) != nil {
                        biasMap[b] = target.weightKey
                    } else if !module.changesWeight {
                        report.skipped.append(.init(adapter: app.adapter.path, module: module.name,
                            reason: "changes only the bias, and the layer of \(target.weightKey) has no bias in this model"))
                        continue
                    } else {
                        biasDropped = true
                    }
                }
                let planned = PlannedModule(module: module, adapterPath: app.adapter.path, target: target,
                                            options: DeltaOptions(strength: app.strength(for: target.part),
                                                                  dynRank: app.dynRank))
                byKey[target.weightKey, default: []].append(planned)
                if biasDropped {
                    report.partial.append(.init(adapter: app.adapter.path, module: module.name,
                        reason: "bias delta dropped: the layer of \(target.weightKey) has no bias in this model"))
                }
                report.applied += 1
            }
        }
        self.model = model
        self.modulesByWeightKey = byKey
        self.weightKeys = model.keys.filter { byKey[$0] != nil }
        self.weightKeyForBias = biasMap
        self.report = report
    }

    /// True when the plan changes the tensor under `key` (a weight or a bias).
    public func touches(_ key: String) -> Bool {
        modulesByWeightKey[key] != nil || weightKeyForBias[key] != nil
    }

    /// Every key the plan changes, in model order.
    public var touchedKeys: [String] { model.keys.filter(touches) }

    /// The patched tensor for `key`, computed in F32 and stored in the original dtype;
    /// nil when the plan does not touch `key`. A delta that does not fit throws
    /// `PatchError.moduleFailed`; modules that tell their `deltaShape` were already checked
    /// (and reported as skipped) when planning.
    public func patchedTensor(for key: String) throws -> Tensor? {
        if let planned = modulesByWeightKey[key] {
            let original = model.tensor(key)!
            if original.dtype != .f32, original.dtype.isFloatingPoint, !original.dtype.isReadOnly,
               planned.allSatisfy({ $0.module is any LinearAdapterModule && $0.target.rows == nil }) {
                return try streamedChain(planned, on: original)
            }
            return try applyChain(planned, to: original, bias: nil).weight.to(original.dtype)
        }
        if let weightKey = weightKeyForBias[key], let planned = modulesByWeightKey[weightKey] {
            let original = model.tensor(key)!
            if planned.allSatisfy({ $0.module is any LinearAdapterModule }) {
                // Weight-independent: only the bias deltas are needed, not the weight's chain.
                return try biasChain(planned, weight: model.tensor(weightKey)!, bias: original).to(original.dtype)
            }
            let result = try applyChain(planned, to: model.tensor(weightKey)!, bias: original)
            return result.bias!.to(original.dtype)
        }
        return nil
    }

    /// `applyChain(planned, to: original).weight.to(original.dtype)` for weight-independent
    /// modules on a narrow (F16/BF16/…) weight, in one pass over the weight: each module's
    /// delta is materialised once (unscaled, as `applyChain` does), then every cache-sized
    /// block of the weight is widened to F32, gets the deltas added with their scale and
    /// strength folded in (`DeltaFitting.accumulate`, in stack order) and is narrowed into
    /// the result. Per element these are the same operations in the same order as
    /// `applyChain`, so the result is bit-identical; the weight-sized F32 buffer and its two
    /// extra passes are gone.
    func streamedChain(_ planned: [PlannedModule], on original: Tensor) throws -> Tensor {
        var terms: [(delta: Tensor, factors: [Double])] = []
        for p in planned {
            // Checked by the caller: every module is weight-independent.
            let linear = p.module as! any LinearAdapterModule
            let unit: ModuleDelta, weightScale: Double
            do {
                (unit, weightScale) = try linear.factoredUnitDelta(dynRank: p.options.dynRank)
            } catch {
                throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name, reason: "\(error)")
            }
            guard let dw = unit.weight else { continue }
            guard let fitted = DeltaFitting.fit(dw, to: original.shape) else {
                throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                    reason: "delta of shape \(dw.shape) does not fit \(p.target.weightKey) \(original.shape)")
            }
            // Flat and contiguous in its compute dtype (F64 stays F64, see `accumulate`).
            let flat = fitted.dtype == .f64 ? (fitted.isContiguous ? fitted : fitted.contiguous()) : fitted.to(.f32)
            terms.append((flat.reshaped([original.count]), [weightScale, Double(p.options.strength)]))
        }
        let count = original.count, elementSize = original.dtype.byteSize
        let source = (original.isContiguous ? original : original.contiguous()).reshaped([count])
        let out = Tensor(uninitialized: original.shape, dtype: original.dtype)
        let destination = out.baseAddress
        // 16 Ki elements: the F32 block (64 KiB) stays in L2 between widening, adding and narrowing.
        let block = 16_384
        Parallel.forChunks(count) { range in
            var lo = range.lowerBound
            while lo < range.upperBound {
                let hi = min(lo + block, range.upperBound)
                let w = source.sliced(axis: 0, lo..<hi).to(.f32)   // a new owned F32 block
                for term in terms {
                    DeltaFitting.accumulate(term.delta.sliced(axis: 0, lo..<hi), into: w, rowOffset: 0, factors: term.factors)
                }
                let narrowed = w.to(original.dtype)
                // `out` is this function's own new buffer; blocks do not overlap.
                (destination + lo * elementSize).copyMemory(from: narrowed.baseAddress, byteCount: (hi - lo) * elementSize)
                lo = hi
            }
        }
        return out
    }

    /// The bias part of `applyChain` for weight-independent modules (which never read the
    /// weight): the same deltas added in the same order, so the same bits.
    func biasChain(_ planned: [PlannedModule], weight: Tensor, bias: Tensor) throws -> Tensor {
        let b = bias.dtype == .f32 ? bias.copy() : bias.to(.f32)
        for p in planned where p.module.changesBias {
            let rows = p.target.rows
            let db: Tensor?
            do {
                // The weight view is not read by a weight-independent module (no widening needed).
                db = try p.module.biasDelta(weight: rows.map { weight.sliced(axis: 0, $0) } ?? weight, options: p.options)
            } catch {
                throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name, reason: "\(error)")
            }
            guard let db else { continue }
            try Self.addBias(db, into: b, rows: rows, p)
        }
        return b
    }

    /// b[rows] += db, checking that it fits (a fused target's module owns its rows of the bias).
    static func addBias(_ db: Tensor, into b: Tensor, rows: Range<Int>?, _ p: PlannedModule) throws {
        guard db.count == rows?.count ?? b.count else {
            throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                reason: "bias delta of shape \(db.shape) does not fit \(b.shape)" + (rows.map { " rows \($0)" } ?? ""))
        }
        if let rows {
            DeltaFitting.accumulate(db.reshaped([rows.count]), into: b, rowOffset: rows.lowerBound)
        } else {
            DeltaFitting.accumulate(db.reshaped(b.shape), into: b, rowOffset: 0)
        }
    }

    /// Runs `planned` in order on an F32 copy of `weight` (and `bias`).
    ///
    /// Passes over the weight: one widening into the owned F32 buffer, then per module one
    /// pass that adds its delta with its scale and strength folded in (a weight-independent
    /// module's delta is materialised once, unscaled; multiplications by 1 are skipped). The
    /// products are rounded exactly as `scaled(by:)` would round them, one after the other, so
    /// results are bit-identical to materialising `s·ΔW` and then `strength·(s·ΔW)`.
    func applyChain(_ planned: [PlannedModule], to weight: Tensor, bias: Tensor?) throws -> (weight: Tensor, bias: Tensor?) {
        // `to(.f32)` of another dtype is a new owned buffer; an F32 weight is returned as it is
        // (possibly the model's read-only mapping), so it is copied: the model is never written.
        let w = weight.dtype == .f32 ? weight.copy() : weight.to(.f32)
        let b = bias.map { $0.dtype == .f32 ? $0.copy() : $0.to(.f32) }
        for p in planned {
            let rows = p.target.rows
            var targetShape = w.shape
            if let rows { targetShape[0] = rows.count }
            let delta: ModuleDelta
            var factors: [Double] = []
            do {
                if let linear = p.module as? any LinearAdapterModule {
                    // Weight-independent: the weight is not read, so no slice of it is made.
                    let (unit, weightScale) = try linear.factoredUnitDelta(dynRank: p.options.dynRank)
                    factors = [weightScale, Double(p.options.strength)]
                    delta = ModuleDelta(weight: unit.weight, bias: unit.bias.map { $0.scaled(by: Double(p.options.strength)) })
                } else {
                    let current = rows.map { w.sliced(axis: 0, $0).contiguous() } ?? w
                    delta = try p.module.delta(weight: current, options: p.options)
                }
            } catch {
                throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name, reason: "\(error)")
            }
            if let dw = delta.weight {
                guard let fitted = DeltaFitting.fit(dw, to: targetShape) else {
                    throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                        reason: "delta of shape \(dw.shape) does not fit \(p.target.weightKey) \(targetShape)")
                }
                DeltaFitting.accumulate(fitted, into: w, rowOffset: rows?.lowerBound ?? 0, factors: factors)
            }
            if let db = delta.bias, let b {
                // A fused target's module owns its rows of the bias too (OpenCLIP's in_proj_bias).
                try Self.addBias(db, into: b, rows: rows, p)
            }
        }
        return (w, b)
    }
}

/// Fits a module's delta to its target's shape, the ways A1111 does.
enum DeltaFitting {
    /// `delta` reshaped or padded to `shape`, or nil when it cannot fit.
    /// - same element count: reshape (linear ↔ 1×1 conv; SD2's proj_in/proj_out);
    /// - inpainting UNets: a [o, 4, kh, kw] delta on a [o, 9, kh, kw] weight is zero-padded
    ///   on the input channels (channels 4-8 unchanged), as A1111 does.
    static func fit(_ delta: Tensor, to shape: [Int]) -> Tensor? {
        if delta.shape == shape { return delta }
        if delta.count == shape.reduce(1, *) { return delta.reshaped(shape) }
        if isInpaintingPad(delta.shape, to: shape) {
            let padded = Tensor(zeros: shape, dtype: .f32)
            let src = delta.to(.f32)
            let plane = shape[2] * shape[3]
            padded.withMutableFloats { d in
                src.withFloats { s in
                    for o in 0..<shape[0] {
                        for c in 0..<4 {
                            for i in 0..<plane { d[(o * 9 + c) * plane + i] = s[(o * 4 + c) * plane + i] }
                        }
                    }
                }
            }
            return padded
        }
        return nil
    }

    /// True when `fit` fits a delta of `deltaShape` to `shape` (checked at plan time).
    static func canFit(_ deltaShape: [Int], to shape: [Int]) -> Bool {
        deltaShape == shape || deltaShape.reduce(1, *) == shape.reduce(1, *) || isInpaintingPad(deltaShape, to: shape)
    }

    /// True when a delta of `deltaShape` reaches `shape` only by the inpainting zero-pad.
    static func needsInpaintingPad(_ deltaShape: [Int], to shape: [Int]) -> Bool {
        deltaShape != shape && deltaShape.reduce(1, *) != shape.reduce(1, *) && isInpaintingPad(deltaShape, to: shape)
    }

    /// A [o, 4, kh, kw] delta on an inpainting UNet's [o, 9, kh, kw] weight.
    private static func isInpaintingPad(_ deltaShape: [Int], to shape: [Int]) -> Bool {
        shape.count == 4 && deltaShape.count == 4 && shape[1] == 9 && deltaShape[1] == 4
            && deltaShape[0] == shape[0] && deltaShape[2] == shape[2] && deltaShape[3] == shape[3]
    }

    /// w[rowOffset…] += f₂·(f₁·delta) for `factors` [f₁, f₂, …] (`w` owned, contiguous F32),
    /// in one pass. Each product is rounded as `Tensor.scaled(by:)` rounds it (F32: times
    /// `Float(f)`; F64: times `f`), in order, and factors equal to 1 are skipped (a product by 1
    /// is exact), so the sum is bit-identical to scaling the delta tensor factor by factor
    /// first. An F64 delta is added in F64 and rounded once: a difference stored exactly in F64
    /// (DreamBooth's B − A) then gives B back bit for bit, which an F32 sum cannot when B − A
    /// has bits below A's grid.
    static func accumulate(_ delta: Tensor, into w: Tensor, rowOffset: Int, factors: [Double] = []) {
        let rowSize = w.rank == 0 ? 1 : w.count / max(w.shape[0], 1)
        let start = rowOffset * rowSize
        let used = factors.filter { $0 != 1 }
        w.withMutableFloats { wp in
            let base = wp.baseAddress! + start
            if delta.dtype == .f64 {
                let d = delta.isContiguous ? delta : delta.contiguous()
                d.withDoubles { dp in
                    precondition(start + dp.count <= wp.count, "delta exceeds target")
                    Parallel.forChunks(dp.count) { r in
                        switch used.count {
                        case 0: for i in r { base[i] = Float(Double(base[i]) + dp[i]) }
                        case 1:
                            let f = used[0]
                            for i in r { base[i] = Float(Double(base[i]) + dp[i] * f) }
                        default:
                            for i in r {
                                var v = dp[i]
                                for f in used { v = v * f }
                                base[i] = Float(Double(base[i]) + v)
                            }
                        }
                    }
                }
                return
            }
            let d = delta.to(.f32)
            let f = used.map { Float($0) }
            d.withFloats { dp in
                precondition(start + dp.count <= wp.count, "delta exceeds target")
                Parallel.forChunks(dp.count) { r in
                    switch f.count {
                    case 0: for i in r { base[i] += dp[i] }
                    case 1:
                        let f0 = f[0]
                        for i in r { base[i] += dp[i] * f0 }
                    case 2:
                        let f0 = f[0], f1 = f[1]
                        // Two roundings, as (delta·f0)·f1 materialised: not dp[i]·(f0·f1).
                        for i in r { base[i] += (dp[i] * f0) * f1 }
                    default:
                        for i in r {
                            var v = dp[i]
                            for x in f { v = v * x }
                            base[i] += v
                        }
                    }
                }
            }
        }
    }
}
