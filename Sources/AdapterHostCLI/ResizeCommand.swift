import ArgumentParser
import Foundation
import Host
import LoRA
import Tensor

/// `adapterhost resize L (--rank R | --dynamic sv_ratio=X|sv_fro=X|sv_cumulative=X) --out L2`
struct Resize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change a LoRA's rank (kohya resize_lora.py), keeping each module's scale.",
        discussion: """
        Per module the product up·down is decomposed exactly (SVD through the factors) and cut to the \
        new rank; alpha becomes scale·new_rank, so alpha/rank — the strength the LoRA is used at — is \
        unchanged. --rank R: that rank (4-D conv factors: --conv-rank, default R). --dynamic, kohya's \
        rules: sv_ratio=X keeps singular values above S₀/X; sv_cumulative=X the fewest whose sum \
        reaches X of the total; sv_fro=X the fewest keeping X of the Frobenius norm; --rank then caps \
        the result. A module never grows. Each module's "fro retained" (√ of the kept share of ΣS², \
        kohya's figure) is reported. LoHa/LoKr/Tucker/full modules are resized from their dense delta.
        """
    )

    @Argument(help: "The LoRA to resize.") var input: String
    @Option(help: "New rank (with --dynamic: the largest rank allowed).") var rank: Int?
    @Option(help: "sv_ratio=X, sv_fro=X or sv_cumulative=X.") var dynamic: String?
    @Option(help: "New rank of conv (4-D) factors with --rank (default --rank).") var convRank: Int?
    @Option(name: .customLong("to"), help: "Output dialect: kohya or peft (default: the input's).") var format: String?
    @Option(help: "Base model whose layers name the modules (default: the family's standard layout).") var model: String?
    @Option(help: "sd1, sd2 or sdxl, when the file does not say.") var family: String?
    @Option(help: "Stored dtype: f32, f16 or bf16 (default: each module's own).") var dtype: String?
    @Option(help: "Output LoRA file.") var out: String
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "List every module.") var verbose = false

    func run() throws {
        try reportingErrors {
            let rule: LoRAResize.RankRule
            switch (rank, dynamic) {
            case (nil, nil):
                throw LoRAOperationError(file: "", reason: "give --rank R or --dynamic sv_ratio=X|sv_fro=X|sv_cumulative=X")
            case (let r?, nil):
                rule = .fixed(r)
            case (_, let text?):
                guard let parsed = LoRAResize.RankRule(dynamic: text) else {
                    throw LoRAOperationError(file: "", reason: "--dynamic must be sv_ratio=X, sv_fro=X or sv_cumulative=X, not '\(text)'")
                }
                rule = parsed
            }
            var options = LoRAResize.Options(rule: rule)
            if dynamic != nil { options.maxRank = rank }
            options.convRank = convRank
            options.dtype = try dtype.map(parseDType)
            options.format = try format.map(parseFormat)
            let file = try LoRAOperationInput(path: input)
            let names = try LoRANameSpace.resolve(for: [file], model: try model.map { try ModelWeights.load(path: $0) },
                                                  family: try family.map(parseFamily))
            let result = try LoRAResize.resize(file, options: options, names: names)
            try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out, inputPaths: [input] + (model.map { [$0] } ?? []))
            let fro = result.layers.map(\.froRetained)
            let mean = fro.reduce(0, +) / Double(max(fro.count, 1))
            if json {
                printJSON([
                    "out": out, "rule": rule.description, "modules": result.layers.count,
                    "mean_fro_retained": mean,
                    "layers": result.layers.map { ["name": $0.name, "old_rank": $0.oldRank, "new_rank": $0.newRank,
                                                   "alpha": $0.newAlpha, "fro_retained": $0.froRetained,
                                                   "sum_retained": $0.sumRetained] },
                ])
                return
            }
            let ranks = result.layers.map(\.newRank)
            let rankText = ranks.min() == ranks.max() ? "rank \(ranks.first ?? 0)" : "ranks \(ranks.min() ?? 0)…\(ranks.max() ?? 0)"
            print("resized \(result.layers.count) modules (\(rule)): \(rankText) → \(out)")
            print(String(format: "  fro retained: mean %.1f%%, min %.1f%%", 100 * mean, 100 * (fro.min() ?? 0)))
            if verbose {
                let rows = result.layers.map { [$0.name, "\($0.oldRank) → \($0.newRank)", LoRAMetadataBuilder.pythonFloat($0.newAlpha),
                                                String(format: "%.1f%%", 100 * $0.froRetained)] }
                for line in InspectRenderer.alignedTable(header: ["module", "rank", "alpha", "fro retained"], rows: rows,
                                                         rightAligned: [2, 3]) {
                    print("  " + line)
                }
            }
        }
    }
}
