#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

// `lora-merge`: merging a rank-32 kohya LoRA (every attention, feed-forward and projection layer
// of an SD1.5-shaped UNet and text encoder: 264 modules) into an F16 single-file checkpoint of
// SD1.5's real shapes (random weights), with `adapterhost merge` run as a child process: wall
// time and the child's peak RSS (wait4's ru_maxrss), best of k runs. tools/bench_lora_peers.py
// merge times kohya merge_lora.py's loop (W += ratio·(up @ down)·scale per module, torch, CPU,
// 2 threads) on the same files, then save_file.
//
//   lora-merge [--runs 3] [--dir /tmp/adapterhost-bench-lora] [--rank 32]
//
// The files are generated into --dir on first use (≈2.1 GB checkpoint) and reused.

/// The SD1.5-shaped F16 checkpoint (UNet + CLIP-L, ldm single-file keys) at `path`, made once.
func ensureSD15Checkpoint(at path: String) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    FileHandle.standardError.write(Data("generating \(path)…\n".utf8))
    let shapes = sd15UNetShapes() + clipTextEncoderShapes(prefix: "text_encoder.", width: 768, layers: 12, mlp: 3072, projection: false)
    let model = randomModel(shapes, dtype: .f16)
    let single = try CheckpointConversion.convert(model, to: .singleFile).model
    var writer = SafeTensorsWriter()
    for key in single.keys { writer.add(key, tensor: single.tensor(key)!) }
    try writer.write(to: path)
}

/// kohya's default LoRA targets of SD1.5 (transformer linears and 1×1 projections of the UNet,
/// attention and MLP layers of the text encoder), with their weight shapes.
func sd15LoRATargets() -> [(layer: LoRALayer, shape: [Int])] {
    let names = LoRANameSpace.standard(for: .sd1)
    let shapes = Dictionary(uniqueKeysWithValues: (sd15UNetShapes()
        + clipTextEncoderShapes(prefix: "text_encoder.", width: 768, layers: 12, mlp: 3072, projection: false)).map { ($0.0, $0.1) })
    var out: [(LoRALayer, [Int])] = []
    for layer in names.allLayers {
        let isTarget = layer.part == .unet ? layer.path.contains(".attentions.")
                                           : layer.path.contains(".self_attn.") || layer.path.contains(".mlp.")
        guard isTarget, let shape = shapes["\(layer.component).\(layer.path).weight"] else { continue }
        out.append((layer, shape))
    }
    return out
}

/// A rank-`rank` kohya LoRA (F16 factors, alpha rank/2) on every target of `sd15LoRATargets`.
func ensureSD15LoRA(at path: String, rank: Int) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    let names = LoRANameSpace.standard(for: .sd1)
    var tensors: [(String, Tensor)] = []
    for (i, (layer, shape)) in sd15LoRATargets().enumerated() {
        let name = names.kohyaName(layer)
        var rng = BenchRandom(state: UInt64(7_000 + i))
        let inFeatures = shape[1]
        var downShape = [rank, inFeatures], upShape = [shape[0], rank]
        if shape.count == 4 { downShape += [1, 1]; upShape += [1, 1] }
        let down = Tensor(shape: downShape, values: (0..<(rank * inFeatures)).map { _ in rng.nextFloat() * 0.05 })
        let up = Tensor(shape: upShape, values: (0..<(shape[0] * rank)).map { _ in rng.nextFloat() * 0.05 })
        tensors += [("\(name).lora_down.weight", down.to(.f16)), ("\(name).lora_up.weight", up.to(.f16)),
                    ("\(name).alpha", Tensor(shape: [], values: [Float(rank) / 2]))]
    }
    try LoRAFileWriter.write(tensors, metadata: LoRAMetadataBuilder.kohyaNetwork(
        family: .sd1, dim: String(rank), alpha: LoRAMetadataBuilder.pythonFloat(Double(rank) / 2)), to: path)
}

/// Runs `executable arguments` to completion: wall seconds, the child's peak RSS in MiB, and
/// its exit status (posix_spawn + wait4, so only that child's resources are counted).
func runChild(_ executable: String, _ arguments: [String]) throws -> (seconds: Double, peakMiB: Double, status: Int32) {
    var pid: pid_t = 0
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let start = now()
    let spawned = posix_spawn(&pid, executable, nil, nil, argv, environ)
    guard spawned == 0 else { throw BenchChildError(description: "cannot start \(executable): \(String(cString: strerror(spawned)))") }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
        guard errno == EINTR else { throw BenchChildError(description: "wait4: \(String(cString: strerror(errno)))") }
    }
    let seconds = now() - start
    let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (seconds, Double(usage.ru_maxrss) / 1024, exitStatus)
}

