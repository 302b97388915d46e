import Host
import Tensor

/// Base of the module types whose delta does not depend on the weight (LoRA, LoHa, LoKr,
/// full, norm): each subclass computes the product of its factors; the scale
/// (alpha/rank, the file's `scale`, rsLoRA) is applied here, once, and the user's strength by
/// the host (`LinearAdapterModule`). DoRA is a wrapper around any of these (`DoRAModule`).
///
/// Every `AdapterModule` requirement is declared here (not only in protocol extensions) so
/// that subclasses' overrides are the ones the host calls.
class WeightDeltaModule: LinearAdapterModule {
    let name: String
    let moduleType: String
    let rank: Int?
    let alpha: Float?
    /// The factor every unit delta is multiplied by.
    let scale: Double

    init(name: String, moduleType: String, rank: Int?, alpha: Double?, scale: Double) {
        self.name = name
        self.moduleType = moduleType
        self.rank = rank
        self.alpha = alpha.map { Float($0) }
        self.scale = scale
    }

    var dependsOnWeight: Bool { false }
    /// True when the module has a bias delta (`rawBias()` non-nil).
    var changesBias: Bool { false }
    var changesWeight: Bool { true }
    /// Unknown unless a subclass tells it from its factors.
    var deltaShape: [Int]? { nil }
    /// Whether the bias delta is multiplied by the module's scale too. False by default:
    /// A1111's `finalize_updown` scales only the weight (LyCORIS `diff_b`/`b_norm` have scale 1
    /// anyway); PEFT's `lora_B.bias` is scaled (its merge adds scaling · lora_B.bias).
    var biasFollowsScale: Bool { false }

    /// The product of the factors before any scale, in the shape the factors define (the
    /// weight part; the bias comes from `rawBias()`).
    func rawDelta(dynRank: Int?) throws -> ModuleDelta {
        fatalError("\(type(of: self)) must override rawDelta")
    }

    /// The bias delta before any scale (F32 `[out]`), nil when the module has none.
    func rawBias() -> Tensor? { nil }

    func unitDelta(dynRank: Int?) throws -> ModuleDelta {
        let raw = try rawDelta(dynRank: dynRank)
        guard scale != 1 else { return ModuleDelta(weight: raw.weight, bias: rawBias()) }
        return ModuleDelta(weight: raw.weight.map { $0.scaled(by: scale) }, bias: unitBias())
    }

    /// The raw product and the scale, unmultiplied: the host multiplies while adding
    /// (`unitDelta`'s weight is exactly `raw.scaled(by: scale)`).
    func factoredUnitDelta(dynRank: Int?) throws -> (delta: ModuleDelta, weightScale: Double) {
        let raw = try rawDelta(dynRank: dynRank)
        return (ModuleDelta(weight: raw.weight, bias: unitBias()), scale)
    }

    /// The bias delta at strength 1 (scaled when `biasFollowsScale`).
    func unitBias() -> Tensor? {
        guard let b = rawBias() else { return nil }
        return biasFollowsScale && scale != 1 ? b.scaled(by: scale) : b
    }

    /// Only the bias: no weight delta is computed.
    func biasDelta(weight: Tensor, options: DeltaOptions) throws -> Tensor? {
        unitBias().map { $0.scaled(by: Double(options.strength)) }
    }

    // `delta(weight:options:)` is the host's (`LinearAdapterModule`): strength · unit delta.

    /// No cheaper form by default: the host uses the dense delta.
    func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? { nil }

    /// `forwardTerm` added to `out` (subclasses with an in-place form override it).
    func addForwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions, into out: Tensor) throws -> Bool {
        guard let term = try forwardTerm(input: x, layer: layer, options: options) else { return false }
        out.addScaled(term.reshaped(out.shape), alpha: 1)
        return true
    }
}

/// Base of the module types whose delta depends on the current weight (DoRA, IA3, OFT,
/// GLoRA). They receive the strength themselves and follow A1111's semantics for it.
class WeightDependentModule: AdapterModule {
    let name: String
    let moduleType: String
    let rank: Int?
    let alpha: Float?

    init(name: String, moduleType: String, rank: Int?, alpha: Double?) {
        self.name = name
        self.moduleType = moduleType
        self.rank = rank
        self.alpha = alpha.map { Float($0) }
    }

    var dependsOnWeight: Bool { true }
    var changesBias: Bool { false }
    var changesWeight: Bool { true }
    var deltaShape: [Int]? { nil }

    func biasDelta(weight: Tensor, options: DeltaOptions) throws -> Tensor? {
        changesBias ? try delta(weight: weight, options: options).bias : nil
    }

    func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        fatalError("\(type(of: self)) must override delta(weight:options:)")
    }

    func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? { nil }
}

/// A module's delta did not fit the weight it was given (thrown from `delta`; the host
/// reports it as `PatchError.moduleFailed`).
struct DeltaShapeError: Error, CustomStringConvertible {
    let module: String
    let delta: [Int]
    let weight: [Int]
    let context: String
    var description: String { "\(context): delta \(delta) does not fit the weight \(weight)" }
}

/// Reshapes a delta to the weight's shape when the element counts agree (linear ↔ 1×1 conv,
/// LyCORIS's flattened conv factors), as A1111's `finalize_updown` does.
func fitted(_ delta: Tensor, to shape: [Int], module: String, context: String) throws -> Tensor {
    if delta.shape == shape { return delta }
    guard delta.count == shape.reduce(1, *) else {
        throw DeltaShapeError(module: module, delta: delta.shape, weight: shape, context: context)
    }
    return delta.reshaped(shape)
}
