import Host
import Tensor

/// LoHa (LyCORIS `hada_*`): ΔW = s · (w1a·w1b) ⊙ (w2a·w2b), s = alpha / rank with
/// rank = `hada_w1_b`'s first axis.
///
/// Factors: `w1a`/`w2a` `[out, r]`, `w1b`/`w2b` `[r, in]` (conv: `[r, in·kh·kw]`, or 4-D).
/// CP/Tucker form: `hada_t1`/`hada_t2` `[r, r, kh, kw]` with rank-first factors `w1a [r, out]`,
/// `w1b [r, in]` (A1111's `make_weight_cp`).
///
/// Scale once: LyCORIS's own merge (`get_diff_weight` → `get_weight(·, gamma=scale)` · scale)
/// applies alpha/rank twice; A1111, ComfyUI and LyCORIS's forward apply it once, as here.
final class LoHaModule: WeightDeltaModule {
    let w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor
    let t1: Tensor?, t2: Tensor?

    init(reader: ModuleReader, traits: FileTraits) throws {
        w1a = try reader.required(.hadaW1A)
        w1b = try reader.required(.hadaW1B)
        w2a = try reader.required(.hadaW2A)
        w2b = try reader.required(.hadaW2B)
        t1 = try reader.optional(.hadaT1)
        t2 = try reader.optional(.hadaT2)
        for (t, role) in [(w1a, KeyGrammar.Role.hadaW1A), (w1b, .hadaW1B), (w2a, .hadaW2A), (w2b, .hadaW2B)] {
            try reader.requireRank(t, role, [2, 4], "a matrix (or conv-shaped factor)")
        }
        let shape1 = try LoHaModule.factorShape(reader, a: w1a, b: w1b, t: t1, tRole: .hadaT1)
        let shape2 = try LoHaModule.factorShape(reader, a: w2a, b: w2b, t: t2, tRole: .hadaT2)
        guard shape1.reduce(1, *) == shape2.reduce(1, *), shape1[0] == shape2[0] else {
            throw reader.failure(.rankMismatch("the two Hadamard factors build \(shape1) and \(shape2)"))
        }
        let rank = w1b.shape[0]
        let (alpha, scale) = try LoRAScale.resolve(reader: reader, traits: traits, rank: rank)
        super.init(name: reader.name, moduleType: "loha", rank: rank, alpha: alpha, scale: scale)
    }

    /// The shape a factor pair builds; validates the shared rank.
    static func factorShape(_ reader: ModuleReader, a: Tensor, b: Tensor, t: Tensor?, tRole: KeyGrammar.Role) throws -> [Int] {
        if let t {
            try reader.requireRank(t, tRole, [4], "[rank, rank, kh, kw]")
            guard t.shape[0] == a.shape[0], t.shape[1] == b.shape[0] else {
                throw reader.failure(.rankMismatch("\(tRole.rawValue) \(t.shape) with rank-first factors \(a.shape), \(b.shape)"))
            }
            return [FactorMath.matrix(a).shape[1], FactorMath.matrix(b).shape[1]] + t.shape[2...]
        }
        guard a.shape[1] == b.shape[0] else {
            throw reader.failure(.rankMismatch("\(a.shape) · \(b.shape)"))
        }
        return [a.shape[0], b.shape[1]] + (b.rank == 4 ? Array(b.shape[2...]) : [])
    }

    static func rebuild(a: Tensor, b: Tensor, t: Tensor?, shape: [Int]) -> Tensor {
        if let t { return FactorMath.cp(t: t, wa: a, wb: b) }
        return FactorMath.product(a, b).reshaped(shape)
    }

    /// The shape the first factor pair builds: the delta's shape (A1111).
    override var deltaShape: [Int]? {
        if let t1 { return [FactorMath.matrix(w1a).shape[1], FactorMath.matrix(w1b).shape[1]] + t1.shape[2...] }
        return [w1a.shape[0], w1b.shape[1]] + (w1b.rank == 4 ? Array(w1b.shape[2...]) : [])
    }

    override func rawDelta(dynRank: Int?) throws -> ModuleDelta {
        // The first factor sets the output shape (A1111); the second is reshaped to it.
        let shape1 = deltaShape!
        let first = LoHaModule.rebuild(a: w1a, b: w1b, t: t1, shape: shape1)
        let second = LoHaModule.rebuild(a: w2a, b: w2b, t: t2, shape: shape1).reshaped(shape1)
        return ModuleDelta(weight: first * second)
    }
}
