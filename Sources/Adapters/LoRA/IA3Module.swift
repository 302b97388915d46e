import Host
import Tensor

/// (IA)³ (LyCORIS `weight` + `on_input`): learned per-channel factors w, applied as
/// W' = W ⊙ (1 + strength·w) — per output channel, or per input channel when `on_input`
/// is nonzero. ΔW = strength · W ⊙ w (A1111's `orig_weight * w` times the multiplier, and
/// LyCORIS's `W·(w·mult + 1)`).
final class IA3Module: WeightDependentModule {
    let factors: Tensor
    let onInput: Bool

    init(reader: ModuleReader) throws {
        let w = try reader.required(.ia3Weight)
        factors = w.reshaped([w.count])
        let flag = try reader.required(.onInput)
        guard flag.count == 1 else { throw reader.failure(.notScalar(suffix: "on_input", shape: flag.shape)) }
        onInput = flag.doubles[0] != 0
        super.init(name: reader.name, moduleType: "ia3", rank: nil, alpha: nil)
    }

    override func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let w = weight.to(.f32)
        let axis = onInput ? 1 : 0
        guard w.rank > axis, w.shape[axis] == factors.count else {
            throw DeltaShapeError(module: name, delta: [factors.count], weight: w.shape,
                                  context: "IA3 factors per \(onInput ? "input" : "output") channel")
        }
        var shape = [Int](repeating: 1, count: w.rank)
        shape[axis] = factors.count
        return ModuleDelta(weight: (w * factors.to(.f32).reshaped(shape)).scaled(by: Double(options.strength)))
    }
}
