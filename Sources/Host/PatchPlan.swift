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

    /// "k of n modules applied".
    public var summary: String { "\(applied) of \(total) modules applied" }
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
                let planned = PlannedModule(module: module, adapterPath: app.adapter.path, target: target,
                                            options: DeltaOptions(strength: app.strength(for: target.part),
                                                                  dynRank: app.dynRank))
                byKey[target.weightKey, default: []].append(planned)
                if module.changesBias, let b = target.biasKey { biasMap[b] = target.weightKey }
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
            return try applyChain(planned, to: original, bias: nil).weight.to(original.dtype)
        }
        if let weightKey = weightKeyForBias[key], let planned = modulesByWeightKey[weightKey] {
            let original = model.tensor(key)!
            let result = try applyChain(planned, to: model.tensor(weightKey)!, bias: original)
            return result.bias!.to(original.dtype)
        }
        return nil
    }

    /// Runs `planned` in order on an F32 copy of `weight` (and `bias`).
    func applyChain(_ planned: [PlannedModule], to weight: Tensor, bias: Tensor?) throws -> (weight: Tensor, bias: Tensor?) {
        // `.to(.f32)` returns the same storage when the weight is already F32; copy so the
        // model's tensor (possibly a read-only mapping) is never written.
        let w = weight.to(.f32).copy()
        let b = bias.map { $0.to(.f32).copy() }
        for p in planned {
            let rows = p.target.rows
            let current = rows.map { w.sliced(axis: 0, $0).contiguous() } ?? w
            let delta: ModuleDelta
            do {
                delta = try p.module.delta(weight: current, options: p.options)
            } catch {
                throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name, reason: "\(error)")
            }
            if let dw = delta.weight {
                guard let fitted = DeltaFitting.fit(dw, to: current.shape) else {
                    throw PatchError.moduleFailed(adapter: p.adapterPath, module: p.module.name,
                        reason: "delta of shape \(dw.shape) does not fit \(p.target.weightKey) \(current.shape)")
                }
                DeltaFitting.accumulate(fitted, into: w, rowOffset: rows?.lowerBound ?? 0)
            }
            if let db = delta.bias, let b {
                // A fused target's module owns its rows of the bias too (OpenCLIP's in_proj_bias).
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

    /// A [o, 4, kh, kw] delta on an inpainting UNet's [o, 9, kh, kw] weight.
    private static func isInpaintingPad(_ deltaShape: [Int], to shape: [Int]) -> Bool {
        shape.count == 4 && deltaShape.count == 4 && shape[1] == 9 && deltaShape[1] == 4
            && deltaShape[0] == shape[0] && deltaShape[2] == shape[2] && deltaShape[3] == shape[3]
    }

    /// w[rowOffset…] += delta (`w` owned, contiguous F32). An F64 delta is added in F64 and
    /// rounded once: a difference stored exactly in F64 (DreamBooth's B − A) then gives B back
    /// bit for bit, which an F32 sum cannot when B − A has bits below A's grid.
    static func accumulate(_ delta: Tensor, into w: Tensor, rowOffset: Int) {
        let rowSize = w.rank == 0 ? 1 : w.count / max(w.shape[0], 1)
        let start = rowOffset * rowSize
        w.withMutableFloats { wp in
            let base = wp.baseAddress! + start
            if delta.dtype == .f64 {
                let d = delta.contiguous()
                d.withDoubles { dp in
                    precondition(start + dp.count <= wp.count, "delta exceeds target")
                    Parallel.forChunks(dp.count) { r in
                        for i in r { base[i] = Float(Double(base[i]) + dp[i]) }
                    }
                }
                return
            }
            let d = delta.to(.f32)
            d.withFloats { dp in
                precondition(start + dp.count <= wp.count, "delta exceeds target")
                Parallel.forChunks(dp.count) { r in
                    for i in r { base[i] += dp[i] }
                }
            }
        }
    }
}
