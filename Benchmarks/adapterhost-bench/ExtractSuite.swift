import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

// `lora-extract`: extracting a rank-32 LoRA from two SD1.5-shaped UNets (F16, diffusers keys in
// one file each) with `adapterhost extract` run as a child process, best of k runs.
// tools/bench_lora_peers.py extract runs kohya extract_lora_from_models.py's loop (full
// torch.linalg.svd per layer, clamp at the 0.99 quantile) on the same files, and computes both
// sides' per-layer reconstruction errors ‖Δ − up·down·scale‖_F.
//
//   lora-extract [--runs 1] [--dir /tmp/adapterhost-bench-lora] [--rank 32]
//
// The tuned UNet is the base plus, on kohya's target layers, a fine-tune-like change: a
// rank-64 part with a decaying spectrum (0.93^i) plus 10% noise (relative to its entries).

func ensureSD15UNetPair(base: String, tuned: String) throws {
    if FileManager.default.fileExists(atPath: base) && FileManager.default.fileExists(atPath: tuned) { return }
    FileHandle.standardError.write(Data("generating \(base) and \(tuned)…\n".utf8))
    let shapes = sd15UNetShapes()
    let model = randomModel(shapes, dtype: .f16)
    let targets = Set(sd15LoRATargets().filter { $0.layer.part == .unet }.map { "unet.\($0.layer.path).weight" })
    var baseWriter = SafeTensorsWriter(), tunedWriter = SafeTensorsWriter()
    for (i, key) in model.keys.enumerated() {
        let w = model.tensor(key)!
        baseWriter.add(key, tensor: w)
        guard targets.contains(key) else { tunedWriter.add(key, tensor: w); continue }
        let out = w.shape[0], inFeatures = w.count / out, r = min(64, out, inFeatures)
        var rng = BenchRandom(state: UInt64(90_000 + i))
        let a = Tensor(shape: [out, r], values: (0..<(out * r)).map { _ in rng.nextFloat() })
        let b = Tensor(shape: [r, inFeatures], values: (0..<(r * inFeatures)).map { _ in rng.nextFloat() })
        let decay = Tensor(shape: [1, r], values: (0..<r).map { Float(pow(0.93, Double($0))) })
        // Entries of the low-rank part are ~√r·(1/3)·scale; keep the change ~2% of the weights' range.
        let bound = 1 / Float(inFeatures).squareRoot()
        let scale = Double(0.02 * bound) / (Double(r).squareRoot() / 3)
        let lowRank = (a * decay).matmul(b).scaled(by: scale)
        let noise = Tensor(shape: [out, inFeatures], values: (0..<(out * inFeatures)).map { _ in rng.nextFloat() })
            .scaled(by: 0.1 * 0.02 * Double(bound))
        tunedWriter.add(key, tensor: (w.to(.f32) + (lowRank + noise).reshaped(w.shape)).to(.f16))
    }
    try baseWriter.write(to: base)
    try tunedWriter.write(to: tuned)
}

func runExtractSuite(arguments: [String]) throws -> [Measurement] {
    let runs = option("--runs", in: arguments).flatMap { Int($0) } ?? 1
    let rank = option("--rank", in: arguments).flatMap { Int($0) } ?? 32
    let dir = option("--dir", in: arguments) ?? "/tmp/adapterhost-bench-lora"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let base = "\(dir)/unet_base_f16.safetensors", tuned = "\(dir)/unet_tuned_f16.safetensors"
    let out = "\(dir)/extract_ours_r\(rank).safetensors"
    try ensureSD15UNetPair(base: base, tuned: tuned)
    let binary = try adapterhostBinary()
    var best = Double.infinity, worst = 0.0, peak = 0.0
    for _ in 0..<max(runs, 1) {
        try? FileManager.default.removeItem(atPath: out)
        let r = try runChild(binary, ["extract", "--base", base, "--tuned", tuned, "--rank", String(rank), "--out", out, "--quiet"])
        guard r.status == 0 else { throw BenchChildError(description: "adapterhost extract exited with \(r.status)") }
        best = min(best, r.seconds)
        worst = max(worst, r.seconds)
        peak = max(peak, r.peakMiB)
    }
    return [
        Measurement(name: "lora_extract_sd15_r\(rank)", value: best, unit: "s", better: .lower, bestSeconds: best,
                    spread: worst / best, note: "adapterhost extract (UNet, \(sd15LoRATargets().filter { $0.layer.part == .unet }.count) layers); output \(out)"),
        Measurement(name: "lora_extract_sd15_r\(rank)_peak_rss", value: peak, unit: "MiB", better: .lower, bestSeconds: best,
                    spread: 1, note: "child maxrss"),
    ]
}
