#!/usr/bin/env bash
# The main job on the embedded default model: installs what is missing, builds, generates the
# same seed with no adapter, a LoRA, an embedding, a hypernetwork and a DreamBooth difference
# side by side (out/side-by-side.png), then inspects the checkpoint and the LoRA and merges
# the LoRA into a new checkpoint.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
swift build -c release --product adapterhost
bin=.build/release/adapterhost
mkdir -p out
bash scripts/demo-generate.sh "$bin"
echo "== inspect the default model"
"$bin" inspect models/default/tiny-sd1.safetensors | sed -n "1,12p"   # sed reads it all: no SIGPIPE under pipefail
echo "== inspect the default LoRA"
"$bin" inspect models/default/tiny-sd1-lora.safetensors | sed -n "1,12p"   # sed reads it all: no SIGPIPE under pipefail
echo "== merge the LoRA at 0.8 into the model"
"$bin" merge models/default/tiny-sd1.safetensors --adapter models/default/tiny-sd1-lora.safetensors:0.8 \
  --out out/merged.safetensors
