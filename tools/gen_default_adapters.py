#!/usr/bin/env python3
"""The main job's small adapters for the embedded default model (models/default/tiny-sd1.safetensors,
a random-init SD1 checkpoint with text width 32 and cross-attention context width 32):

    /work/venv/peers/bin/python tools/gen_default_adapters.py

  models/default/embeddings/tiny-sd1-embedding.pt
      an A1111 textual-inversion embedding (Embedding.save's dict: string_to_token,
      string_to_param {'*': [8, 32]}, name, step, sd_checkpoint, sd_checkpoint_name); used in a
      prompt by its file name "tiny-sd1-embedding".
  models/default/hypernetworks/tiny-sd1-hypernetwork.pt
      an A1111 hypernetwork (Hypernetwork.save's dict) for context width 32: {32: [k, v]} of
      HypernetworkModule state dicts, layer_structure [1, 2, 1], relu, no layer norm, no dropout;
      used as <hypernet:tiny-sd1-hypernetwork:STRENGTH>.
  models/default/dreambooth/tiny-sd1-dreambooth.safetensors
      a "DreamBooth-tuned" copy of the checkpoint: every UNet attention and resnet weight moved
      by a small random step (same keys, dtypes, metadata); the demo turns it into an adapter
      with `adapterhost diff --base … --tuned …`.

A random-init model has no learned meaning to steer, so each adapter is scaled to move the
picture visibly at the demo's weights (mean |difference| a few of 255 per channel or more):
the text path barely matters to this model (a wholly different prompt moves the picture by
about 0.4 of 255), so the embedding has 8 vectors at 20× the token table's spread; the
hypernetwork's weights have std 0.5 (A1111 initialises with 0.01, which would change nothing
visible); the tuned weights move by 0.8 of each tensor's own spread. Fixed seeds: rerunning gives the same files (torch.save's
zip layout included), so the committed files only change when this script does.
"""
import hashlib
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "models", "default")
MODEL = os.path.join(DEFAULT, "tiny-sd1.safetensors")
TOKEN_TABLE = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
# Spread of the token table measured on its first 64 rows (what the model was built from).
TOY_VOCABULARY = 64
# See the module docstring for why these are this large.
EMBEDDING_VECTORS = 8
EMBEDDING_SPREAD = 20.0
TUNING_STEP = 0.8


def model_tensors():
    with safe_open(MODEL, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def a1111_short_model_hash():
    """A1111's `sd_checkpoint` field: the first 10 hex digits of the checkpoint's SHA-256."""
    with open(MODEL, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:10]


def gen_embedding(tensors):
    g = torch.Generator().manual_seed(61)
    table = tensors[TOKEN_TABLE].float()[:TOY_VOCABULARY]
    width = table.shape[1]
    vectors = torch.randn(EMBEDDING_VECTORS, width, generator=g) * (EMBEDDING_SPREAD * table.std()) + table.mean(0)
    os.makedirs(os.path.join(DEFAULT, "embeddings"), exist_ok=True)
    # modules/textual_inversion/textual_inversion.py Embedding.save.
    torch.save({
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors.requires_grad_(True)},
        "name": "tiny-sd1-embedding",
        "step": 1000,
        "sd_checkpoint": a1111_short_model_hash(),
        "sd_checkpoint_name": "tiny-sd1",
    }, os.path.join(DEFAULT, "embeddings", "tiny-sd1-embedding.pt"))


def hypernetwork_module_state(width, g):
    """A1111 HypernetworkModule(width, [1, 2, 1], "relu", add_layer_norm=False,
    activate_output=False): Sequential(Linear(w, 2w), ReLU, Linear(2w, w)) → linear.0, linear.2."""
    return {
        "linear.0.weight": torch.randn(2 * width, width, generator=g) * 0.5,
        "linear.0.bias": torch.randn(2 * width, generator=g) * 0.3,
        "linear.2.weight": torch.randn(width, 2 * width, generator=g) * 0.5,
        "linear.2.bias": torch.randn(width, generator=g) * 0.3,
    }


def gen_hypernetwork(tensors):
    g = torch.Generator().manual_seed(62)
    context_width = tensors["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    os.makedirs(os.path.join(DEFAULT, "hypernetworks"), exist_ok=True)
    # modules/hypernetworks/hypernetwork.py Hypernetwork.save.
    state = {context_width: [hypernetwork_module_state(context_width, g), hypernetwork_module_state(context_width, g)]}
    state.update({
        "step": 1000,
        "name": "tiny-sd1-hypernetwork",
        "layer_structure": [1, 2, 1],
        "activation_func": "relu",
        "is_layer_norm": False,
        "weight_initialization": "Normal",
        "sd_checkpoint": a1111_short_model_hash(),
        "sd_checkpoint_name": "tiny-sd1",
        "activate_output": False,
        "use_dropout": False,
        "dropout_structure": [0, 0, 0],
        "last_layer_dropout": False,
        "optional_info": None,
    })
    torch.save(state, os.path.join(DEFAULT, "hypernetworks", "tiny-sd1-hypernetwork.pt"))


def tuned_key(key):
    """UNet attention and resnet weights: what a DreamBooth run moves most."""
    if not key.startswith("model.diffusion_model.") or not key.endswith(".weight"):
        return False
    return any(part in key for part in (".attn1.", ".attn2.", ".in_layers.", ".out_layers."))


def gen_dreambooth(tensors, metadata):
    g = torch.Generator().manual_seed(63)
    tuned = {}
    changed = 0
    for key in sorted(tensors):
        t = tensors[key]
        if tuned_key(key):
            step = torch.randn(t.shape, generator=g) * (TUNING_STEP * t.float().std())
            t = (t.float() + step).to(t.dtype)
            changed += 1
        tuned[key] = t.contiguous()
    os.makedirs(os.path.join(DEFAULT, "dreambooth"), exist_ok=True)
    save_file(tuned, os.path.join(DEFAULT, "dreambooth", "tiny-sd1-dreambooth.safetensors"), metadata=metadata)
    return changed


def main():
    tensors, metadata = model_tensors()
    gen_embedding(tensors)
    gen_hypernetwork(tensors)
    changed = gen_dreambooth(tensors, metadata)
    print(f"wrote the embedding, the hypernetwork and the tuned checkpoint ({changed} tensors moved) under {DEFAULT}")


if __name__ == "__main__":
    main()