struct BenchChildError: Error, CustomStringConvertible { let description: String }

/// The `adapterhost` binary built next to this one.
func adapterhostBinary() throws -> String {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    let path = here.appendingPathComponent("adapterhost").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw BenchChildError(description: "\(path) not found: build the adapterhost product in the same configuration")
    }
    return path
}

func runLoRAMergeSuite(arguments: [String]) throws -> [Measurement] {
    let runs = option("--runs", in: arguments).flatMap { Int($0) } ?? 3
    let rank = option("--rank", in: arguments).flatMap { Int($0) } ?? 32
    let dir = option("--dir", in: arguments) ?? "/tmp/adapterhost-bench-lora"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let base = "\(dir)/sd15_f16.safetensors", lora = "\(dir)/sd15_lora_r\(rank).safetensors", out = "\(dir)/merged_ours.safetensors"
    try ensureSD15Checkpoint(at: base)
    try ensureSD15LoRA(at: lora, rank: rank)
    let checkpointMiB = Double(try FileManager.default.attributesOfItem(atPath: base)[.size] as! Int) / 1_048_576
    if arguments.contains("--profile") { try profileLoRAMerge(base: base, lora: lora); return [] }
    let binary = try adapterhostBinary()

    var best = Double.infinity, worst = 0.0, peak = 0.0
    for run in 0..<(runs + 1) {   // the first run warms the page cache and is not timed
        try? FileManager.default.removeItem(atPath: out)
        let r = try runChild(binary, ["merge", base, "--adapter", lora, "--out", out, "--quiet"])
        guard r.status == 0 else { throw BenchChildError(description: "adapterhost merge exited with \(r.status)") }
        if run == 0 { continue }
        best = min(best, r.seconds)
        worst = max(worst, r.seconds)
        peak = max(peak, r.peakMiB)
    }
    let modules = sd15LoRATargets().count
    return [
        Measurement(name: "lora_merge_sd15_r\(rank)", value: best, unit: "s", better: .lower, bestSeconds: best,
                    spread: worst / best, note: "adapterhost merge, \(modules) modules, F16 checkpoint \(Int(checkpointMiB)) MiB"),
        Measurement(name: "lora_merge_sd15_r\(rank)_peak_rss", value: peak, unit: "MiB", better: .lower, bestSeconds: best,
                    spread: 1, note: String(format: "child maxrss; %.2f× the checkpoint (target ≤ 1.10×)", peak / checkpointMiB)),
    ]
}

/// `lora-merge --profile`: the in-process parts of a merge, timed separately (plan, patched
/// tensors computed one after another, the untouched tensors' bytes read).
func profileLoRAMerge(base: String, lora: String) throws {
    let t0 = now()
    let model = try ModelWeights.load(path: base)
    let registry = AdapterRegistry()
    try registerLoRAFamily(into: registry)
    let adapter = try registry.load(try SafeTensorsFile(path: lora))
    let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
    let t1 = now()
    var touchedBytes = 0
    for key in plan.touchedKeys {
        let t = try plan.patchedTensor(for: key)!
        touchedBytes += t.byteCount
    }
    let t2 = now()
    var sum: UInt64 = 0
    for key in model.keys where !plan.touches(key) {
        model.tensor(key)!.withUnsafeBytes { raw in
            var i = 0
            while i < raw.count { sum &+= UInt64(raw[i]); i += 4096 }
        }
    }
    let t3 = now()
    let file = try SafeTensorsFile(path: base)
    var writer = SafeTensorsWriter()
    for name in file.names { writer.add(name, tensor: try file.tensor(named: name)) }
    let copy = base + ".copy.tmp"
    try writer.write(to: copy)
    let t4 = now()
    try? FileManager.default.removeItem(atPath: copy)
    print(String(format: "plan %.2f s; %d patched tensors (%.0f MiB) %.2f s; untouched pages touched %.2f s (%llu); plain copy through the writer %.2f s",
                 t1 - t0, plan.touchedKeys.count, Double(touchedBytes) / 1_048_576, t2 - t1, t3 - t2, sum, t4 - t3))
}
