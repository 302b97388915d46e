import Foundation
import Host
import Runtime
import Tensor

// `textencoder`: one CLIP text-encoder call at Stable Diffusion's real shapes, on random weights
// with the real keys and shapes (diffusers naming, built in memory), timed like everything else
// here (warmup, best of k). tools/bench_text_encoder_peers.py times transformers' CLIPTextModel
// on the same shapes and ids with torch (2 threads, eval, no_grad).
//
//   textencoder [--runs 5] [--batch 2] [--model clip-l|bigg] [--weights f32|f16] [--modes base,bypass]
//               [--rank 32]
//
// clip-l: SD1.5's encoder (width 768, 12 layers); bigg: SDXL's second (1280, 32 layers,
// projection). Input: `batch` sequences of 77 ids (start, 20 prompt tokens, end-of-text
// padding), `last_hidden_state` plus pooled output. Modes: base; bypass (a rank-r LoRA-like
// adapter on every linear layer, applied at run time through BypassPatch).

/// A CLIP text tower's tensors (diffusers keys under `prefix`) with their shapes.
func clipTextEncoderShapes(prefix: String, width: Int, layers: Int, mlp: Int, projection: Bool) -> [(String, [Int])] {
    var out: [(String, [Int])] = []
    let t = prefix + "text_model."
    out.append(("\(t)embeddings.token_embedding.weight", [49408, width]))
    out.append(("\(t)embeddings.position_embedding.weight", [77, width]))
    for i in 0..<layers {
        let l = "\(t)encoder.layers.\(i)."
        for (name, o, inWidth) in [("self_attn.q_proj", width, width), ("self_attn.k_proj", width, width),
                                   ("self_attn.v_proj", width, width), ("self_attn.out_proj", width, width),
                                   ("mlp.fc1", mlp, width), ("mlp.fc2", width, mlp)] {
            out += [("\(l)\(name).weight", [o, inWidth]), ("\(l)\(name).bias", [o])]
        }
        for norm in ["layer_norm1", "layer_norm2"] { out += [("\(l)\(norm).weight", [width]), ("\(l)\(norm).bias", [width])] }
    }
    out += [("\(t)final_layer_norm.weight", [width]), ("\(t)final_layer_norm.bias", [width])]
    if projection { out.append(("\(prefix)text_projection.weight", [width, width])) }
    return out
}

/// The ids both sides encode: start, 20 prompt tokens, end-of-text padding.
func benchPromptIDs(batch: Int) -> [[Int32]] {
    (0..<batch).map { (b: Int) -> [Int32] in
        let body: [Int32] = (0..<20).map { (i: Int) -> Int32 in Int32((320 + 37 * i + 101 * b) % 49000 + 256) }
        return [CLIPTokenizer.startOfTextID] + body + [Int32](repeating: CLIPTokenizer.endOfTextID, count: 56)
    }
}

func runTextEncoderSuite(arguments: [String]) throws -> [Measurement] {
    let runs = option("--runs", in: arguments).flatMap { Int($0) } ?? 5
    let batch = option("--batch", in: arguments).flatMap { Int($0) } ?? 2
    let modelName = option("--model", in: arguments) ?? "clip-l"
    let dtype: DType = option("--weights", in: arguments) == "f16" ? .f16 : .f32
    let modes = (option("--modes", in: arguments) ?? "base").split(separator: ",").map(String.init)
    let rank = option("--rank", in: arguments).flatMap { Int($0) } ?? 32
    let isBigG = modelName == "bigg"
    guard isBigG || modelName == "clip-l" else { throw TextEncoderError.badInput("--model is clip-l or bigg, not \(modelName)") }

    let part = ModelPart.textEncoder(isBigG ? 1 : 0)
    let shapes = isBigG
        ? clipTextEncoderShapes(prefix: "text_encoder_2.", width: 1280, layers: 32, mlp: 5120, projection: true)
        : clipTextEncoderShapes(prefix: "text_encoder.", width: 768, layers: 12, mlp: 3072, projection: false)
    let model = randomModel(shapes, dtype: dtype, family: isBigG ? .sdxl : .sd1)
    let encoder = try TextEncoder(weights: model, part: part)
    let ids = benchPromptIDs(batch: batch)
    let pooled = TextEncoder.pooledPositions(ids)
    let parameters = shapes.reduce(0) { $0 + $1.1.reduce(1, *) }

    var results: [Measurement] = []
    for mode in modes {
        var hooks = GenerationHooks.none
        var note = "\(dtype.rawValue) weights (\(parameters / 1_000_000)M), \(BLAS.threadCount) BLAS threads"
        switch mode {
        case "base":
            break
        case "bypass":
            var modules: [any AdapterModule] = []
            for (i, (key, shape)) in shapes.enumerated() where key.hasSuffix("_proj.weight") || (key.contains(".mlp.fc") && key.hasSuffix(".weight")) {
                modules.append(BenchLoRAModule(name: String(key.dropLast(".weight".count)), outFeatures: shape[0],
                                               inFeatures: shape[1], rank: rank, seed: UInt64(i + 1)))
            }
            let adapter = Adapter(path: "<bench te lora>", methodIDs: ["lora"], format: "bench", baseModel: model.family,
                                  metadata: [:], modules: modules)
            let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
            hooks = GenerationHooks(bypass: BypassPatch(plan: plan))
            note += ", bypass LoRA rank \(rank) on \(plan.report.applied) layers"
        default:
            throw TextEncoderError.badInput("unknown mode \(mode) (base, bypass)")
        }
        let call = {
            let out = try! encoder.encode(tokens: ids, layer: .last, pooledPositions: pooled, hooks: hooks)
            blackHole(out.hidden)
        }
        let time = timeBest(warmup: 1, runs: runs, call)
        let suffix = mode == "base" ? "" : "_\(mode)"
        results.append(Measurement(name: "textencoder_\(modelName.replacingOccurrences(of: "-", with: ""))_b\(batch)\(suffix)",
                                   value: time.best, unit: "s", better: .lower, bestSeconds: time.best,
                                   spread: time.worst / time.best,
                                   note: note + String(format: ", peak RSS %.0f MiB", peakRSSMiB())))
    }
    return results
}
