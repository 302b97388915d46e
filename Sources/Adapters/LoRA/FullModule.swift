import Host
import Tensor

/// LyCORIS "full" (native fine-tuning stored as a difference): ΔW = `diff`, Δb = `diff_b`.
/// LyCORIS "norm" (GroupNorm/LayerNorm fine-tuning): Δw = `w_norm`, Δb = `b_norm`.
/// Both have scale 1 (or the file's `scale`), as A1111's `calc_scale` without a rank.
final class FullModule: WeightDeltaModule {
    let weightDelta: Tensor?
    let biasDelta: Tensor?

    init(reader: ModuleReader, weightRole: KeyGrammar.Role, biasRole: KeyGrammar.Role, type: String) throws {
        weightDelta = try reader.optional(weightRole)
        biasDelta = try reader.optional(biasRole)
        guard weightDelta != nil || biasDelta != nil else {
            throw reader.failure(.missingTensor(suffix: weightRole.rawValue, moduleType: type))
        }
        if let b = biasDelta, b.rank != 1 {
            throw reader.failure(.badShape(suffix: biasRole.rawValue, shape: b.shape, expected: "a vector [channels]"))
        }
        let scale = try reader.scalar(.scale) ?? 1
        super.init(name: reader.name, moduleType: type, rank: nil, alpha: try reader.scalar(.alpha), scale: scale)
    }

    override var changesBias: Bool { biasDelta != nil }
    override var changesWeight: Bool { weightDelta != nil }
    override var deltaShape: [Int]? { weightDelta?.shape }

    override func rawDelta(dynRank: Int?) throws -> ModuleDelta {
        ModuleDelta(weight: weightDelta?.to(.f32), bias: rawBias())
    }

    override func rawBias() -> Tensor? { biasDelta?.to(.f32) }
}
