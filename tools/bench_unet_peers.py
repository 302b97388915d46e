#!/usr/bin/env python3
"""The PyTorch side of the UNet/VAE benchmark: one diffusers UNet2DConditionModel call and one
AutoencoderKL decode at Stable Diffusion 1.5's real shapes, random-initialised from the SD1.5
config written inline (no hub access), measured by the same method as `adapterhost-bench unet`
and `vae` (warmup, then best of k runs). Prints JSON with the same measurement names, so
tools/run_benchmarks.sh can pair the two sides.

    bench_unet_peers.py unet [--runs 3] [--batch 2] [--latent 64] [--dtype f32]
    bench_unet_peers.py vae  [--runs 3] [--latent 64]

Shapes: latent [batch, 4, latent, latent] (batch 2 = classifier-free guidance), context
[batch, 77, 768], timestep 500; VAE decode [1, 4, latent, latent] -> [1, 3, 8·latent, 8·latent].
torch.set_num_threads(2), eval(), no_grad(); attention is diffusers' default processor
(AttnProcessor2_0, i.e. torch's scaled_dot_product_attention). `--dtype f16` keeps F32 compute
but is accepted for symmetry with the Swift side's F16-file variant (torch eager CPU has no
fast F16 path; measuring it would not be fair to torch).

Peak memory (`peakRSSMiB`, from ru_maxrss) is reported per suite. Run with the peers venv
(/work/venv/peers/bin/python); progress goes to stderr.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import torch

THREADS = 2

# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json, non-default fields).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    mid_block_scale_factor=1, norm_eps=1e-5,
)

# Its VAE (vae/config.json).
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=512, act_fn="silu",
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)


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


def measurement(name, best, worst, peer, note):
    return {"name": name, "value": best, "unit": "s", "better": "lower", "bestSeconds": best,
            "spread": worst / best, "peer": peer, "note": note}


def machine_info():
    return {"cores": os.cpu_count(), "torchThreads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "cpuCapability": torch.backends.cpu.get_cpu_capability()}


def suite_unet(args):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    log("building SD1.5 UNet (random init)…")
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    params = sum(p.numel() for p in unet.parameters())
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(args.batch, 4, args.latent, args.latent, generator=g)
    context = torch.randn(args.batch, 77, 768, generator=g)
    t = torch.tensor([500.0] * args.batch)
    rss_before = peak_rss_mib()

    def call():
        with torch.no_grad():
            return unet(latent, t, encoder_hidden_states=context).sample

    log(f"UNet: {params / 1e6:.0f}M parameters, latent {list(latent.shape)}")
    best, worst = time_best(call, args.runs)
    name = f"unet_sd15_b{args.batch}_{args.latent}"
    return [measurement(name, best, worst, "diffusers UNet2DConditionModel",
                        f"F32, {THREADS} threads, peak RSS {peak_rss_mib():.0f} MiB "
                        f"(weights {params * 4 / 2**20:.0f} MiB, after build {rss_before:.0f} MiB)")]


def suite_vae(args):
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    params = sum(p.numel() for p in vae.decoder.parameters()) + sum(p.numel() for p in vae.post_quant_conv.parameters())
    g = torch.Generator().manual_seed(2)
    latent = torch.randn(1, 4, args.latent, args.latent, generator=g)

    def call():
        with torch.no_grad():
            return vae.decode(latent / 0.18215).sample

    log(f"VAE decode: latent {list(latent.shape)} -> {8 * args.latent}x{8 * args.latent}")
    best, worst = time_best(call, args.runs)
    return [measurement(f"vae_decode_sd15_{args.latent}", best, worst, "diffusers AutoencoderKL.decode",
                        f"F32, {THREADS} threads, peak RSS {peak_rss_mib():.0f} MiB "
                        f"(decoder weights {params * 4 / 2**20:.0f} MiB)")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    p = sub.add_parser("unet")
    p.add_argument("--runs", type=int, default=3); p.add_argument("--batch", type=int, default=2)
    p.add_argument("--latent", type=int, default=64); p.add_argument("--dtype", default="f32")
    p = sub.add_parser("vae")
    p.add_argument("--runs", type=int, default=3); p.add_argument("--latent", type=int, default=64)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    suites = {"unet": suite_unet, "vae": suite_vae}
    results = suites[args.suite](args)
    print(json.dumps({"suite": args.suite, "side": "peers", "machine": machine_info(), "results": results},
                     indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
