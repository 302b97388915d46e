#!/usr/bin/env python3
"""The peer side of AdapterHost's benchmarks: the same figures measured with PyTorch (CPU)
and with Python safetensors + numpy, by the same method as `adapterhost-bench`
(warmup, then best of k runs; runs of >= 0.2 s for short calls). Results are JSON with the
same names as adapterhost-bench's, so tools/run_benchmarks.sh can pair them.

    bench_peers.py gemm [--sizes 256,1024,4096] [--runs 5]
    bench_peers.py convert [--elements 67108864] [--runs 5]
    bench_peers.py safetensors-read --file PATH [--tag TAG] [--runs 3]
    bench_peers.py make-file --out PATH --kind f16|mixed [--gb 1.1] [--seed 0]

`make-file` writes the benchmark's input: random F16 (or alternately F16 and BF16) tensors at
Stable-Diffusion-UNet-like shapes, with the reference safetensors writer.

Run with the peers venv (/work/venv/peers/bin/python). Only numbers are printed, as JSON on
stdout; progress goes to stderr.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def time_best(body, runs: int, warmup: int = 1, repetitions: int = 1):
    """Best and worst per-call wall time over `runs` runs of `repetitions` calls."""
    for _ in range(warmup):
        body()
    best, worst = float("inf"), 0.0
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(repetitions):
            body()
        per_call = (time.perf_counter() - start) / repetitions
        best, worst = min(best, per_call), max(worst, per_call)
    return best, worst


def repetitions_for(seconds: float, target: float = 0.2) -> int:
    return max(1, int(-(-target // max(seconds, 1e-9))))


def measurement(name, value, unit, better, best, worst, peer, note=""):
    return {"name": name, "value": value, "unit": unit, "better": better, "bestSeconds": best,
            "spread": worst / best, "peer": peer, "note": note}


def machine_info():
    return {"cores": os.cpu_count(), "torchThreads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "cpuCapability": torch.backends.cpu.get_cpu_capability()}


# MARK: - Suites

def suite_gemm(args):
    results = []
    generator = torch.Generator().manual_seed(1)
    for n in [int(s) for s in args.sizes.split(",")]:
        a = torch.rand(n, n, generator=generator) * 2 - 1
        b = torch.rand(n, n, generator=generator) * 2 - 1
        c = torch.empty(n, n)
        call = lambda: torch.matmul(a, b, out=c)  # noqa: E731  (reused output, like ah_sgemm's C)
        start = time.perf_counter(); call(); single = time.perf_counter() - start
        best, worst = time_best(call, args.runs, repetitions=repetitions_for(single))
        results.append(measurement(f"gemm_n{n}", 2 * n ** 3 / best / 1e9, "GFLOP/s", "higher", best, worst,
                                   "torch.matmul", f"{n}x{n}x{n}, out=, {torch.get_num_threads()} threads"))
    return results


def suite_convert(args):
    count = args.elements
    generator = torch.Generator().manual_seed(2)
    f32 = (torch.rand(count, generator=generator) * 2 - 1) * 4
    f16, bf16 = f32.half(), f32.bfloat16()
    results = []

    def fresh(name, source, convert, what):
        best, worst = time_best(lambda: convert(source), args.runs)
        results.append(measurement(name, count / best / 1e9, "Gelem/s", "higher", best, worst, what,
                                   f"{count >> 20}Mi elements, new output each call"))

    def into(name, source, destination):
        best, worst = time_best(lambda: destination.copy_(source), args.runs)
        results.append(measurement(name, count / best / 1e9, "Gelem/s", "higher", best, worst, "torch copy_",
                                   "into a reused output"))

    fresh("widen_f16_f32", f16, lambda t: t.float(), "torch .float()")
    fresh("widen_bf16_f32", bf16, lambda t: t.float(), "torch .float()")
    fresh("narrow_f32_f16", f32, lambda t: t.half(), "torch .half()")
    fresh("narrow_f32_bf16", f32, lambda t: t.bfloat16(), "torch .bfloat16()")
    wide, narrow_h, narrow_b = torch.empty(count), torch.empty(count, dtype=torch.float16), \
        torch.empty(count, dtype=torch.bfloat16)
    into("widen_f16_f32_into", f16, wide)
    into("widen_bf16_f32_into", bf16, wide)
    into("narrow_f32_f16_into", f32, narrow_h)
    into("narrow_f32_bf16_into", f32, narrow_b)
    return results


def suite_safetensors_read(args):
    from safetensors import safe_open
    import safetensors.numpy
    import safetensors.torch

    tag = f"_{args.tag}" if args.tag else ""
    path = args.file
    size_gb = os.path.getsize(path) / 1e9
    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    results = []

    def read_numpy():
        loaded = safetensors.numpy.load_file(path)
        return {k: v.astype(np.float32) for k, v in loaded.items()}

    def read_torch():
        loaded = safetensors.torch.load_file(path)
        return {k: v.float() for k, v in loaded.items()}

    # numpy has no bfloat16: safetensors.numpy cannot load BF16 tensors at all.
    if "BF16" not in dtypes:
        best, worst = time_best(read_numpy, args.runs)
        results.append(measurement(f"read_all_f32{tag}", best, "s", "lower", best, worst,
                                   "numpy load_file+astype", f"{len(keys)} tensors, {size_gb:.2f} GB"))
    best, worst = time_best(read_torch, args.runs)
    results.append(measurement(f"read_all_f32{tag}", best, "s", "lower", best, worst,
                               "torch load_file+.float()", f"{len(keys)} tensors, {size_gb:.2f} GB"))

    def open_header():
        with safe_open(path, framework="np") as f:
            return list(f.keys())

    start = time.perf_counter(); open_header(); single = time.perf_counter() - start
    best, worst = time_best(open_header, 10, warmup=3, repetitions=repetitions_for(single, 0.05))
    results.append(measurement(f"open_header{tag}", best * 1e3, "ms", "lower", best, worst,
                               "safetensors safe_open+keys", f"{len(keys)} tensors"))
    return results


# MARK: - Benchmark input

def sd_like_shapes():
    """One pass over Stable Diffusion 1.x UNet-like layers: 3x3 convs, attention and
    feed-forward projections, time embedding, plus the small bias/norm vectors around them."""
    shapes = []
    for width, context in [(320, 768), (640, 768), (1280, 768)]:
        for block in range(2):
            shapes += [
                [width, width, 3, 3], [width], [width], [width],                 # resnet conv1 + norm
                [width, 1280], [width],                                          # time embedding proj
                [width, width, 3, 3], [width], [width], [width],                 # resnet conv2 + norm
                [width, width], [width, context], [width, context], [width, width], [width],  # attn2 q k v out
                [width, width], [width, width], [width, width], [width, width], [width],      # attn1
                [width * 8, width], [width * 8], [width, width * 4], [width],     # GEGLU feed-forward
                [width], [width], [width], [width], [width], [width],            # layer norms
            ]
    shapes += [[1280, 320], [1280], [1280, 1280], [1280], [320, 4, 3, 3], [320], [4, 320, 3, 3], [4]]
    return shapes


def make_file(args):
    from safetensors.torch import save_file

    target = int(args.gb * 1e9)
    generator = torch.Generator().manual_seed(args.seed)
    tensors, total, index = {}, 0, 0
    while total < target:
        for shape in sd_like_shapes():
            dtype = torch.bfloat16 if args.kind == "mixed" and index % 2 == 1 else torch.float16
            name = f"model.diffusion_model.layer{index // 64}.param{index % 64}.weight"
            tensors[name] = torch.randn(*shape, generator=generator).to(dtype)
            total += tensors[name].numel() * 2
            index += 1
            if total >= target:
                break
    save_file(tensors, args.out, metadata={"generator": "tools/bench_peers.py make-file", "kind": args.kind})
    log(f"wrote {args.out}: {len(tensors)} tensors, {total / 1e9:.2f} GB of {args.kind} data")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    p = sub.add_parser("gemm"); p.add_argument("--sizes", default="256,1024,4096"); p.add_argument("--runs", type=int, default=5)
    p = sub.add_parser("convert"); p.add_argument("--elements", type=int, default=64 << 20); p.add_argument("--runs", type=int, default=5)
    p = sub.add_parser("safetensors-read"); p.add_argument("--file", required=True); p.add_argument("--tag", default="")
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("make-file"); p.add_argument("--out", required=True)
    p.add_argument("--kind", choices=["f16", "mixed"], default="f16"); p.add_argument("--gb", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args()

    if args.suite == "make-file":
        make_file(args)
        return
    suites = {"gemm": suite_gemm, "convert": suite_convert, "safetensors-read": suite_safetensors_read}
    results = suites[args.suite](args)
    print(json.dumps({"suite": args.suite, "side": "peers", "machine": machine_info(), "results": results},
                     indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
