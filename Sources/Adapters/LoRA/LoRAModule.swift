import Host
import Tensor

/// LoRA in every dialect (kohya `lora_down`/`lora_up`, PEFT `lora_A`/`lora_B`, diffusers
/// `lora.down`/`lora.up`, …): ΔW = s · up · down, with
/// - linear factors `up [out, r]`, `down [r, in]`;
/// - conv factors (LoCon) `down [r, in, kh, kw]` (the layer's kernel), `up [out, r, 1, 1]`;
/// - Tucker (kohya/LyCORIS `lora_mid`): `down [r, in, 1, 1]`, `mid [r, r, kh, kw]`, `up [out, r, 1, 1]`.
///
/// A1111's `dyn` keeps the first `dynRank` ranks (`rebuild_conventional`); the scale stays
/// alpha / full rank. As in A1111, `dyn` does not apply to Tucker modules.
///
/// PEFT's `lora_B.bias` (`LoraConfig(lora_bias=True)`) is a bias delta scaled like the weight:
/// Δb = s · lora_B.bias, as PEFT's `merge` adds `lora_B.bias * scaling` to the layer's bias.
final class LoRAModule: WeightDeltaModule {
    let up: Tensor
    let down: Tensor
    let mid: Tensor?
    /// PEFT's `lora_B.bias` `[out]`, when the file has one.
    let upBias: Tensor?

    init(reader: ModuleReader, traits: FileTraits) throws {
        let downT = try reader.optional(.down), upT = try reader.optional(.up)
        guard let downT else { throw reader.failure(.missingTensor(suffix: "down (lora_down.weight / lora_A.weight)", moduleType: "lora")) }
        guard let upT else { throw reader.failure(.missingTensor(suffix: "up (lora_up.weight / lora_B.weight) for its down", moduleType: "lora")) }
        try reader.requireRank(downT, .down, [2, 4], "[rank, in] or [rank, in, kh, kw]")
        try reader.requireRank(upT, .up, [2, 4], "[out, rank] or [out, rank, 1, 1]")
        if upT.rank == 4, upT.shape[2] != 1 || upT.shape[3] != 1 {
            throw reader.failure(.badShape(suffix: "up", shape: upT.shape, expected: "[out, rank, 1, 1]"))
        }
        let r = downT.shape[0]
        let midT = try reader.optional(.mid)
        if let midT {
            try reader.requireRank(midT, .mid, [4], "[rank, rank, kh, kw]")
            guard midT.shape[0] == upT.shape[1], midT.shape[1] == r else {
                throw reader.failure(.rankMismatch("lora_mid \(midT.shape) between up \(upT.shape) and down \(downT.shape)"))
            }
            guard downT.rank == 2 || (downT.shape[2] == 1 && downT.shape[3] == 1) else {
                throw reader.failure(.badShape(suffix: "down", shape: downT.shape, expected: "[rank, in, 1, 1] with lora_mid"))
            }
        } else if upT.shape[1] != r {
            throw reader.failure(.rankMismatch("up \(upT.shape) has rank \(upT.shape[1]), down \(downT.shape) has rank \(r)"))
        }
        guard r > 0 else { throw reader.failure(.badShape(suffix: "down", shape: downT.shape, expected: "rank ≥ 1")) }
        let biasT = try reader.optional(.upBias)
        if let biasT, biasT.rank != 1 || biasT.count != upT.shape[0] {
            throw reader.failure(.badShape(suffix: "lora_B.bias", shape: biasT.shape, expected: "[\(upT.shape[0])] (the up factor's outputs)"))
        }
        up = upT
        down = downT
        mid = midT
        upBias = biasT
        let (alpha, scale) = try LoRAScale.resolve(reader: reader, traits: traits, rank: r)
        let kernel = (midT ?? downT).rank == 4 ? Array((midT ?? downT).shape[2...]) : [1, 1]
        let type = midT != nil ? "locon-tucker" : (kernel != [1, 1] ? "locon" : "lora")
        super.init(name: reader.name, moduleType: type, rank: r, alpha: alpha, scale: scale)
    }

    override var changesBias: Bool { upBias != nil }
    override var biasFollowsScale: Bool { true }
    override func rawBias() -> Tensor? { upBias?.to(.f32) }

    /// The shape `rawDelta` builds: `[out, in]`, or `[out, in, kh, kw]` for LoCon and Tucker.
    override var deltaShape: [Int]? {
        if let mid { return [up.shape[0], FactorMath.matrix(down).shape[1]] + mid.shape[2...] }
        return [up.shape[0], down.shape[1]] + (down.rank == 4 ? Array(down.shape[2...]) : [])
    }

