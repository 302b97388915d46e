#if canImport(Glibc)
import Glibc
#endif
import CKernels
import Foundation
import Host
import LoRA
import Runtime
import Tensor

// `unet` and `vae`: one Stable Diffusion 1.5 UNet call and one VAE decode at real shapes, on
// random weights with SD1.5's exact keys and shapes (diffusers naming, built in memory), timed
// like everything else here (warmup, best of k). tools/bench_unet_peers.py measures diffusers'
// UNet2DConditionModel / AutoencoderKL on the same shapes with torch (2 threads, eval, no_grad).
//
//   unet [--runs 3] [--batch 2] [--latent 64] [--weights f32|f16] [--modes base,bypass,merged]
//                   [--rank 32] [--profile]
//   vae  [--runs 3] [--latent 64] [--weights f32|f16] [--profile]
//
// --profile: one more call with NetworkProfiler on; its per-step table goes to stderr.
//
// Modes: base (no adapters); bypass (a rank-r kohya LoRA, loaded by the LoRA method, on every
// transformer linear layer and SD1's 1×1 proj_in/proj_out, applied at run time through
// BypassPatch); merged (the same adapter merged into the weights by PatchEngine first: the
// call itself is unchanged).

/// SD1.5's UNet tensors (diffusers keys, `unet.` prefix) with their shapes, in model order.
func sd15UNetShapes() -> [(String, [Int])] {
    var out: [(String, [Int])] = []
    func conv(_ p: String, _ o: Int, _ i: Int, _ k: Int) { out += [("\(p).weight", [o, i, k, k]), ("\(p).bias", [o])] }
    func linear(_ p: String, _ o: Int, _ i: Int, bias: Bool = true) {
        out.append(("\(p).weight", [o, i]))
        if bias { out.append(("\(p).bias", [o])) }
    }
    func norm(_ p: String, _ c: Int) { out += [("\(p).weight", [c]), ("\(p).bias", [c])] }
    func resnet(_ p: String, _ i: Int, _ o: Int) {
        norm("\(p).norm1", i); conv("\(p).conv1", o, i, 3); linear("\(p).time_emb_proj", o, 1280)
        norm("\(p).norm2", o); conv("\(p).conv2", o, o, 3)
        if i != o { conv("\(p).conv_shortcut", o, i, 1) }
    }
    func transformer(_ p: String, _ c: Int) {
        norm("\(p).norm", c); conv("\(p).proj_in", c, c, 1)
        let b = "\(p).transformer_blocks.0"
        norm("\(b).norm1", c)
        for x in ["q", "k", "v"] { linear("\(b).attn1.to_\(x)", c, c, bias: false) }
        linear("\(b).attn1.to_out.0", c, c)
        norm("\(b).norm2", c)
        linear("\(b).attn2.to_q", c, c, bias: false)
        linear("\(b).attn2.to_k", c, 768, bias: false); linear("\(b).attn2.to_v", c, 768, bias: false)
        linear("\(b).attn2.to_out.0", c, c)
        norm("\(b).norm3", c)
        linear("\(b).ff.net.0.proj", 8 * c, c); linear("\(b).ff.net.2", c, 4 * c)
        conv("\(p).proj_out", c, c, 1)
    }
    let channels = [320, 640, 1280, 1280], attention = [true, true, true, false]
    conv("conv_in", 320, 4, 3)
    linear("time_embedding.linear_1", 1280, 320); linear("time_embedding.linear_2", 1280, 1280)
    var output = channels[0]
    for (i, c) in channels.enumerated() {
        let input = output
        output = c
        for j in 0..<2 {
            resnet("down_blocks.\(i).resnets.\(j)", j == 0 ? input : output, output)
            if attention[i] { transformer("down_blocks.\(i).attentions.\(j)", output) }
        }
        if i < channels.count - 1 { conv("down_blocks.\(i).downsamplers.0.conv", output, output, 3) }
    }
    resnet("mid_block.resnets.0", 1280, 1280); transformer("mid_block.attentions.0", 1280); resnet("mid_block.resnets.1", 1280, 1280)
    let reversed = Array(channels.reversed()), upAttention = Array(attention.reversed())
    output = reversed[0]
    for i in 0..<4 {
        let previous = output
        output = reversed[i]
        let input = reversed[min(i + 1, 3)]
        for j in 0..<3 {
            let skip = j == 2 ? input : output
            resnet("up_blocks.\(i).resnets.\(j)", (j == 0 ? previous : output) + skip, output)
            if upAttention[i] { transformer("up_blocks.\(i).attentions.\(j)", output) }
        }
        if i < 3 { conv("up_blocks.\(i).upsamplers.0.conv", output, output, 3) }
    }
    norm("conv_norm_out", 320); conv("conv_out", 4, 320, 3)
    return out.map { ("unet." + $0.0, $0.1) }
}

