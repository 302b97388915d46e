import Tensor

/// What a module adds to one target: W' = W + weight, b' = b + bias (F32, target shapes).
public struct ModuleDelta {
    public var weight: Tensor?
    public var bias: Tensor?
    public init(weight: Tensor?, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }
}

/// The kind of layer a target weight belongs to, for bypass (forward-time) application.
public enum LayerKind: Sendable, Equatable {
    case linear
    /// A 2-D convolution with its stride and padding (kernel size comes from the weight).
    case conv2d(stride: Int, padding: Int)
    /// A norm layer (GroupNorm/LayerNorm): weight and bias are per-channel vectors.
    case norm
    /// An embedding table (token embeddings).
    case embedding
}

/// One module of an adapter file: the unit that changes one target tensor.
///
/// Each module type does one job: compute its delta from its tensors. Everything shared —
/// the user's strength, separate text-encoder and UNet weights, target lookup, shape
/// fitting, dtype handling, backup and restore — lives once in the host (`PatchEngine`).
public protocol AdapterModule: AnyObject {
    /// The module's name as written in its file (e.g. `lora_unet_down_blocks_0_…_to_q`,
    /// `unet.down_blocks.0.…to_q`); the host's key maps resolve it to a model tensor.
    var name: String { get }
    /// Module type for reports: "lora", "locon", "loha", "lokr", "dora", "full", "ia3", ….
    var moduleType: String { get }
    /// Rank for low-rank types (nil otherwise).
    var rank: Int? { get }
    /// Alpha as stored (nil when the file has none).
    var alpha: Float? { get }
    /// True when the delta depends on the current weight (DoRA, IA3, OFT, …). Such modules
    /// see the weight as already changed by the adapters before them in the stack.
    var dependsOnWeight: Bool { get }
    /// Whether the module also changes the target's bias.
    var changesBias: Bool { get }
    /// Whether the module changes the target's weight (false for a bias-only module, e.g. a
    /// LyCORIS `diff_b` without `diff`).
    var changesWeight: Bool { get }
    /// The shape of the weight delta when the module can tell it without computing it (from
    /// its factors' shapes); nil when only computing the delta would tell. `PatchPlan` uses
    /// it to report a module whose delta cannot fit its target (skipped, with the reason)
    /// instead of failing the whole patch when the delta is computed.
    var deltaShape: [Int]? { get }
    /// The delta at `strength` for the current target weight `weight` (F32, target shape;
    /// for fused targets such as OpenCLIP's in_proj, only this module's rows).
    func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta
    /// Bypass mode: this module's additive contribution to the layer output for input `x`,
    /// or nil when the type has no cheaper form than its dense delta (the host then uses
    /// the dense delta: x·ΔWᵀ for linear layers, conv2d(x, ΔW) for convolutions).
    func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor?
    /// Bypass mode, in place: adds `forwardTerm(input:layer:options:)` to `out` (the layer's
    /// output: contiguous F32, `[..., out]` for linear layers, NCHW for convolutions) and
    /// returns true, or returns false (and leaves `out` alone) when there is no forward form.
    /// Modules override it to accumulate straight into `out` (LoRA: one GEMM with beta = 1)
    /// instead of materialising the term and adding it in a second pass.
    func addForwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions, into out: Tensor) throws -> Bool
    /// The bias delta alone at `options` (F32, `[out]`), nil when the module changes no bias.
    /// Bypass adds it to the layer output as a constant per output channel. `weight` is the
    /// target's current weight, as for `delta(weight:options:)`.
    func biasDelta(weight: Tensor, options: DeltaOptions) throws -> Tensor?
}

/// How a module is applied: the user's strength for its part of the model and A1111's
/// `dyn` rank truncation (use only the first `dynRank` ranks; the scale stays alpha/rank).
public struct DeltaOptions: Sendable, Equatable {
    public var strength: Float
    public var dynRank: Int?
    public init(strength: Float, dynRank: Int? = nil) {
        self.strength = strength
        self.dynRank = dynRank
    }
}

extension AdapterModule {
    public var rank: Int? { nil }
    public var alpha: Float? { nil }
    public var dependsOnWeight: Bool { false }
    public var changesBias: Bool { false }
    public var changesWeight: Bool { true }
    public var deltaShape: [Int]? { nil }
    public func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? { nil }
    public func addForwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions, into out: Tensor) throws -> Bool {
        guard let term = try forwardTerm(input: x, layer: layer, options: options) else { return false }
        out.addScaled(term.reshaped(out.shape), alpha: 1)
        return true
    }
    public func biasDelta(weight: Tensor, options: DeltaOptions) throws -> Tensor? {
        changesBias ? try delta(weight: weight, options: options).bias : nil
    }
}

/// A module whose delta does not depend on the weight: ΔW(strength) = strength · ΔW(1).
/// Conformers give the unit delta (with their own alpha/rank scale); the host applies the
/// strength here, once.
public protocol LinearAdapterModule: AdapterModule {
    /// The delta at strength 1, in the shape the module's tensors define (the host fits it
    /// to the target: linear ↔ 1×1 conv, inpainting's extra input channels).
    func unitDelta(dynRank: Int?) throws -> ModuleDelta
    /// `unitDelta` as a weight delta before its last scale, and that scale: unit weight delta =
    /// `weightScale` · `delta.weight` (`delta.bias` is the unit bias delta, already scaled).
    /// The host folds the scale and the strength into the pass that adds the delta to the
    /// weight instead of materialising each product (`PatchPlan.applyChain`). Default: the
    /// unit delta with scale 1.
    func factoredUnitDelta(dynRank: Int?) throws -> (delta: ModuleDelta, weightScale: Double)
}

extension LinearAdapterModule {
    public func factoredUnitDelta(dynRank: Int?) throws -> (delta: ModuleDelta, weightScale: Double) {
        (try unitDelta(dynRank: dynRank), 1)
    }

    public var dependsOnWeight: Bool { false }
    public func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let unit = try unitDelta(dynRank: options.dynRank)
        return ModuleDelta(weight: unit.weight.map { $0.scaled(by: Double(options.strength)) },
                           bias: unit.bias.map { $0.scaled(by: Double(options.strength)) })
    }
}