    /// Ranks used under `dyn` (A1111: `up[:, :dyn]`, `down[:dyn]`).
    private func usedRank(_ dynRank: Int?) -> Int {
        guard let dynRank, mid == nil else { return down.shape[0] }
        return max(0, min(dynRank, down.shape[0]))
    }

    override func rawDelta(dynRank: Int?) throws -> ModuleDelta {
        if let mid {
            return ModuleDelta(weight: FactorMath.tucker(up: up, mid: mid, down: down))
        }
        let r = usedRank(dynRank)
        let u = FactorMath.matrix(up).sliced(axis: 1, 0..<r)
        let d = FactorMath.matrix(down).sliced(axis: 0, 0..<r)
        var shape = [up.shape[0], down.shape[1]]
        if down.rank == 4 { shape += down.shape[2...] }
        return ModuleDelta(weight: u.matmul(d).reshaped(shape))
    }

    /// Bypass, in place, linear layers: `out += (x·downᵀ)·upᵀ · s · strength` as one GEMM
    /// into the layer's output (a rank-wide intermediate only); other layers as `forwardTerm`.
    override func addForwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions, into out: Tensor) throws -> Bool {
        guard case .linear = layer, mid == nil, x.rank >= 1,
              FactorMath.matrix(down).shape[1] == x.shape[x.rank - 1],
              out.count / max(up.shape[0], 1) * up.shape[0] == out.count else {
            return try super.addForwardTerm(input: x, layer: layer, options: options, into: out)
        }
        let r = usedRank(options.dynRank)
        let d = FactorMath.matrix(down).sliced(axis: 0, 0..<r)
        let u = FactorMath.matrix(up).sliced(axis: 1, 0..<r)
        out.addMatmul(x.matmul(d.transposed()), u.transposed(), alpha: scale * Double(options.strength))
        return true
    }

    /// Bypass: `x·downᵀ·upᵀ · s · strength` for linear layers; for convolutions the down
    /// factor runs as a convolution with the layer's stride and padding (Tucker: the mid
    /// factor does), then the up factor as a 1×1 convolution. Rank-sized intermediates only.
    override func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? {
        let factor = scale * Double(options.strength)
        let r = usedRank(options.dynRank)
        switch layer {
        // A module whose factors do not fit the layer gets no forward term: the host's dense
        // path then reports the misfit as an error instead of a shape precondition failing here.
        case .linear:
            guard mid == nil, x.rank >= 1, FactorMath.matrix(down).shape[1] == x.shape[x.rank - 1] else { return nil }
            let d = FactorMath.matrix(down).sliced(axis: 0, 0..<r)
            let u = FactorMath.matrix(up).sliced(axis: 1, 0..<r)
            return x.matmul(d.transposed()).matmul(u.transposed()).scaled(by: factor)
        case let .conv2d(stride, padding):
            guard x.rank == 4, down.shape[1] == x.shape[1] else { return nil }
            let u4 = FactorMath.matrix(up).sliced(axis: 1, 0..<r).contiguous().reshaped([up.shape[0], r, 1, 1])
            let hidden: Tensor
            if let mid {
                let d4 = FactorMath.matrix(down).reshaped([down.shape[0], down.shape[1], 1, 1])
                hidden = x.conv2d(weight: d4, stride: 1, padding: 0).conv2d(weight: mid, stride: stride, padding: padding)
            } else {
                let d4 = (down.rank == 4 ? down : down.reshaped([down.shape[0], down.shape[1], 1, 1]))
                    .sliced(axis: 0, 0..<r)
                // A 1×1 down factor on a padded layer (a larger kernel) is not this layer's
                // delta; leave it to the host's dense path, which reports the misfit.
                if d4.shape[2] * d4.shape[3] == 1, padding != 0 { return nil }
                hidden = x.conv2d(weight: d4, stride: stride, padding: padding)
            }
            return hidden.conv2d(weight: u4, stride: 1, padding: 0).scaled(by: factor)
        case .norm, .embedding:
            return nil
        }
    }
}

/// The scale rule every alpha/rank type shares: the file's `scale` tensor when present
/// (A1111's `calc_scale`), else alpha/rank from the module's `alpha` or the file's PEFT
/// config (rsLoRA: alpha/√rank), else 1.
enum LoRAScale {
    static func resolve(reader: ModuleReader, traits: FileTraits, rank: Int?) throws -> (alpha: Double?, scale: Double) {
        let alpha = try reader.scalar(.alpha)
        if let explicit = try reader.scalar(.scale) { return (alpha, explicit) }
        guard let rank else { return (alpha, 1) }
        return traits.loraScale(module: reader.name, storedAlpha: alpha, rank: rank)
    }
}