/// SD1.5's VAE decoder tensors (`vae.` prefix, diffusers keys) and post_quant_conv.
func sd15VAEDecoderShapes() -> [(String, [Int])] {
    var out: [(String, [Int])] = []
    func conv(_ p: String, _ o: Int, _ i: Int, _ k: Int) { out += [("\(p).weight", [o, i, k, k]), ("\(p).bias", [o])] }
    func norm(_ p: String, _ c: Int) { out += [("\(p).weight", [c]), ("\(p).bias", [c])] }
    func resnet(_ p: String, _ i: Int, _ o: Int) {
        norm("\(p).norm1", i); conv("\(p).conv1", o, i, 3); norm("\(p).norm2", o); conv("\(p).conv2", o, o, 3)
        if i != o { conv("\(p).conv_shortcut", o, i, 1) }
    }
    conv("post_quant_conv", 4, 4, 1)
    conv("decoder.conv_in", 512, 4, 3)
    resnet("decoder.mid_block.resnets.0", 512, 512)
    norm("decoder.mid_block.attentions.0.group_norm", 512)
    for x in ["to_q", "to_k", "to_v", "to_out.0"] {
        out += [("decoder.mid_block.attentions.0.\(x).weight", [512, 512]), ("decoder.mid_block.attentions.0.\(x).bias", [512])]
    }
    resnet("decoder.mid_block.resnets.1", 512, 512)
    let reversed = [512, 512, 256, 128]
    var output = reversed[0]
    for i in 0..<4 {
        let previous = output
        output = reversed[i]
        for j in 0..<3 { resnet("decoder.up_blocks.\(i).resnets.\(j)", j == 0 ? previous : output, output) }
        if i < 3 { conv("decoder.up_blocks.\(i).upsamplers.0.conv", output, output, 3) }
    }
    norm("decoder.conv_norm_out", 128); conv("decoder.conv_out", 3, 128, 3)
    return out.map { ("vae." + $0.0, $0.1) }
}

