import ArgumentParser
import Foundation
import Host
import SafeTensors
import Tensor

/// `adapterhost merge BASE --adapter FILE[:WEIGHT[:UNET_WEIGHT]] … --out OUT`
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge adapters into a checkpoint and write a new one (BASE is never modified).",
        discussion: """
        Each --adapter is FILE, FILE:WEIGHT or FILE:TE_WEIGHT:UNET_WEIGHT (A1111's <lora:name:te:unet>). \
        Add :dyn=N to use only the first N ranks. The output has the same keys, shapes and dtypes \
        as BASE; deltas are summed in F32 and stored in each weight's dtype. The file is written \
        to a temporary file beside OUT and renamed into place.
        """
    )

    @Argument(help: "The base checkpoint (.safetensors, single-file ldm/sgm keys).") var base: String
    @Option(name: .customLong("adapter"), help: "FILE[:WEIGHT[:UNET_WEIGHT]][:dyn=N] (repeatable).")
    var adapters: [String] = []
    @Option(help: "Output checkpoint.") var out: String
    @Option(help: "Directory of plugin libraries (default: plugins/ beside BASE, if present).")
    var pluginDir: String?
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    func run() throws {
        guard !adapters.isEmpty else { throw ValidationError("give at least one --adapter") }
        let (registry, failures) = makeRegistry(pluginDir: pluginDir ?? defaultPluginDir(besideFile: base))
        reportPluginFailures(failures)
        let model = try ModelWeights.load(path: base)
        var stack: [AdapterApplication] = []
        for spec in adapters {
            let parsed = try AdapterSpec(parsing: spec)
            let source = try SafeTensorsFile(path: parsed.path)
            let adapter = try registry.load(source)
            stack.append(AdapterApplication(adapter: adapter, weight: parsed.weight,
                                            unetWeight: parsed.unetWeight, dynRank: parsed.dynRank))
        }
        let plan = try PatchPlan(model: model, stack: stack)
        let base = try SafeTensorsFile(path: self.base)
        var writer = SafeTensorsWriter(metadata: mergedMetadata(base.metadata, stack: stack))
        writer.inputPaths = [self.base] + stack.map(\.adapter.path)
        let progress = ProgressBar(label: "merging", total: plan.touchedKeys.count, enabled: !quiet)
        for info in base.tensorInfos {
            let key = info.name
            if plan.touches(key) {
                writer.add(key, dtype: info.dtype, shape: info.shape) { sink in
                    // Computed when the writer reaches this tensor: one patched tensor in memory at a time.
                    let patched = try plan.patchedTensor(for: key)!
                    try patched.withUnsafeBytes { try sink($0) }
                    progress.advance()
                }
            } else {
                writer.add(key, tensor: try base.tensor(named: key))
            }
        }
        try writer.write(to: out)
        progress.finish()
        printSummary(plan.report)
    }

    private func mergedMetadata(_ original: [String: String], stack: [AdapterApplication]) -> [String: String] {
        var metadata = original
        let list = stack.map { app in
            "\((app.adapter.path as NSString).lastPathComponent):\(app.textEncoderWeight):\(app.unetWeight)"
        }
        metadata["adapterhost.merged_adapters"] = list.joined(separator: ",")
        return metadata
    }

    private func printSummary(_ report: PatchReport) {
        if json {
            let object: [String: Any] = [
                "applied": report.applied, "total": report.total, "out": out,
                "skipped": report.skipped.map { ["adapter": $0.adapter, "module": $0.module, "reason": $0.reason] },
                "unclaimed_keys": report.unclaimedKeys.map { ["adapter": $0.adapter, "keys": $0.keys] },
            ]
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("\(report.summary) → \(out)")
        for skipped in report.skipped { print("  skipped \(skipped)") }
        for (adapter, keys) in report.unclaimedKeys {
            print("  \(adapter): \(keys.count) keys no method understood, e.g. \(keys.prefix(3).joined(separator: ", "))")
        }
    }
}

/// One `--adapter` argument: FILE[:WEIGHT[:UNET_WEIGHT]][:dyn=N]. Parsed from the right so
/// that paths containing ':' still work.
struct AdapterSpec: Equatable {
    var path: String
    var weight: Float = 1
    var unetWeight: Float? = nil
    var dynRank: Int? = nil

    init(parsing spec: String) throws {
        var parts = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var numbers: [Float] = []
        while parts.count > 1 {
            let last = parts.last!
            if last.hasPrefix("dyn="), let n = Int(last.dropFirst(4)), n > 0, dynRank == nil {
                dynRank = n
            } else if let value = Float(last), numbers.count < 2 {
                numbers.insert(value, at: 0)
            } else {
                break
            }
            parts.removeLast()
        }
        path = parts.joined(separator: ":")
        guard !path.isEmpty else { throw ValidationError("'\(spec)': no adapter file named") }
        if let first = numbers.first { weight = first }
        if numbers.count == 2 { unetWeight = numbers[1] }
    }
}
