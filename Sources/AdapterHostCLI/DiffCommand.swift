import ArgumentParser
import DreamBooth
import Foundation
import Tensor

/// `adapterhost diff --base A --tuned B --out D`: a fine-tuned checkpoint (DreamBooth) as an
/// adapter — the difference from its base.
struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the difference of a fine-tuned checkpoint from its base as an adapter (DreamBooth).",
        discussion: """
        BASE and TUNED are single-file .safetensors checkpoints with the same keys, shapes and \
        dtypes. Only changed tensors are written, keyed by the checkpoint's own keys; the file \
        records the base's SHA-256 and applies to that exact file only (unless forced). At \
        weight 1 it gives TUNED back (bit-exactly for F16 checkpoints; the summary counts any \
        element F32 arithmetic cannot return exactly); at 0.5 it is halfway. Inputs are only \
        read; OUT is written to a temporary file beside it and renamed into place.
        """
    )

    @Option(help: "The base checkpoint (.safetensors).") var base: String
    @Option(help: "The fine-tuned checkpoint (.safetensors).") var tuned: String
    @Option(help: "Output difference file (.safetensors); may not be BASE or TUNED.") var out: String
    @Option(help: "Stored dtype: auto (the checkpoint's when exact, else F32) or f32.")
    var dtype: CheckpointDiff.Storage = .auto
    @Flag(help: "Also keep changed tensors the host cannot patch (reported as skipped when applied).")
    var includeUnmapped = false
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func run() throws {
        var bar: ProgressBar?
        let summary = try CheckpointDiff.write(
            base: base, tuned: tuned, out: out,
            options: CheckpointDiff.Options(storage: dtype, includeUnmapped: includeUnmapped),
            progress: { done, total in
                if bar == nil { bar = ProgressBar(label: "diff", total: total, enabled: !quiet) }
                bar?.advance()
                _ = done
            })
        bar?.finish()
        printSummary(summary)
    }

    private func printSummary(_ s: CheckpointDiff.Summary) {
        var dtypeCounts: [String: Int] = [:]
        for dtype in s.storedDTypes.values { dtypeCounts[dtype.rawValue, default: 0] += 1 }
        if json {
            let object: [String: Any] = [
                "out": out, "base_sha256": s.baseSHA256, "family": s.family.rawValue,
                "compared_tensors": s.comparedTensors, "written_tensors": s.writtenKeys.count,
                "stored_dtypes": dtypeCounts, "omitted_tensors": s.omittedKeys,
                "changed_elements": s.changedElements, "corrected_elements": s.correctedElements,
                "unreproducible_elements": s.unreproducibleElements,
                "max_unreproducible_error": s.maxUnreproducibleError,
            ]
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let dtypes = dtypeCounts.keys.sorted().map { "\(dtypeCounts[$0]!) \($0)" }.joined(separator: ", ")
        print("\(s.writtenKeys.count) of \(s.comparedTensors) tensors changed → \(out) (\(dtypes))")
        print("  base: \(s.family.rawValue), sha256 \(s.baseSHA256)")
        if s.unreproducibleElements > 0 {
            print("  \(s.unreproducibleElements) of \(s.changedElements) changed elements cannot come back bit-exactly at weight 1 "
                + "(F32 arithmetic); largest error \(s.maxUnreproducibleError)")
        }
        if !s.omittedKeys.isEmpty {
            printError("warning: \(s.omittedKeys.count) changed tensors have no adapter target in the host and were left out "
                + "(--include-unmapped keeps them): \(s.omittedKeys.prefix(5).joined(separator: ", "))"
                + (s.omittedKeys.count > 5 ? ", …" : ""))
        }
    }
}

extension CheckpointDiff.Storage: ExpressibleByArgument {}