/// Random weights for `shapes` as torch's default init draws them: weights and biases
/// uniform in ±1/√fan_in, norm scales 1 and shifts 0. Stored as `dtype` (F32 or F16; F16 is
/// generated in chunks, so building never holds an F32 copy of a large tensor).
func randomModel(_ shapes: [(String, [Int])], dtype: DType, family: ModelFamily = .sd1) -> ModelWeights {
    precondition(dtype == .f32 || dtype == .f16, "random weights are F32 or F16")
    var tensors: [String: Tensor] = [:]
    var fanIn: [String: Int] = [:]
    for (key, shape) in shapes where key.hasSuffix(".weight") && shape.count >= 2 {
        fanIn[String(key.dropLast(".weight".count))] = shape.dropFirst().reduce(1, *)
    }
    for (index, (key, shape)) in shapes.enumerated() {
        let stem = String(key[..<key.lastIndex(of: ".")!])
        let count = shape.reduce(1, *)
        // GroupNorm/LayerNorm (no fan-in): scale 1, shift 0.
        let bound: Float? = fanIn[stem].map { 1 / Float($0).squareRoot() }
        let constant: Float = key.hasSuffix(".weight") ? 1 : 0
        let t = Tensor(uninitialized: shape, dtype: dtype)
        let seed = UInt64(index + 1)
        let base = t.baseAddress
        Parallel.forChunks(count) { r in
            var rng = BenchRandom(state: seed &* 0x1000_0000 &+ UInt64(r.lowerBound))
            var chunk = [Float](repeating: 0, count: min(r.count, 1 << 16))
            var i = r.lowerBound
            while i < r.upperBound {
                let n = min(chunk.count, r.upperBound - i)
                for j in 0..<n { chunk[j] = bound.map { rng.nextFloat() * $0 } ?? constant }
                chunk.withUnsafeBufferPointer { c in
                    if dtype == .f32 {
                        (base.assumingMemoryBound(to: Float.self) + i).update(from: c.baseAddress!, count: n)
                    } else {
                        ah_f32_to_f16(c.baseAddress!, base.assumingMemoryBound(to: UInt16.self) + i, n)
                    }
                }
                i += n
            }
        }
        tensors[key] = t
    }
    return ModelWeights(path: "<random SD1.5>", keys: shapes.map(\.0), tensors: tensors, naming: .diffusers, family: family)
}

/// A LoRA-like module built in memory (ΔW = up·down, LoRA's forward form), for suites that
/// want a bypass adapter without a file (TextEncoderSuite uses it).
final class BenchLoRAModule: LinearAdapterModule {
    let name: String
    let moduleType = "lora"
    let down: Tensor // [r, in]
    let up: Tensor   // [out, r]

    init(name: String, outFeatures: Int, inFeatures: Int, rank: Int, seed: UInt64) {
        self.name = name
        var rng = BenchRandom(state: seed)
        down = Tensor(shape: [rank, inFeatures], values: (0..<(rank * inFeatures)).map { _ in rng.nextFloat() * 0.05 })
        up = Tensor(shape: [outFeatures, rank], values: (0..<(outFeatures * rank)).map { _ in rng.nextFloat() * 0.05 })
    }

    var rank: Int? { down.shape[0] }

    func unitDelta(dynRank: Int?) throws -> ModuleDelta { ModuleDelta(weight: up.matmul(down)) }

    func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? {
        guard case .linear = layer else { return nil }
        return x.matmul(down.transposed()).scaled(by: Double(options.strength)).matmul(up.transposed())
    }
}

/// A kohya-format rank-`rank` LoRA on every transformer linear layer (kohya's default UNet
/// targets: attention q/k/v/out, feed-forward, and SD1's 1×1 proj_in/proj_out), loaded by the
/// real LoRA method from an in-memory file, so bypass mode runs LoRA's own forward terms.
func benchLoRA(for model: ModelWeights, rank: Int) throws -> Adapter {
    var tensors: [(String, Tensor)] = []
    for (i, key) in model.keys.enumerated() where key.hasSuffix(".weight") && key.contains(".attentions.") {
        guard let shape = model.tensor(key)?.shape, shape.count == 2 || (shape.count == 4 && shape[2] == 1) else { continue }
        let stem = "lora_unet_" + key.dropFirst("unet.".count).dropLast(".weight".count).replacingOccurrences(of: ".", with: "_")
        let conv = shape.count == 4
        var rng = BenchRandom(state: UInt64(i + 1))
        let down = Tensor(shape: conv ? [rank, shape[1], 1, 1] : [rank, shape[1]],
                          values: (0..<(rank * shape[1])).map { _ in rng.nextFloat() * 0.05 })
        let up = Tensor(shape: conv ? [shape[0], rank, 1, 1] : [shape[0], rank],
                        values: (0..<(rank * shape[0])).map { _ in rng.nextFloat() * 0.05 })
        tensors += [("\(stem).lora_down.weight", down), ("\(stem).lora_up.weight", up),
                    ("\(stem).alpha", Tensor(scalar: Float(rank)))]
    }
    let source = InMemoryTensorSource(path: "<bench lora rank \(rank)>", tensors: tensors)
    let method = LoRAFamilyMethod(.lora)
    return try method.load(claims: method.claim(keys: source.keys, metadata: [:]), from: source)
}

