import Foundation
import Host
import Tensor

/// Extracts a kohya-format LoRA from a fine-tune: per layer, the difference `tuned − base`
/// truncated to rank R, as sd-scripts' networks/extract_lora_from_models.py does, with a
/// randomized truncated SVD in place of its full `torch.linalg.svd` (same result up to the
/// sketch's ≤ 1.05× of the optimal error; exact SVD for small layers).
///
/// Layers (kohya's `networks.lora` targets): in the UNet every linear layer and 1×1 convolution
/// of the transformer blocks (`proj_in`, attention `to_q/k/v/out.0`, `ff`, `proj_out`) at rank
/// R; with a conv rank also the resnets (`conv1`/`conv2` and the samplers' 3×3 convolutions at
/// the conv rank — LoCon — and `conv_shortcut`, `time_emb_proj` at R); in each text encoder the
/// attention projections and MLP layers at R. The rank is capped at min(out, in) as kohya does.
///
/// Per layer, as kohya: `up = U·diag(S)`, `down = Vh`; then, unless disabled, both are clamped
/// to ±h with h the `clampQuantile` quantile (linear interpolation, as `torch.quantile`) of the
/// SIGNED values of `[up; down]` flattened. alpha = rank, so the scale is 1.
///
/// The text encoders follow kohya's all-or-nothing rule: they are extracted only when some
/// layer's max |Δ| exceeds `minDiff` (kohya's `--min_diff`, default 0.01); otherwise every
/// text-encoder layer is skipped and reported. Layers whose Δ is exactly zero are skipped
/// (they would add nothing) and reported.
public enum LoRAExtraction {
    public struct Options {
        public var rank: Int
        /// Rank for 3×3 convolutions (resnets, samplers); nil: those layers are not extracted.
        public var convRank: Int?
        /// kohya's `--clamp_quantile` (default 0.99); nil: no clamping.
        public var clampQuantile: Double? = 0.99
        /// kohya's `--min_diff` for the text encoders (default 0.01).
        public var minDiff: Double = 0.01
        /// Stored dtype of the factors (kohya's default save precision is float).
        public var dtype: DType = .f32
        /// The fine-tune predicts velocity (SD2-768-v): metadata only.
        public var vPrediction = false
        public var seed: UInt64 = 0xE7_7AC7
        public init(rank: Int) { self.rank = rank }
    }

    public struct LayerReport: Sendable {
        public let name: String
        public let rank: Int
        /// ‖Δ − up·down‖_F / ‖Δ‖_F of the written module (after clamping).
        public let relativeError: Double
        /// max |Δ|.
        public let maxAbsDiff: Double
    }

    public struct Result {
        public let tensors: [(String, Tensor)]
        public let metadata: [String: String]
        public let layers: [LayerReport]
        /// Layers left out, with the reason.
        public let skipped: [(name: String, reason: String)]
        /// The largest |Δ| over the text encoders' layers (nil when the model has none).
        public let textEncoderMaxDiff: Double?
        /// False when the text encoders were left out by the min-diff rule.
        public let textEncoderExtracted: Bool
    }

    /// The rank kohya gives `layer` (nil: not a target). `kernelArea` is kh·kw.
    static func targetRank(_ layer: LoRALayer, kernelArea: Int, options: Options) -> Int? {
        let path = layer.path
        switch layer.part {
        case .textEncoder:
            let isTarget = path.contains(".self_attn.") || path.contains(".mlp.")
            return isTarget && layer.kind == .linear ? options.rank : nil
        case .unet:
            let transformer = path.contains(".attentions.")
            let resnetOrSampler = path.contains(".resnets.") || path.contains("samplers.")
            guard transformer || (resnetOrSampler && options.convRank != nil) else { return nil }
            switch layer.kind {
            case .linear: return options.rank
            case .conv2d: return kernelArea == 1 ? options.rank : (transformer ? nil : options.convRank)
            default: return nil
            }
        case .vae:
            return nil
        }
    }

