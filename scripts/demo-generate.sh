#!/usr/bin/env bash
# The generation part of the main job: on the embedded default model (a tiny random-init SD1
# checkpoint), the same seed and prompt with no adapter, a LoRA, a textual-inversion embedding,
# a hypernetwork and a DreamBooth difference, side by side in one labelled PNG
# (out/side-by-side.png).
#
#   scripts/demo-generate.sh [ADAPTERHOST_BINARY]     (default: .build/release/adapterhost)
#
# The tiny single file needs its diffusers configs (2 attention heads, 4 norm groups, 4 text
# heads): models/default/tiny-sd1-config. The adapters beside it were made by
# tools/gen_default_adapters.py, in A1111's layout under models/default (embeddings/,
# hypernetworks/; the LoRA at the top, found through --lora-dir). A random-init model draws
# noise-like pictures; what matters is that each method changes them, from the same seed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-.build/release/adapterhost}"
mkdir -p out

model=models/default/tiny-sd1.safetensors
prompt="a lighthouse on a cliff at sunset"
common=(--model "$model" --config models/default/tiny-sd1-config
        --models-dir models/default --lora-dir models/default
        --negative "blurry, lowres" --seed 1234 --steps 20 --cfg 7 --sampler "Euler a"
        --width 256 --height 256 --quiet)

echo "== 1/5 no adapter"
"$bin" generate "${common[@]}" --prompt "$prompt" --out out/panel-none.png
echo "== 2/5 LoRA (kohya, merged into the weights for the generation, then restored)"
"$bin" generate "${common[@]}" --prompt "$prompt <lora:tiny-sd1-lora:0.8>" --out out/panel-lora.png
echo "== 3/5 textual-inversion embedding, used by its file name"
"$bin" generate "${common[@]}" --prompt "$prompt, tiny-sd1-embedding" --out out/panel-embedding.png
echo "== 4/5 hypernetwork on the cross-attention keys and values"
"$bin" generate "${common[@]}" --prompt "$prompt <hypernet:tiny-sd1-hypernetwork:1>" --out out/panel-hypernetwork.png
echo "== 5/5 DreamBooth: the tuned checkpoint as a difference from its base, applied at 1"
"$bin" diff --base "$model" --tuned models/default/dreambooth/tiny-sd1-dreambooth.safetensors \
  --out out/dreambooth-diff.safetensors --quiet
"$bin" generate "${common[@]}" --prompt "$prompt" --adapter out/dreambooth-diff.safetensors:1 \
  --out out/panel-dreambooth.png

"$bin" montage out/panel-none.png out/panel-lora.png out/panel-embedding.png out/panel-hypernetwork.png \
  out/panel-dreambooth.png \
  --label "no adapter" --label "LoRA <lora:tiny-sd1-lora:0.8>" --label "embedding tiny-sd1-embedding" \
  --label "hypernetwork <hypernet:tiny-sd1-hypernetwork:1>" --label "DreamBooth diff at 1" \
  --out out/side-by-side.png
