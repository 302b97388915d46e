import Host
import Tensor

/// DoRA (weight-decomposed low-rank adaptation) around any weight-delta module that has a
/// magnitude (`dora_scale` from kohya/LyCORIS, `lora_magnitude_vector` from PEFT):
///
///     W₁ = W + s·ΔW              (the inner module's unit delta: its alpha/rank scale)
///     D  = W₁ · m / ‖W₁‖          (norm per output row, or per input column)
///     W' = W + strength · (D − W)
///
/// This is A1111's order (v1.10 `finalize_updown`): scale, renormalise, then the multiplier
/// on the resulting delta — so strength 0 is the base model and strength 1 is DoRA's W'.
/// Peers differ away from strength 1: ComfyUI multiplies the same way, but on the output
/// axis divides by ‖W‖ of the *original* weight (not ‖W + sΔW‖) and adds eps to the norm;
/// LyCORIS's merge keeps the whole s·ΔW and interpolates the norm ratio,
/// W' = W₁·(strength·(m/‖W₁‖ − 1) + 1) (strength 0 still adds s·ΔW); PEFT/diffusers put
/// the strength into s before renormalising. All agree at strength 1 (up to eps).
///
/// Axis: PEFT's magnitude is per output always (1-D `[out]` for linear, `[1, out, 1, 1]` for
/// conv); `dora_scale` is per output when shaped `[out, 1, …]` (PEFT-style, LyCORIS ≥ 2.2
/// default `wd_on_out`) and per input when shaped `[1, in, …]` (the DoRA paper's and older
/// LyCORIS files' convention, the only one A1111 implements).
final class DoRAModule: WeightDependentModule {
    enum Axis: String { case output, input }

    let inner: WeightDeltaModule
    /// The magnitudes, flattened.
    let magnitude: Tensor
    /// The axis the shape tells; nil when only the target's shape can (1-D, or one channel).
    let declaredAxis: Axis?

    init(inner: WeightDeltaModule, reader: ModuleReader) throws {
        self.inner = inner
        if let m = try reader.optional(.magnitude) {
            magnitude = m.reshaped([m.count])
            declaredAxis = .output
        } else {
            let m = try reader.required(.doraScale)
            magnitude = m.reshaped([m.count])
            let nonUnit = m.shape.enumerated().filter { $0.element != 1 }.map(\.offset)
            if m.rank >= 2, nonUnit == [0] {
                declaredAxis = .output
            } else if m.rank >= 2, nonUnit == [1] {
                declaredAxis = .input
            } else if m.rank <= 1 || nonUnit.isEmpty {
                declaredAxis = nil
            } else {
                throw reader.failure(.badShape(suffix: "dora_scale", shape: m.shape,
                                               expected: "[out, 1, …] (per output) or [1, in, …] (per input)"))
            }
        }
        let type = inner.moduleType == "lora" || inner.moduleType == "locon" ? "dora" : inner.moduleType + "+dora"
        super.init(name: inner.name, moduleType: type, rank: inner.rank, alpha: inner.alpha.map { Double($0) })
    }

    override var changesBias: Bool { inner.changesBias }
    /// The inner module's delta shape (W + s·ΔW must have the weight's shape).
    override var deltaShape: [Int]? { inner.deltaShape }

    /// The axis for a weight of `shape`.
    func axis(for shape: [Int]) throws -> Axis {
        let out = shape[0], input = shape.count > 1 ? shape[1] : 1
        let n = magnitude.count
        if let declaredAxis {
            let expected = declaredAxis == .output ? out : input
            guard n == expected else {
                throw DeltaShapeError(module: name, delta: [n], weight: shape,
                                      context: "DoRA magnitude (per \(declaredAxis.rawValue)) has \(n) entries")
            }
            return declaredAxis
        }
        if n == out { return .output }
        if n == input { return .input }
        throw DeltaShapeError(module: name, delta: [n], weight: shape, context: "DoRA magnitude has \(n) entries")
    }

    override func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let unit = try inner.unitDelta(dynRank: options.dynRank)
        let strength = Double(options.strength)
        guard let dw = unit.weight else { return ModuleDelta(weight: nil, bias: unit.bias?.scaled(by: strength)) }
        let w = weight.to(.f32)
        guard w.rank >= 2 else {
            throw DeltaShapeError(module: name, delta: dw.shape, weight: w.shape, context: "DoRA needs a matrix or conv weight")
        }
        let merged = w + (try fitted(dw, to: w.shape, module: name, context: "DoRA"))
        let axis = try axis(for: w.shape)
        var factorShape = [Int](repeating: 1, count: w.rank)
        let norms: Tensor
        switch axis {
        case .output:
            norms = merged.reshaped([w.shape[0], -1]).norm(axis: 1)
            factorShape[0] = w.shape[0]
        case .input:
            var order = Array(0..<w.rank)
            order.swapAt(0, 1)
            norms = merged.permuted(order).reshaped([w.shape[1], -1]).norm(axis: 1)
            factorShape[1] = w.shape[1]
        }
        let factor = (magnitude.to(.f32) / norms).reshaped(factorShape)
        let renormalised = merged * factor
        return ModuleDelta(weight: (renormalised - w).scaled(by: strength), bias: unit.bias?.scaled(by: strength))
    }
}
