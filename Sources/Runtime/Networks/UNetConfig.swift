import Foundation
import Host

/// What a UNet's weights do not say: attention head counts, norm groups, the prediction type,
/// the SDXL time-id embedding width. Everything else (levels, resnets per block, transformer
/// depths, channel widths, conv vs linear projections, SDXL's add embedding, inpainting
/// inputs) is read from the tensors present.
public struct UNetConfig: Sendable, Equatable {
    /// How many heads each transformer's attentions have (diffusers semantics).
    ///
    /// diffusers' UNet2DConditionModel takes `num_attention_heads = num_attention_heads or
    /// attention_head_dim`: the config field named `attention_head_dim` is in fact the head
    /// *count* (a historical misnomer). SD1: 8 heads everywhere (head width 40/80/160); SD2 and
    /// SDXL: [5, 10, 20, 20] / [5, 10, 20] heads, i.e. 64-wide heads at every level.
    public enum AttentionHeads: Sendable, Equatable {
        /// Head counts per down level (one value: every level). Up blocks use the count of the
        /// level they mirror, the mid block the last level's (as diffusers reverses the list).
        case count([Int])
        /// Heads of this width (heads = channels / width).
        case width(Int)
    }

    public var attentionHeads: AttentionHeads
    /// GroupNorm groups in resnets, transformers and the output norm.
    public var normGroups: Int
    /// ε (1) or v prediction.
    public var prediction: ModelPrediction
    /// Latent size the model was trained at (64 for SD1, 96 for SD2-768, 128 for SDXL).
    public var sampleSize: Int
    /// Width of each SDXL time-id embedding (`addition_time_embed_dim`: 256).
    public var additionTimeEmbedDimension: Int
    /// Resnet GroupNorm ε (`norm_eps`).
    public var resnetEps: Float
    /// Transformer2D GroupNorm ε (diffusers fixes 1e-6).
    public var transformerNormEps: Float

    public init(attentionHeads: AttentionHeads, normGroups: Int = 32, prediction: ModelPrediction = .epsilon,
                sampleSize: Int = 64, additionTimeEmbedDimension: Int = 256, resnetEps: Float = 1e-5,
                transformerNormEps: Float = 1e-6) {
        self.attentionHeads = attentionHeads
        self.normGroups = normGroups
        self.prediction = prediction
        self.sampleSize = sampleSize
        self.additionTimeEmbedDimension = additionTimeEmbedDimension
        self.resnetEps = resnetEps
        self.transformerNormEps = transformerNormEps
    }

    /// The released models' settings: SD1 8 heads, 64 px latents; SD2 64-wide heads, 96 px
    /// latents (768-v; pass `prediction: .v` for those checkpoints); SDXL 64-wide heads, 128.
    public static func standard(for family: ModelFamily, prediction: ModelPrediction = .epsilon) -> UNetConfig {
        switch family {
        case .sd1: return UNetConfig(attentionHeads: .count([8]), prediction: prediction, sampleSize: 64)
        case .sd2: return UNetConfig(attentionHeads: .width(64), prediction: prediction, sampleSize: 96)
        case .sdxl: return UNetConfig(attentionHeads: .width(64), prediction: prediction, sampleSize: 128)
        }
    }

    /// Reads a diffusers `unet/config.json` (`num_attention_heads` or `attention_head_dim` as a
    /// head count, `norm_num_groups`, `sample_size`, `addition_time_embed_dim`, `norm_eps`).
    /// The prediction type lives in the scheduler's config: pass it.
    public init(diffusersConfig data: Data, prediction: ModelPrediction = .epsilon) throws {
        guard let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw UNetConfigError(reason: "config.json is not a JSON object")
        }
        func ints(_ key: String) -> [Int]? {
            if let n = json[key] as? Int { return [n] }
            if let list = json[key] as? [Int] { return list }
            return nil
        }
        guard let heads = ints("num_attention_heads") ?? ints("attention_head_dim") else {
            throw UNetConfigError(reason: "config.json has neither num_attention_heads nor attention_head_dim")
        }
        self.init(attentionHeads: .count(heads), normGroups: json["norm_num_groups"] as? Int ?? 32,
                  prediction: prediction, sampleSize: json["sample_size"] as? Int ?? 64,
                  additionTimeEmbedDimension: json["addition_time_embed_dim"] as? Int ?? 256,
                  resnetEps: (json["norm_eps"] as? Double).map(Float.init) ?? 1e-5)
    }

    /// Heads for a transformer with `channels` at down level `level`.
    func heads(level: Int, channels: Int) -> Int {
        switch attentionHeads {
        case .count(let counts):
            return counts.count == 1 ? counts[0] : counts[min(level, counts.count - 1)]
        case .width(let width):
            return max(1, channels / width)
        }
    }
}

/// A config that cannot be read.
public struct UNetConfigError: Error, CustomStringConvertible, Equatable {
    public let reason: String
    public var description: String { "UNet config: \(reason)" }
}