/// Peak resident memory of this process so far, in MiB.
func peakRSSMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// With `--profile`, runs `call` once more with the network profiler on and prints its table.
func profileIfAsked(_ arguments: [String], _ call: () throws -> Void) rethrows {
    guard arguments.contains("--profile") else { return }
    NetworkProfiler.reset()
    NetworkProfiler.isEnabled = true
    let start = now()
    try call()
    let total = now() - start
    NetworkProfiler.isEnabled = false
    var lines = [String(format: "profile: %.3f s total", total)]
    var covered = 0.0
    for row in NetworkProfiler.report {
        covered += row.seconds
        let rate = row.gflops.map { String(format: "%6.1f GFLOP/s", $0) } ?? ""
        lines.append("  " + row.step.padding(toLength: 20, withPad: " ", startingAt: 0)
                     + String(format: "%8.3f s %5.1f%% %6d calls  ", row.seconds, 100 * row.seconds / total, row.calls) + rate)
    }
    // Steps nest (conv.unfold inside conv*, prefill inside layers): "other" is only indicative.
    lines.append("  " + "(other)".padding(toLength: 20, withPad: " ", startingAt: 0)
                 + String(format: "%8.3f s", total - covered))
    FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
}

/// Deterministic input of `shape`, uniform in [-1, 1).
func benchInput(_ shape: [Int], seed: UInt64) -> Tensor {
    var rng = BenchRandom(state: seed)
    return Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.nextFloat() })
}

/// Tuning knobs for experiments, set before the networks are built: `--tiled-min-plane N`
/// (Conv2d.defaultTiledMinimumPlane) and `--linear-row-block N` (Linear.defaultTiledRowBlock,
/// 0 = one multi-threaded GEMM per linear layer).
func applyTuningOptions(_ arguments: [String]) {
    if let plane = option("--tiled-min-plane", in: arguments).flatMap({ Int($0) }) { Conv2d.defaultTiledMinimumPlane = plane }
    if let block = option("--linear-row-block", in: arguments).flatMap({ Int($0) }) { Linear.defaultTiledRowBlock = block }
}

