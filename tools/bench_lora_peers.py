#!/usr/bin/env python3
"""The PyTorch side of the LoRA operation benchmarks (`adapterhost-bench lora-merge`,
`lora-extract`), on the files those suites generate. Prints JSON with the same measurement
names, so tools/run_benchmarks.sh can pair the two sides.

    bench_lora_peers.py merge   --base CKPT --lora LORA --out OUT [--runs 3]
    bench_lora_peers.py extract --base A --tuned B --rank 32 --out OUT [--ours OURS] [--runs 1]

merge: kohya sd-scripts networks/merge_lora.py's merge loop (`merge_to_sd_model`), written
here for a single-file state dict: for every `lora_down` key, W = W + ratio * (up @ down) *
scale with scale = alpha / dim, computed in float32 on the F16 weight and stored back in F16
(kohya converts the whole model to float32 first; this does it per weight, which is faster);
then safetensors' save_file, then (default; --no-fsync skips it) os.fsync of the file and its
folder: AdapterHost's writer is atomic and durable (temporary file, fsync, rename, folder
fsync), so the same job in torch includes making the output durable. Timed from load_file to
the end of the fsync, 2 torch threads.
The kohya module name → checkpoint key map is built from the checkpoint's own keys
(lora_unet_ + diffusers path for SD1 via the ldm↔diffusers block numbering, lora_te_ + CLIP path).

extract: kohya networks/extract_lora_from_models.py's loop on the UNet transformer layers
(Linear and 1×1 Conv2d children of the attentions: kohya's targets without --conv_dim): per
layer diff = tuned − base in float32, torch.linalg.svd (full matrices, as kohya), U·diag(S)[:, :r],
Vh[:r], both clamped to ±quantile(cat(U, Vh), 0.99), alpha = rank. Timed from loading to
save_file. With --ours, also reads AdapterHost's LoRA and reports, per layer, both sides'
‖Δ − up·down·scale‖_F; the summary gives the ratio ours / kohya (worst layer and total).
Peak memory (ru_maxrss) is reported too.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import torch
from safetensors.torch import load_file, save_file

THREADS = 2


def log(message):
    print(message, file=sys.stderr, flush=True)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measurement(name, value, unit, best, worst, note, better="lower"):
    return {"name": name, "value": value, "unit": unit, "better": better, "bestSeconds": best,
            "spread": worst / best if best else 1, "peer": "kohya sd-scripts (torch)", "note": note}


def machine():
    return {"cores": os.cpu_count(), "torchThreads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# kohya module names of an SD1 single-file checkpoint
# ---------------------------------------------------------------------------------------------

def sd1_diffusers_path(ldm):
    """SD1 ldm UNet module path → diffusers path (the block numbering of the released models)."""
    parts = ldm.split(".")
    if parts[0] == "input_blocks":
        n, slot = int(parts[1]), parts[2]
        level, j = (n - 1) // 3, (n - 1) % 3
        kind = "resnets" if slot == "0" else "attentions"
        return f"down_blocks.{level}.{kind}.{j}." + ".".join(parts[3:])
    if parts[0] == "middle_block":
        n = int(parts[1])
        return ("mid_block.attentions.0." if n == 1 else f"mid_block.resnets.{n // 2}.") + ".".join(parts[2:])
    if parts[0] == "output_blocks":
        n, slot = int(parts[1]), parts[2]
        level, j = n // 3, n % 3
        kind = "resnets" if slot == "0" else "attentions"
        return f"up_blocks.{level}.{kind}.{j}." + ".".join(parts[3:])
    return None


def kohya_names(keys):
    """kohya LoRA module name → checkpoint weight key (transformer layers and text encoder)."""
    out = {}
    for key in keys:
        if not key.endswith(".weight"):
            continue
        stem = key[: -len(".weight")]
        if stem.startswith("model.diffusion_model."):
            path = sd1_diffusers_path(stem[len("model.diffusion_model."):])
            if path and ".attentions." in path:
                out["lora_unet_" + path.replace(".", "_")] = key
        elif stem.startswith("cond_stage_model.transformer."):
            path = stem[len("cond_stage_model.transformer."):]
            out["lora_te_" + path.replace(".", "_")] = key
    return out


def durable(path):
    """fsync the file, then its folder (what makes a rename-free save survive a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def merge(args):
    torch.set_num_threads(THREADS)
    times = []
    for run in range(args.runs + 1):          # the first run warms the page cache
        start = time.perf_counter()
        sd = load_file(args.base)
        lora = load_file(args.lora)
        names = kohya_names(sd.keys())
        applied = 0
        with torch.no_grad():
            for key in lora:
                if "lora_down" not in key:
                    continue
                module = key[: key.index(".lora_down")]
                target = names.get(module)
                if target is None:
                    continue
                down = lora[key].float()
                up = lora[key.replace("lora_down", "lora_up")].float()
                dim = down.size()[0]
                alpha = lora.get(module + ".alpha")
                scale = (float(alpha) if alpha is not None else dim) / dim
                w = sd[target]
                weight = w.float()
                if weight.dim() == 2:
                    if up.dim() == 4:
                        up, down = up.squeeze(3).squeeze(2), down.squeeze(3).squeeze(2)
                    weight = weight + args.ratio * (up @ down) * scale
                else:  # 1×1 convolution
                    weight = weight + args.ratio * (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
                sd[target] = weight.to(w.dtype)
                applied += 1
        save_file(sd, args.out)
        if args.fsync:
            durable(args.out)
        elapsed = time.perf_counter() - start
        del sd, lora
        log(f"  merge run {run}: {elapsed:.2f} s, {applied} modules")
        if run > 0:
            times.append(elapsed)
    size = os.path.getsize(args.base) / (1 << 20)
    best, worst = min(times), max(times)
    return [measurement("lora_merge_sd15_r32", best, "s", best, worst,
                        f"{applied} modules, output {'fsynced' if args.fsync else 'not fsynced'}"),
            measurement("lora_merge_sd15_r32_peak_rss", peak_rss_mib(), "MiB", best, best,
                        f"python maxrss incl. torch; checkpoint {size:.0f} MiB")]


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------

def extract_targets(keys):
    return [k for k in keys if k.startswith("unet.") and ".attentions." in k and k.endswith(".weight")
            and ".norm" not in k]


def kohya_extract(base, tuned, keys, rank, clamp_quantile=0.99):
    weights = {}
    with torch.no_grad():
        for key in keys:
            mat = tuned[key].float() - base[key].float()
            conv = mat.dim() == 4
            out_dim, in_dim = mat.size()[0:2]
            r = min(rank, in_dim, out_dim)
            if conv:
                mat = mat.squeeze()
            U, S, Vh = torch.linalg.svd(mat)
            U = U[:, :r] @ torch.diag(S[:r])
            Vh = Vh[:r, :]
            dist = torch.cat([U.flatten(), Vh.flatten()])
            hi = torch.quantile(dist, clamp_quantile)
            U, Vh = U.clamp(-hi, hi), Vh.clamp(-hi, hi)
            if conv:
                U, Vh = U.reshape(out_dim, r, 1, 1), Vh.reshape(r, in_dim, 1, 1)
            name = "lora_unet_" + key[len("unet."):-len(".weight")].replace(".", "_")
            weights[name] = (U.contiguous(), Vh.contiguous(), r)
    return weights


def errors(base, tuned, keys, lora):
    """‖Δ − up·down·scale‖_F per layer for a kohya-named LoRA state dict."""
    out = {}
    for key in keys:
        name = "lora_unet_" + key[len("unet."):-len(".weight")].replace(".", "_")
        if name + ".lora_down.weight" not in lora:
            out[name] = None
            continue
        delta = (tuned[key].float() - base[key].float()).reshape(tuned[key].shape[0], -1)
        down = lora[name + ".lora_down.weight"].float()
        up = lora[name + ".lora_up.weight"].float()
        alpha = lora.get(name + ".alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        approx = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1) * scale
        out[name] = float(torch.linalg.norm(delta - approx))
    return out


def extract(args):
    torch.set_num_threads(THREADS)
    times = []
    for run in range(args.runs):
        start = time.perf_counter()
        base, tuned = load_file(args.base), load_file(args.tuned)
        keys = extract_targets(base.keys())
        weights = kohya_extract(base, tuned, keys, args.rank)
        sd = {}
        for name, (up, down, r) in weights.items():
            sd[name + ".lora_up.weight"], sd[name + ".lora_down.weight"] = up, down
            sd[name + ".alpha"] = torch.tensor(float(r))
        save_file(sd, args.out)
        elapsed = time.perf_counter() - start
        log(f"  extract run {run}: {elapsed:.1f} s, {len(keys)} layers")
        times.append(elapsed)
    best, worst = min(times), max(times)
    results = [measurement(f"lora_extract_sd15_r{args.rank}", best, "s", best, worst, f"{len(keys)} layers, full torch.linalg.svd"),
               measurement(f"lora_extract_sd15_r{args.rank}_peak_rss", peak_rss_mib(), "MiB", best, best, "python maxrss")]
    if args.ours:
        kohya_lora = load_file(args.out)
        ours = load_file(args.ours)
        e_kohya = errors(base, tuned, keys, kohya_lora)
        e_ours = errors(base, tuned, keys, ours)
        ratios = [e_ours[n] / e_kohya[n] for n in e_kohya if e_ours[n] is not None and e_kohya[n]]
        missing = [n for n in e_ours if e_ours[n] is None]
        total_k = sum(v * v for v in e_kohya.values()) ** 0.5
        total_o = sum(v * v for v in e_ours.values() if v is not None) ** 0.5
        worst_layer = max(ratios) if ratios else float("nan")
        log(f"  error ratio ours/kohya: worst layer {worst_layer:.4f}, total {total_o / total_k:.4f}, missing {len(missing)}")
        results.append({"name": f"lora_extract_sd15_r{args.rank}_error_ratio", "value": worst_layer, "unit": "×",
                        "better": "lower", "bestSeconds": best, "spread": 1, "peer": "ours ÷ kohya",
                        "note": f"worst layer; total {total_o / total_k:.4f}; median {sorted(ratios)[len(ratios) // 2]:.4f}; "
                                f"{len(missing)} layers missing in ours"})
    return results


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="suite", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--base", required=True)
    m.add_argument("--lora", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--ratio", type=float, default=1.0)
    m.add_argument("--runs", type=int, default=3)
    m.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="do not fsync the output (not durable: unlike AdapterHost's writer)")
    e = sub.add_parser("extract")
    e.add_argument("--base", required=True)
    e.add_argument("--tuned", required=True)
    e.add_argument("--rank", type=int, default=32)
    e.add_argument("--out", required=True)
    e.add_argument("--ours")
    e.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = merge(args) if args.suite == "merge" else extract(args)
    print(json.dumps({"suite": f"lora-{args.suite}", "side": "peers", "machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
