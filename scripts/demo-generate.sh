#!/usr/bin/env bash
# The generation part of the main job: the embedded default model (a tiny random-init SD1
# checkpoint) with and without its kohya LoRA, same seed, side by side in out/side-by-side.png.
#
#   scripts/demo-generate.sh [ADAPTERHOST_BINARY]     (default: .build/release/adapterhost)
#
# The tiny single file needs its diffusers configs (2 attention heads, 4 norm groups, 4 text
# heads): models/default/tiny-sd1-config. Its toy 64-token vocabulary is read modulo 64 (the
# generate command says so). A random-init model draws noise-like pictures; what matters is that
# the LoRA changes them, the same way in merged and bypass mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-.build/release/adapterhost}"
mkdir -p out

model=models/default/tiny-sd1.safetensors
common=(--model "$model" --config models/default/tiny-sd1-config --lora-dir models/default
        --prompt "a lighthouse on a cliff at sunset <lora:tiny-sd1-lora:0.8>" --negative "blurry, lowres"
        --seed 1234 --steps 20 --cfg 7 --sampler "Euler a" --width 256 --height 256)

echo "== generate with and without the LoRA (merged: patched into the weights, then restored)"
"$bin" generate "${common[@]}" --mode merged --out out/with-lora.png --side-by-side out/side-by-side.png

echo "== the same with the LoRA applied in bypass mode (weights untouched)"
"$bin" generate "${common[@]}" --mode bypass --quiet --out out/with-lora-bypass.png

echo "== wrote out/side-by-side.png (left: without adapters, right: with <lora:tiny-sd1-lora:0.8>)"