    /// Extracts `tuned − base` (see the type's documentation). Both models must have the same
    /// layers. `progress(done, total)` is called after each layer.
    public static func extract(base: ModelWeights, tuned: ModelWeights, options: Options, title: String,
                               progress: ((Int, Int) -> Void)? = nil) throws -> Result {
        guard options.rank >= 1 else { throw LoRAOperationError(file: "", reason: "--rank must be ≥ 1, not \(options.rank)") }
        if let c = options.convRank, c < 1 { throw LoRAOperationError(file: "", reason: "--conv-rank must be ≥ 1, not \(c)") }
        if let q = options.clampQuantile, !(q > 0 && q <= 1) {
            throw LoRAOperationError(file: "", reason: "--clamp-quantile must be in (0, 1], not \(q)")
        }
        guard base.family == tuned.family else {
            throw LoRAOperationError(file: tuned.path, reason: "is \(tuned.family.rawValue), but the base \(base.path) is \(base.family.rawValue)")
        }
        let names = LoRANameSpace(model: base)
        let tunedNames = LoRANameSpace(model: tuned)

        // The layers to extract, with their difference.
        struct Job { let layer: LoRALayer; let rank: Int; let shape: [Int]; let delta: () throws -> Tensor }
        var jobs: [Job] = []
        for layer in names.allLayers {
            guard let target = names.target(of: layer), let weight = base.tensor(target.weightKey) else { continue }
            let shape = target.rows.map { [$0.count] + weight.shape.dropFirst() } ?? weight.shape
            guard shape.count == 2 || shape.count == 4 else { continue }
            let kernelArea = shape.count == 4 ? shape[2] * shape[3] : 1
            guard let rank = targetRank(layer, kernelArea: kernelArea, options: options) else { continue }
            guard let tunedTarget = tunedNames.target(of: layer), let tunedWeight = tuned.tensor(tunedTarget.weightKey) else {
                throw LoRAOperationError(file: tuned.path, reason: "has no layer \(layer) (the base \(base.path) has)")
            }
            let tunedShape = tunedTarget.rows.map { [$0.count] + tunedWeight.shape.dropFirst() } ?? tunedWeight.shape
            guard tunedShape == shape else {
                throw LoRAOperationError(file: tuned.path, reason: "layer \(layer) is \(tunedShape), the base's is \(shape)")
            }
            let rows = target.rows, tunedRows = tunedTarget.rows
            jobs.append(Job(layer: layer, rank: rank, shape: shape) {
                let b = rows.map { weight.sliced(axis: 0, $0) } ?? weight
                let t = tunedRows.map { tunedWeight.sliced(axis: 0, $0) } ?? tunedWeight
                return (t.to(.f32) - b.to(.f32)).reshaped([shape[0], shape.dropFirst().reduce(1, *)])
            })
        }

        // kohya's text-encoder rule: all or nothing, by the largest |Δ|.
        var skipped: [(name: String, reason: String)] = []
        var teMax: Double?
        var deltas: [Int: Tensor] = [:]
        for (i, job) in jobs.enumerated() where job.layer.part.isTextEncoder {
            let d = try job.delta()
            let m = max(abs(d.maximum()), abs(d.minimum()))
            teMax = max(teMax ?? 0, m)
            deltas[i] = d
        }
        let teExtracted = (teMax ?? 0) > options.minDiff
        if !teExtracted {
            for job in jobs where job.layer.part.isTextEncoder {
                skipped.append((names.kohyaName(job.layer),
                                "text encoders unchanged: max |Δ| \(teMax ?? 0) ≤ min-diff \(options.minDiff) (kohya extracts the UNet only)"))
            }
            jobs.removeAll { $0.layer.part.isTextEncoder }
            deltas = [:]
        }

        var output = LoRAOutput()
        var reports: [LayerReport] = []
        for (i, job) in jobs.enumerated() {
            defer { progress?(i + 1, jobs.count) }
            let name = names.kohyaName(job.layer)
            let delta = try deltas.removeValue(forKey: i) ?? job.delta()
            let maxAbs = max(abs(delta.maximum()), abs(delta.minimum()))
            guard maxAbs > 0 else {
                skipped.append((name, "unchanged (Δ = 0)"))
                continue
            }
            // kohya: rank = min(rank, in_dim, out_dim) with in_dim the input channels.
            let rank = min(job.rank, job.shape[0], job.shape[1])
            let (u, s, vt) = try LowRank.truncatedSVD(delta, rank: rank, seed: options.seed &+ UInt64(i))
            var (up, down) = LowRank.kohyaFactors(u: u, s: s, vt: vt)
            if let q = options.clampQuantile { (up, down) = clamp(up: up, down: down, quantile: q) }
            up = up.to(options.dtype)
            down = down.to(options.dtype)
            let error = LowRank.frobeniusDistance(up.to(.f32).matmul(down.to(.f32)), delta) / delta.frobeniusNorm()
            let (fu, fd) = LowRank.fileShaped(up: up, down: down, layerShape: job.shape)
            output.modules.append(OutputModule(layer: job.layer, rawName: name, up: fu, down: fd, alpha: Double(fd.shape[0])))
            reports.append(LayerReport(name: name, rank: fd.shape[0], relativeError: error, maxAbsDiff: maxAbs))
        }
        guard !output.modules.isEmpty else {
            throw LoRAOperationError(file: tuned.path, reason: "no extractable layer differs from the base \(base.path)")
        }

        let (tensors, _) = try output.render(format: .kohya, names: names, file: title)
        var args: [String: String]? = nil
        if let c = options.convRank { args = ["conv_dim": String(c), "conv_alpha": LoRAMetadataBuilder.pythonFloat(Double(c))] }
        var metadata = LoRAMetadataBuilder.kohyaNetwork(family: base.family, vPrediction: options.vPrediction,
                                                        dim: String(options.rank),
                                                        alpha: LoRAMetadataBuilder.pythonFloat(Double(options.rank)), args: args ?? [:])
        metadata.merge(LoRAMetadataBuilder.modelSpec(family: base.family, title: title, vPrediction: options.vPrediction)) { _, new in new }
        return Result(tensors: tensors, metadata: metadata, layers: reports, skipped: skipped,
                      textEncoderMaxDiff: teMax, textEncoderExtracted: teExtracted)
    }

    /// kohya's clamp: `h = quantile(cat(up.flatten(), down.flatten()), q)`, both clamped to
    /// [-h, h] (as `torch.clamp(x, -h, h)`: when h < 0 every value becomes h).
    static func clamp(up: Tensor, down: Tensor, quantile q: Double) -> (Tensor, Tensor) {
        let all = Tensor.concat([up.reshaped([up.count]), down.reshaped([down.count])], axis: 0)
        let h = all.quantile(q)
        if h < 0 {
            let fill: (Float) -> Float = { _ in Float(h) }
            return (up.map(fill), down.map(fill))
        }
        return (up.clamped(min: -h, max: h), down.clamped(min: -h, max: h))
    }
}
