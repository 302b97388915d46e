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
        Add :dyn=N to use only the first N ranks. Adapters may be .safetensors or PyTorch pickles \
        (.pt, .ckpt, .bin; read without executing anything). LoRA/LyCORIS files and DreamBooth \
        differences merge; textual-inversion embeddings and hypernetworks change no weight, so \
        they are refused. A DreamBooth difference applies only to the base file it was made from \
        unless --force. The output has the same keys, shapes and dtypes \
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
    @Flag(help: "Apply a DreamBooth difference to a checkpoint other than its recorded base.") var force = false
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
            let adapter = try registry.load(openAdapterSource(parsed.path))
            try Self.checkMergeable(adapter)
            stack.append(AdapterApplication(adapter: adapter, weight: parsed.weight,
                                            unetWeight: parsed.unetWeight, dynRank: parsed.dynRank))
        }
        let plan = try PatchPlan(model: model, stack: stack, force: force)
        if force, let mismatched = try stack.first(where: { app in
            guard let required = app.adapter.requiredBaseHash else { return false }
            return try model.fileSHA256() != required
        }) {
            printWarning("\(mismatched.adapter.path) was made from another base file; applied anyway (--force)")
        }
        let base = try SafeTensorsFile(path: self.base)
        var writer = SafeTensorsWriter(metadata: mergedMetadata(base.metadata, stack: stack))
        writer.inputPaths = [self.base] + stack.map(\.adapter.path)
        let progress = ProgressBar(label: "merging", total: plan.touchedKeys.count, enabled: !quiet)
        // Patched tensors are computed on a background thread ahead of the writer (bounded), so
        // computing overlaps writing; each input tensor's pages leave this process's resident
        // set once written (they stay in the page cache), so memory stays near the working set.
        let prefetcher = PatchPrefetcher(plan: plan, order: PatchPrefetcher.writerOrder(plan.touchedKeys, base: base),
                                         budgetBytes: 256 << 20)
        defer { prefetcher.stop() }
        for info in base.tensorInfos {
            let key = info.name
            let input = try base.tensor(named: key)
            if plan.touches(key) {
                writer.add(key, dtype: info.dtype, shape: info.shape) { sink in
                    let patched = try prefetcher.take(key)
                    try patched.withUnsafeBytes { try sink($0) }
                    releaseMappedPages(of: input)
                    progress.advance()
                }
            } else {
                writer.add(key, dtype: info.dtype, shape: info.shape) { sink in
                    try input.withUnsafeBytes { try sink($0) }
                    releaseMappedPages(of: input)
                }
            }
        }
        try writer.write(to: out)
        progress.finish()
        printSummary(plan.report)
    }

    /// Refuses an adapter that changes no weight: embeddings (textual inversion) live in the
    /// prompt and hypernetworks in the attention's context, neither in the checkpoint's tensors.
    static func checkMergeable(_ adapter: Adapter) throws {
        guard adapter.modules.isEmpty else { return }
        let what: String
        if !adapter.contextTransforms.isEmpty {
            what = "a hypernetwork: it transforms the attention's context at run time and has no weights to merge (use <hypernet:NAME:W> with generate)"
        } else if !adapter.embeddings.isEmpty {
            what = "a textual-inversion embedding: it adds token vectors to the prompt and has no weights to merge (use its name in the prompt with generate --embeddings-dir)"
        } else {
            what = "holds nothing that changes a weight"
        }
        throw CommandFailure("\(adapter.path): \(what)")
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

/// Computes a plan's patched tensors on one background thread, in the order the writer will
/// ask for them, holding at most `budgetBytes` of finished tensors. `take` returns a finished
/// tensor, waits for one being computed, or computes one the worker has not reached itself —
/// so a wrong order guess costs overlap, never correctness.
final class PatchPrefetcher {
    private let plan: PatchPlan
    private let order: [String]
    private let budget: Int
    private let condition = NSCondition()
    private var ready: [String: Result<Tensor, Error>] = [:]
    private var readyBytes = 0
    private var computing: String?
    private var claimed = Set<String>()
    private var next = 0
    private var stopped = false
    /// The worker has returned.
    private var finished = false

    init(plan: PatchPlan, order: [String], budgetBytes: Int) {
        self.plan = plan
        self.order = order
        self.budget = budgetBytes
        let thread = Thread { [self] in work() }
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// The writer's order for `keys`: the reference layout orders tensors by dtype (F64, F32,
    /// BF16, F16, … descending), then by name bytes.
    static func writerOrder(_ keys: [String], base: SafeTensorsFile) -> [String] {
        let rank: [DType: Int] = [.f64: 4, .f32: 3, .bf16: 2, .f16: 1]
        return keys.sorted { a, b in
            let ra = rank[(try? base.info(named: a).dtype) ?? .u8] ?? 0, rb = rank[(try? base.info(named: b).dtype) ?? .u8] ?? 0
            return ra != rb ? ra > rb : a.utf8.lexicographicallyPrecedes(b.utf8)
        }
    }

    private func work() {
        defer {
            condition.lock()
            finished = true
            condition.broadcast()
            condition.unlock()
        }
        while true {
            condition.lock()
            while !stopped && next < order.count && (claimed.contains(order[next]) || readyBytes >= budget) {
                if claimed.contains(order[next]) { next += 1 } else { condition.wait() }
            }
            guard !stopped, next < order.count else { condition.unlock(); return }
            let key = order[next]
            next += 1
            computing = key
            condition.unlock()
            let result = Result { try plan.patchedTensor(for: key)! }
            condition.lock()
            computing = nil
            ready[key] = result
            readyBytes += (try? result.get().byteCount) ?? 0
            condition.broadcast()
            condition.unlock()
        }
    }

    /// The patched tensor for `key` (a key the plan touches).
    func take(_ key: String) throws -> Tensor {
        condition.lock()
        while true {
            if let result = ready.removeValue(forKey: key) {
                readyBytes -= (try? result.get().byteCount) ?? 0
                condition.broadcast()
                condition.unlock()
                return try result.get()
            }
            if computing == key { condition.wait(); continue }
            claimed.insert(key)
            condition.unlock()
            return try plan.patchedTensor(for: key)!
        }
    }

    /// Stops the worker and waits for it to leave (it finishes the tensor it is computing):
    /// the process may exit right after, and a thread still running then can crash the exit
    /// (seen as SIGSEGV when a merge fails early on a loaded machine).
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
    }
}

/// Drops a memory-mapped tensor's whole pages from this process's resident set (the page cache
/// keeps them, and a later read faults them back in). A no-op for owned storage.
func releaseMappedPages(of tensor: Tensor) {
    guard tensor.storage.isMapped, tensor.byteCount > 0 else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = Int(bitPattern: tensor.baseAddress), end = start + tensor.byteCount
    let lo = (start + page - 1) / page * page, hi = end / page * page
    // Only whole pages inside this tensor: neighbours' bytes on a shared page stay mapped.
    if hi > lo { _ = madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, Int32(MADV_DONTNEED)) }
}

/// A command's refusal, printed as one line (`ValidationError` would add the usage text).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
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
