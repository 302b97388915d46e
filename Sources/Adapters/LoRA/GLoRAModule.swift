import Host
import Tensor

/// GLoRA (LyCORIS `a1`, `a2`, `b1`, `b2`, optional Tucker `bm`):
/// ΔW = strength · s · (W·A + B), A = `[in, r]·[r, in]` (applied on the input axis, per
/// kernel position for convolutions), B = `[out, r]·[r, in(·kh·kw)]`, s = alpha / rank.
///
/// Two layouts exist. LyCORIS ≥ 2.2: `a1 [in, r]`, `a2 [r, in]`, `b1 [out, r]`, `b2 [r, in]`
/// (A = a1·a2, B = b1·b2). The original one, which A1111 implements: `a1 [r, in]`,
/// `a2 [in, r]`, `b1 [r, in]`, `b2 [out, r]` (A = a2·a1, B = b2·b1). Their shapes coincide
/// except on which of a1/a2 starts with the layer's input width, so the layout is chosen
/// against the weight (the current one when rank = in makes both fit).
/// A1111 never sets a rank for GLoRA and so ignores alpha (scale 1); LyCORIS, old and new,
/// scales by alpha/rank — followed here.
final class GLoRAModule: WeightDependentModule {
    let a1: Tensor, a2: Tensor, b1: Tensor, b2: Tensor
    let bMid: Tensor?
    let storedAlpha: Double?
    let explicitScale: Double?
    let traits: FileTraits

    init(reader: ModuleReader, traits: FileTraits) throws {
        a1 = FactorMath.matrix(try reader.required(.gloraA1))
        a2 = FactorMath.matrix(try reader.required(.gloraA2))
        b1 = try reader.required(.gloraB1)
        b2 = try reader.required(.gloraB2)
        bMid = try reader.optional(.gloraBM)
        if let bMid { try reader.requireRank(bMid, .gloraBM, [4], "[rank, rank, kh, kw]") }
        guard a1.shape[0] == a2.shape[1], a1.shape[1] == a2.shape[0] else {
            throw reader.failure(.rankMismatch("a1 \(a1.shape) and a2 \(a2.shape) do not form [in, r]·[r, in]"))
        }
        let current = GLoRAModule.bPairFits(up: b1, down: b2, rank: a2.shape[0], mid: bMid)
        let original = GLoRAModule.bPairFits(up: b2, down: b1, rank: a1.shape[0], mid: bMid)
        guard current || original else {
            throw reader.failure(.rankMismatch("b1 \(b1.shape), b2 \(b2.shape) do not match the rank of a1 \(a1.shape) / a2 \(a2.shape)"))
        }
        storedAlpha = try reader.scalar(.alpha)
        explicitScale = try reader.scalar(.scale)
        self.traits = traits
        super.init(name: reader.name, moduleType: "glora", rank: current ? a2.shape[0] : a1.shape[0], alpha: storedAlpha)
    }

    static func bPairFits(up: Tensor, down: Tensor, rank: Int, mid: Tensor?) -> Bool {
        let upRank = FactorMath.matrix(up).shape[1], downRank = down.shape[0]
        if let mid { return mid.shape[0] == upRank && mid.shape[1] == downRank && upRank == rank }
        return upRank == rank && downRank == rank
    }

    override func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let w = weight.to(.f32)
        guard w.rank >= 2 else { throw DeltaShapeError(module: name, delta: a1.shape, weight: w.shape, context: "GLoRA") }
        let inWidth = w.shape[1]
        let useCurrent = a1.shape[0] == inWidth
            && GLoRAModule.bPairFits(up: b1, down: b2, rank: a2.shape[0], mid: bMid)
        let (first, second, up, down) = useCurrent ? (a1, a2, b1, b2) : (a2, a1, b2, b1)
        let rank = second.shape[0]
        guard first.shape[0] == inWidth else {
            throw DeltaShapeError(module: name, delta: first.shape, weight: w.shape, context: "GLoRA A factor")
        }
        let scale = explicitScale ?? traits.loraScale(module: name, storedAlpha: storedAlpha, rank: rank).scale
        let a = first.matmul(second)                              // [in, in]
        let wa: Tensor
        if w.rank == 2 {
            wa = w.matmul(a)
        } else {
            // einsum("o i ..., i j -> o j ..."): the kernel axes move in front of `in`.
            let order = [0] + Array(2..<w.rank) + [1]
            var inverse = [Int](repeating: 0, count: w.rank)
            for (i, o) in order.enumerated() { inverse[o] = i }
            wa = w.permuted(order).matmul(a).permuted(inverse).contiguous()
        }
        let b = bMid.map { FactorMath.tucker(up: up, mid: $0, down: down) } ?? FactorMath.product(up, down)
        let sum = wa + (try fitted(b, to: w.shape, module: name, context: "GLoRA B"))
        return ModuleDelta(weight: sum.scaled(by: scale * Double(options.strength)))
    }
}