func runUNetSuite(arguments: [String]) throws -> [Measurement] {
    applyTuningOptions(arguments)
    let runs = option("--runs", in: arguments).flatMap { Int($0) } ?? 3
    let batch = option("--batch", in: arguments).flatMap { Int($0) } ?? 2
    let latent = option("--latent", in: arguments).flatMap { Int($0) } ?? 64
    let rank = option("--rank", in: arguments).flatMap { Int($0) } ?? 32
    let dtype: DType = option("--weights", in: arguments) == "f16" ? .f16 : .f32
    let modes = (option("--modes", in: arguments) ?? "base,bypass,merged").split(separator: ",").map(String.init)

    let model = randomModel(sd15UNetShapes(), dtype: dtype)
    let weightBytes = model.keys.reduce(0) { $0 + model.tensor($1)!.byteCount }
    let unet = try UNet(weights: model, config: .standard(for: .sd1))
    let sample = benchInput([batch, 4, latent, latent], seed: 11), context = benchInput([batch, 77, 768], seed: 12)
    let tag = "unet_sd15_b\(batch)_\(latent)" + (dtype == .f16 ? "_f16" : "")
    let shapeNote = "latent [\(batch), 4, \(latent), \(latent)], 77 tokens, weights \(dtype.rawValue) \(weightBytes >> 20) MiB"
    var results: [Measurement] = []
    var baseTime: Double?

    func measure(_ name: String, _ hooks: GenerationHooks, _ note: String) throws {
        var failure: Error?
        let time = timeBest(warmup: 1, runs: runs) {
            do { blackHole(try unet(sample, timestep: 500, context: context, hooks: hooks)) } catch { failure = error }
        }
        if let failure { throw failure }
        let relative = baseTime.map { String(format: ", %.3f× base", time.best / $0) } ?? ""
        results.append(Measurement(name: name, value: time.best, unit: "s", better: .lower, bestSeconds: time.best,
                                   spread: time.worst / time.best,
                                   note: "\(shapeNote); \(note)\(relative); peak RSS \(Int(peakRSSMiB())) MiB"))
        FileHandle.standardError.write(Data("\(name): \(String(format: "%.3f", time.best)) s\(relative)\n".utf8))
    }

    if modes.contains("base") {
        try profileIfAsked(arguments) { blackHole(try unet(sample, timestep: 500, context: context)) }
        try measure(tag, .none, "no adapters")
        baseTime = results.last?.bestSeconds
        results.append(Measurement(name: tag + "_peak_rss", value: peakRSSMiB(), unit: "MiB", better: .lower,
                                   bestSeconds: 0, spread: 1,
                                   note: String(format: "%.2f× the weights (%d MiB), workspace %d MiB", peakRSSMiB() / Double(weightBytes >> 20),
                                                weightBytes >> 20, unet.workspace.byteCount >> 20)))
    }
    let adapter = try benchLoRA(for: model, rank: rank)
    let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 1)])
    if modes.contains("bypass") {
        let bypass = GenerationHooks(bypass: BypassPatch(plan: plan))
        try profileIfAsked(arguments) { blackHole(try unet(sample, timestep: 500, context: context, hooks: bypass)) }
        try measure(tag + "_bypass_lora\(rank)", bypass,
                    "rank-\(rank) LoRA on \(adapter.modules.count) layers in bypass mode")
    }
    if modes.contains("merged") {
        let engine = PatchEngine(model: model)
        try engine.apply(plan)
        try measure(tag + "_merged_lora\(rank)", .none, "the same LoRA merged into the weights")
        engine.restore()
    }
    return results
}

func runVAESuite(arguments: [String]) throws -> [Measurement] {
    applyTuningOptions(arguments)
    let runs = option("--runs", in: arguments).flatMap { Int($0) } ?? 3
    let latent = option("--latent", in: arguments).flatMap { Int($0) } ?? 64
    let dtype: DType = option("--weights", in: arguments) == "f16" ? .f16 : .f32
    let model = randomModel(sd15VAEDecoderShapes(), dtype: dtype)
    let weightBytes = model.keys.reduce(0) { $0 + model.tensor($1)!.byteCount }
    let vae = try AutoencoderKL(weights: model, config: .standard(for: .sd1))
    let latents = benchInput([1, 4, latent, latent], seed: 21)
    try profileIfAsked(arguments) { blackHole(try vae.decode(latents)) }
    var failure: Error?
    let time = timeBest(warmup: 1, runs: runs) {
        do { blackHole(try vae.decode(latents)) } catch { failure = error }
    }
    if let failure { throw failure }
    let name = "vae_decode_sd15_\(latent)" + (dtype == .f16 ? "_f16" : "")
    FileHandle.standardError.write(Data("\(name): \(String(format: "%.3f", time.best)) s\n".utf8))
    return [Measurement(name: name, value: time.best, unit: "s", better: .lower, bestSeconds: time.best,
                        spread: time.worst / time.best,
                        note: "latent [1, 4, \(latent), \(latent)] → \(8 * latent)², decoder weights \(dtype.rawValue) \(weightBytes >> 20) MiB; peak RSS \(Int(peakRSSMiB())) MiB")]
}
