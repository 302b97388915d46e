import Host
import Tensor

/// LoKr (LyCORIS `lokr_*`): ΔW = s · kron(W1, W2), with
/// - W1 = `lokr_w1` `[a, c]` or `lokr_w1_a · lokr_w1_b`;
/// - W2 = `lokr_w2` (`[b, d]` or conv `[b, d, kh, kw]`), or `lokr_w2_a · lokr_w2_b`
///   (conv: `[b, r]·[r, d·kh·kw]`), or the CP form `lokr_t2` `[r, r, kh, kw]` with rank-first
///   `lokr_w2_a [r, b]`, `lokr_w2_b [r, d]`.
///
/// s = alpha / rank when a factor is low-rank (rank: `lokr_w2_b`'s first axis, else
/// `lokr_w1_b`'s, as A1111); s = 1 when both factors are full matrices (LyCORIS writes
/// alpha = rank there; A1111 has no rank and uses 1). LyCORIS's merge path scales twice
/// (as for LoHa); this applies s once.
final class LoKrModule: WeightDeltaModule {
    let w1: Tensor?, w1a: Tensor?, w1b: Tensor?
    let w2: Tensor?, w2a: Tensor?, w2b: Tensor?, t2: Tensor?

    init(reader: ModuleReader, traits: FileTraits) throws {
        w1 = try reader.optional(.lokrW1)
        w1a = try reader.optional(.lokrW1A)
        w1b = try reader.optional(.lokrW1B)
        w2 = try reader.optional(.lokrW2)
        w2a = try reader.optional(.lokrW2A)
        w2b = try reader.optional(.lokrW2B)
        t2 = try reader.optional(.lokrT2)
        if w1 == nil {
            guard let w1a else { throw reader.failure(.missingTensor(suffix: "lokr_w1 (or lokr_w1_a)", moduleType: "lokr")) }
            guard let w1b else { throw reader.failure(.missingTensor(suffix: "lokr_w1_b for its lokr_w1_a", moduleType: "lokr")) }
            try reader.requireRank(w1a, .lokrW1A, [2], "[a, rank]")
            try reader.requireRank(w1b, .lokrW1B, [2], "[rank, c]")
            guard w1a.shape[1] == w1b.shape[0] else { throw reader.failure(.rankMismatch("lokr_w1_a \(w1a.shape) · lokr_w1_b \(w1b.shape)")) }
        } else {
            try reader.requireRank(w1!, .lokrW1, [2, 4], "[a, c]")
        }
        if w2 == nil {
            guard let w2a else { throw reader.failure(.missingTensor(suffix: "lokr_w2 (or lokr_w2_a)", moduleType: "lokr")) }
            guard let w2b else { throw reader.failure(.missingTensor(suffix: "lokr_w2_b for its lokr_w2_a", moduleType: "lokr")) }
            if let t2 {
                try reader.requireRank(t2, .lokrT2, [4], "[rank, rank, kh, kw]")
                guard t2.shape[0] == w2a.shape[0], t2.shape[1] == w2b.shape[0] else {
                    throw reader.failure(.rankMismatch("lokr_t2 \(t2.shape) with rank-first lokr_w2_a \(w2a.shape), lokr_w2_b \(w2b.shape)"))
                }
            } else {
                guard w2a.shape[1] == w2b.shape[0] else { throw reader.failure(.rankMismatch("lokr_w2_a \(w2a.shape) · lokr_w2_b \(w2b.shape)")) }
            }
        }
        let rank = w2b?.shape[0] ?? w1b?.shape[0]
        let (alpha, scale) = try LoRAScale.resolve(reader: reader, traits: traits, rank: rank)
        super.init(name: reader.name, moduleType: "lokr", rank: rank, alpha: alpha, scale: scale)
    }

    override func rawDelta(dynRank: Int?) throws -> ModuleDelta {
        var left = w1.map { $0.to(.f32) } ?? FactorMath.product(w1a!, w1b!)
        let right: Tensor
        if let w2 {
            right = w2.to(.f32)
        } else if let t2 {
            right = FactorMath.cp(t: t2, wa: w2a!, wb: w2b!)
        } else {
            right = FactorMath.product(w2a!, w2b!)
        }
        // A1111's make_kron: a conv-shaped W2 takes W1 as [a, c, 1, 1]; a flattened W2
        // gives [a·b, c·(d·kh·kw)], which the host reshapes to the conv weight.
        if right.rank == 4, left.rank == 2 { left = left.reshaped(left.shape + [1, 1]) }
        return ModuleDelta(weight: left.kron(right))
    }
}
