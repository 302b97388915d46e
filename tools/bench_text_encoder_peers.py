#!/usr/bin/env python3
"""The PyTorch side of the text-encoder benchmark: transformers' CLIPTextModel at Stable
Diffusion 1.5's real shapes (OpenAI CLIP ViT-L/14's text tower: width 768, 12 layers, 12 heads,
MLP 3072, quick GELU, 77 positions, 49408 tokens), random-initialised from that config written
inline (no hub access), measured by the same method as `adapterhost-bench textencoder`
(warmup, then best of k runs). Prints JSON with the same measurement names, so
tools/run_benchmarks.sh can pair the two sides.

    bench_text_encoder_peers.py textencoder [--runs 5] [--batch 2] [--model clip-l|bigg]

Input: `batch` sequences of 77 token ids (a prompt's ids, then end-of-text padding, as A1111's
SD1 chunks are; batch 2 = prompt and negative prompt), `output_hidden_states=True` as A1111
asks (it needs them for clip skip). torch.set_num_threads(2), eval(), no_grad(), F32, the
model's default attention implementation (sdpa). `--model bigg` times SDXL's second encoder
(width 1280, 32 layers, 20 heads, MLP 5120, GELU, with projection).

Run with the peers venv (/work/venv/peers/bin/python); progress goes to stderr.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

THREADS = 2

MODELS = {
    # openai/clip-vit-large-patch14 text_config (SD1.x's text encoder, SDXL's first).
    "clip-l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   hidden_act="quick_gelu", projection_dim=768),
    # laion/CLIP-ViT-bigG-14-laion2B-39B-b160k as SDXL's text_encoder_2.
    "bigg": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                 hidden_act="gelu", projection_dim=1280),
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def time_best(body, runs, warmup=1):
    for _ in range(warmup):
        body()
    best, worst = float("inf"), 0.0
    for _ in range(runs):
        start = time.perf_counter()
        body()
        elapsed = time.perf_counter() - start
        best, worst = min(best, elapsed), max(worst, elapsed)
    return best, worst


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info():
    return {"cores": os.cpu_count(), "torchThreads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "cpuCapability": torch.backends.cpu.get_cpu_capability()}


def prompt_ids(batch):
    """The same ids as the Swift side: start, 20 prompt tokens, end-of-text padding."""
    rows = []
    for b in range(batch):
        body = [(320 + 37 * i + 101 * b) % 49000 + 256 for i in range(20)]
        rows.append([49406] + body + [49407] * (77 - 21))
    return torch.tensor(rows, dtype=torch.long)


def suite_textencoder(args):
    torch.manual_seed(0)
    spec = MODELS[args.model]
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, **spec)
    cls = CLIPTextModelWithProjection if args.model == "bigg" else CLIPTextModel
    model = cls(config).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = prompt_ids(args.batch)

    def call():
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True)

    log(f"{args.model}: {params / 1e6:.0f}M parameters, ids {list(ids.shape)}, attention {config._attn_implementation}")
    best, worst = time_best(call, args.runs)
    name = f"textencoder_{args.model.replace('-', '')}_b{args.batch}"
    return [{"name": name, "value": best, "unit": "s", "better": "lower", "bestSeconds": best,
             "spread": worst / best, "peer": f"transformers {cls.__name__}",
             "note": f"F32, {THREADS} threads, peak RSS {peak_rss_mib():.0f} MiB (weights {params * 4 / 2**20:.0f} MiB)"}]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    p = sub.add_parser("textencoder")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--model", choices=sorted(MODELS), default="clip-l")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    results = suite_textencoder(args)
    print(json.dumps({"suite": args.suite, "side": "peers", "machine": machine_info(), "results": results},
                     indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
