import ArgumentParser
import Foundation
import Host
import LoRA
import Tensor

/// `adapterhost combine A[:w] B[:w] … --mode concat|svd|linear [--rank R] --out L`
struct Combine: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Combine LoRA files into one (exact concatenation, SVD of the sum, or kohya's legacy linear merge).",
        discussion: """
        Each input is FILE or FILE:WEIGHT (default 1; negative subtracts). Modes:
          concat  exact: per layer the factors are stacked (rank = sum of ranks), each scaled so the \
        new delta is exactly the weighted sum; alpha = rank. LoRA/LoCon inputs only.
          svd     the weighted sum of the dense deltas truncated to --rank R (--conv-rank for 3×3 \
        convolutions): the best rank-R approximation (randomized SVD within 1.05× of optimal; exact \
        for small layers). The only mode that combines different module types (LoHa, LoKr, Tucker, \
        full) — through their dense deltas.
          linear  kohya's merge_lora.py (merge_lora_models): up and down factors summed separately with \
        √(alpha/alpha₀) scaling. INEXACT (cross terms); for reproducing kohya's results. Equal ranks only.
        DoRA/IA3/OFT/GLoRA modules depend on the base weight and cannot be combined. Layers are matched \
        across dialects (kohya, PEFT, LyCORIS) through the family's layout (or --model). The output \
        carries kohya ss_* and modelspec metadata with recomputed sshs hashes. Errors print one line \
        and exit 1; nothing is written then.
        """
    )

    @Argument(help: "Input LoRA files, FILE[:WEIGHT].") var inputs: [String]
    @Option(help: "concat, svd or linear.") var mode: String
    @Option(help: "Rank of the result (svd).") var rank: Int?
    @Option(help: "Rank for 3×3 convolutions (svd; default --rank).") var convRank: Int?
    @Option(name: .customLong("to"), help: "Output dialect: kohya (default) or peft.") var format: String = "kohya"
    @Option(help: "Base model whose layers name the modules (default: the family's standard layout).") var model: String?
    @Option(help: "sd1, sd2 or sdxl, when the inputs do not say.") var family: String?
    @Option(help: "Stored dtype: f32, f16 or bf16 (default: the inputs' when exact, else f32).") var dtype: String?
    @Option(help: "Output LoRA file.") var out: String
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() throws {
        try reportingErrors {
            guard !inputs.isEmpty else { throw LoRAOperationError(file: "", reason: "give at least one input LoRA") }
            guard let mode = LoRACombine.Mode(rawValue: mode) else {
                throw LoRAOperationError(file: "", reason: "--mode must be concat, svd or linear, not '\(self.mode)'")
            }
            var options = LoRACombine.Options(mode: mode, rank: rank, convRank: convRank)
            options.format = try parseFormat(format)
            options.dtype = try dtype.map(parseDType)
            var combineInputs: [LoRACombine.Input] = []
            for spec in inputs {
                let (path, weight) = try parseWeightedPath(spec)
                combineInputs.append(LoRACombine.Input(file: try LoRAOperationInput(path: path), weight: weight))
            }
            let names = try LoRANameSpace.resolve(for: combineInputs.map(\.file), model: try model.map { try ModelWeights.load(path: $0) },
                                                  family: try family.map(parseFamily))
            let result = try LoRACombine.combine(combineInputs, options: options, names: names, title: outputTitle(out))
            try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out,
                                     inputPaths: combineInputs.map(\.file.path) + (model.map { [$0] } ?? []))
            let ranks = result.layers.map(\.rank)
            let errors = result.layers.compactMap(\.relativeError)
            if json {
                printJSON([
                    "out": out, "mode": mode.rawValue, "modules": result.layers.count,
                    "ranks": ["min": ranks.min() ?? 0, "max": ranks.max() ?? 0],
                    "layers": result.layers.map { layer -> [String: Any] in
                        var o: [String: Any] = ["name": layer.name, "rank": layer.rank, "inputs": layer.inputs]
                        if let e = layer.relativeError { o["relative_error"] = e }
                        return o
                    },
                ])
                return
            }
            let rankText = ranks.min() == ranks.max() ? "rank \(ranks.first ?? 0)" : "ranks \(ranks.min() ?? 0)…\(ranks.max() ?? 0)"
            print("combined \(combineInputs.count) files (\(mode.rawValue)): \(result.layers.count) modules, \(rankText) → \(out)")
            if let worst = errors.max() {
                print(String(format: "  relative error ‖Σ−result‖/‖Σ‖: mean %.4g, max %.4g", errors.reduce(0, +) / Double(errors.count), worst))
            }
            if mode == .linear { print("  note: linear is kohya's legacy merge and is not exact (cross terms between inputs)") }
        }
    }
}

// MARK: - Shared by combine, extract, resize and convert

/// Runs `body`; any error becomes one line on stderr ("adapterhost: error: …") and exit 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        fputs("adapterhost: error: \(String(describing: error).replacingOccurrences(of: "\n", with: " "))\n", stderr)
        throw ExitCode(1)
    }
}

/// `FILE[:WEIGHT]`, split at the last ':' when what follows is a number (paths may contain ':').
func parseWeightedPath(_ spec: String) throws -> (path: String, weight: Double) {
    if let colon = spec.lastIndex(of: ":"), let weight = Double(spec[spec.index(after: colon)...]) {
        let path = String(spec[..<colon])
        guard !path.isEmpty else { throw LoRAOperationError(file: "", reason: "'\(spec)': no file named") }
        guard weight.isFinite else { throw LoRAOperationError(file: path, reason: "weight \(weight) is not a finite number") }
        return (path, weight)
    }
    return (spec, 1)
}

func parseFormat(_ text: String) throws -> LoRAOutputFormat {
    guard let format = LoRAOutputFormat(rawValue: text.lowercased()) else {
        throw LoRAOperationError(file: "", reason: "--to must be kohya or peft, not '\(text)'")
    }
    return format
}

func parseFamily(_ text: String) throws -> ModelFamily {
    guard let family = ModelFamily(rawValue: text.lowercased()) else {
        throw LoRAOperationError(file: "", reason: "--family must be sd1, sd2 or sdxl, not '\(text)'")
    }
    return family
}

func parseDType(_ text: String) throws -> DType {
    switch text.lowercased() {
    case "f32", "fp32", "float", "float32": return .f32
    case "f16", "fp16", "float16": return .f16
    case "bf16", "bfloat16": return .bf16
    default: throw LoRAOperationError(file: "", reason: "--dtype must be f32, f16 or bf16, not '\(text)'")
    }
}

/// The output's title for modelspec: its file name without extension (as kohya does).
func outputTitle(_ path: String) -> String {
    ((path as NSString).lastPathComponent as NSString).deletingPathExtension
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
