// adapterhost-bench: AdapterHost's own benchmark harness (no framework).
//
//   adapterhost-bench <suite> [--json] [options]
//
// Suites: gemm, convert, safetensors-read, blas-info, unet, vae, textencoder. tools/run_benchmarks.sh runs them
// next to tools/bench_peers.py (PyTorch, numpy) and prints the ratios.
import Foundation
import Tensor

let usage = """
usage: adapterhost-bench <suite> [--json] [options]
  gemm              F32 GEMM GFLOP/s       [--sizes 256,1024,4096] [--runs 5]
  convert           conversion Gelem/s     [--elements 67108864] [--runs 5]
  safetensors-read  read a file into F32   --file PATH [--tag NAME] [--runs 3]
  blas-info         OpenBLAS kernel set, as JSON with --json: {core, requested, fromEnv, threads, cores}
  unet              SD1.5 UNet call, s     [--runs 3] [--batch 2] [--latent 64] [--weights f32|f16] [--modes base,bypass,merged] [--rank 32]
  vae               SD1.5 VAE decode, s    [--runs 3] [--latent 64] [--weights f32|f16]
  textencoder       CLIP text encoder, s   [--runs 5] [--batch 2] [--model clip-l|bigg] [--weights f32|f16] [--modes base,bypass] [--rank 32]
  lora-merge        merge a rank-32 LoRA into an SD1.5 F16 checkpoint (adapterhost merge), s + peak MiB  [--runs 3] [--dir D] [--rank 32]
  lora-extract      extract rank 32 from two SD1.5 UNets (adapterhost extract), s  [--runs 1] [--dir D] [--rank 32]
"""

/// `--name value` from the arguments, or nil.
func option(_ name: String, in arguments: [String]) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(2)
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let suite = arguments.first else { fail(usage) }
let json = arguments.contains("--json")
let runs = option("--runs", in: arguments).map { Int($0) ?? 0 }

do {
    switch suite {
    case "blas-info":
        try runBLASInfo(json: json)
    case "gemm":
        let sizes = (option("--sizes", in: arguments) ?? "256,1024,4096").split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty else { fail("gemm: --sizes wants a comma-separated list of sizes") }
        let results = try runGEMM(sizes: sizes, runs: runs ?? 5)
        emit(SuiteReport(suite: suite, machine: .current(), results: results), json: json)
    case "convert":
        let count = option("--elements", in: arguments).flatMap { Int($0) } ?? 64 << 20
        emit(SuiteReport(suite: suite, machine: .current(), results: runConvert(count: count, runs: runs ?? 5)),
             json: json)
    case "safetensors-read":
        guard let path = option("--file", in: arguments) else { fail("safetensors-read: --file PATH is required") }
        let results = try runSafeTensorsRead(path: path, tag: option("--tag", in: arguments), runs: runs ?? 3)
        emit(SuiteReport(suite: suite, machine: .current(), results: results), json: json)
    case "unet":
        emit(SuiteReport(suite: suite, machine: .current(), results: try runUNetSuite(arguments: arguments)), json: json)
    case "vae":
        emit(SuiteReport(suite: suite, machine: .current(), results: try runVAESuite(arguments: arguments)), json: json)
    case "textencoder":
        emit(SuiteReport(suite: suite, machine: .current(), results: try runTextEncoderSuite(arguments: arguments)), json: json)
    case "lora-merge":
        emit(SuiteReport(suite: suite, machine: .current(), results: try runLoRAMergeSuite(arguments: arguments)), json: json)
    case "lora-extract":
        emit(SuiteReport(suite: suite, machine: .current(), results: try runExtractSuite(arguments: arguments)), json: json)
    case "-h", "--help", "help":
        print(usage)
    default:
        fail("unknown suite \(suite)\n" + usage)
    }
} catch {
    fail("\(suite): \(error)")
}
