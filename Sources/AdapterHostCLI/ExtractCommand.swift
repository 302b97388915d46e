import ArgumentParser
import Foundation
import Host
import LoRA
import Tensor

/// `adapterhost extract --base A --tuned B --rank R [--conv-rank R] --out L`
struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extract a kohya-format LoRA from a fine-tuned checkpoint (tuned − base, truncated SVD per layer).",
        discussion: """
        kohya's extract_lora_from_models.py, with a randomized truncated SVD: every transformer linear \
        layer (and 1×1 projection) of the UNet and the text encoders' attention/MLP layers at --rank; \
        with --conv-rank also the resnet and sampler 3×3 convolutions (LoCon). Factors are clamped at \
        the --clamp-quantile (default 0.99) of their values as kohya does (--no-clamp to keep them). \
        The text encoders are extracted only when some layer changed by more than --min-diff (max \
        |Δ|, default 0.01, kohya's rule); otherwise they are skipped and reported. alpha = rank \
        (scale 1); ss_* and modelspec metadata are written. BASE and TUNED: .safetensors \
        checkpoints or diffusers folders of one family.
        """
    )

    @Option(help: "The base checkpoint.") var base: String
    @Option(help: "The fine-tuned checkpoint.") var tuned: String
    @Option(help: "LoRA rank (dim).") var rank: Int
    @Option(help: "Rank for 3×3 convolutions (LoCon); none by default.") var convRank: Int?
    @Option(help: "Clamp the factors at this quantile of their values (kohya, default 0.99).") var clampQuantile: Double = 0.99
    @Flag(help: "Do not clamp the factors.") var noClamp = false
    @Option(help: "Extract the text encoders only when some layer's max |Δ| exceeds this (default 0.01).") var minDiff: Double = 0.01
    @Option(help: "Stored dtype: f32 (default, as kohya), f16 or bf16.") var dtype: String = "f32"
    @Flag(help: "The fine-tune predicts velocity (v): recorded in the metadata.") var vPrediction = false
    @Option(help: "Output LoRA file.") var out: String
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func run() throws {
        try reportingErrors {
            var options = LoRAExtraction.Options(rank: rank)
            options.convRank = convRank
            options.clampQuantile = noClamp ? nil : clampQuantile
            options.minDiff = minDiff
            options.dtype = try parseDType(dtype)
            options.vPrediction = vPrediction
            let baseModel = try ModelWeights.load(path: base)
            let tunedModel = try ModelWeights.load(path: tuned)
            var bar: ProgressBar?
            let result = try LoRAExtraction.extract(base: baseModel, tuned: tunedModel, options: options, title: outputTitle(out)) { done, total in
                if bar == nil { bar = ProgressBar(label: "extract", total: total, enabled: !quiet) }
                bar?.advance()
                _ = done
            }
            bar?.finish()
            try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out, inputPaths: [base, tuned])
            let errors = result.layers.map(\.relativeError)
            let mean = errors.reduce(0, +) / Double(max(errors.count, 1))
            if json {
                printJSON([
                    "out": out, "family": baseModel.family.rawValue, "modules": result.layers.count, "rank": rank,
                    "text_encoder_extracted": result.textEncoderExtracted,
                    "text_encoder_max_diff": result.textEncoderMaxDiff as Any,
                    "skipped": result.skipped.map { ["name": $0.name, "reason": $0.reason] },
                    "layers": result.layers.map { ["name": $0.name, "rank": $0.rank, "relative_error": $0.relativeError,
                                                   "max_abs_diff": $0.maxAbsDiff] },
                ])
                return
            }
            print("extracted \(result.layers.count) modules at rank \(rank)\(convRank.map { " (conv \($0))" } ?? "") → \(out)")
            print(String(format: "  relative error ‖Δ−up·down‖/‖Δ‖: mean %.4g, max %.4g", mean, errors.max() ?? 0))
            if let te = result.textEncoderMaxDiff {
                print(result.textEncoderExtracted
                      ? "  text encoders: extracted (max |Δ| \(te) > \(minDiff))"
                      : "  text encoders: skipped, unchanged (max |Δ| \(te) ≤ min-diff \(minDiff))")
            }
            let unchanged = result.skipped.filter { $0.reason.hasPrefix("unchanged") }
            if !unchanged.isEmpty {
                print("  \(unchanged.count) layers unchanged (Δ = 0), skipped: \(unchanged.prefix(3).map(\.name).joined(separator: ", "))\(unchanged.count > 3 ? ", …" : "")")
            }
        }
    }
}
