#!/usr/bin/env python3
"""Gives the embedded default model (models/default/tiny-sd1.safetensors, a tiny random-init
SD1-architecture checkpoint made by tools/gen_model_fixtures.py) CLIP's full
49408-token vocabulary, so prompts tokenize to rows of its own table instead of being folded
modulo a toy vocabulary.

The first rows (the toy table) are kept; the new rows are drawn as transformers initialises
CLIPTextEmbeddings.token_embedding (normal, std = initializer_range 0.02), from
torch.Generator().manual_seed(49408), stored F16 like the rest of the file. Tensor order and
metadata are preserved; the diffusers config's vocab_size is updated to match.

    /work/venv/peers/bin/python tools/gen_default_model_vocab.py
"""
import json
import pathlib

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/default/tiny-sd1.safetensors"
CONFIG = ROOT / "models/default/tiny-sd1-config/text_encoder/config.json"
KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
VOCAB = 49408

with safe_open(str(MODEL), "pt") as f:
    metadata = f.metadata() or {}
    tensors = {k: f.get_tensor(k) for k in f.keys()}

table = tensors[KEY]
if table.shape[0] < VOCAB:
    g = torch.Generator().manual_seed(VOCAB)
    extra = torch.randn(VOCAB - table.shape[0], table.shape[1], generator=g) * 0.02
    tensors[KEY] = torch.cat([table, extra.to(table.dtype)], 0).contiguous()
    save_file(tensors, str(MODEL), metadata=metadata or None)

config = json.loads(CONFIG.read_text())
config["vocab_size"] = VOCAB
CONFIG.write_text(json.dumps(config, indent=1) + "\n")
print(f"{MODEL.name}: token table {tuple(tensors[KEY].shape)}, {MODEL.stat().st_size} bytes")
