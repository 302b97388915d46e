#!/usr/bin/env python3
"""Reference values for the LoRA operation tests (Tests/LoRATests/Operations*.swift).

Run with the peers venv:

    /work/venv/peers/bin/python tools/gen_lora_ops_fixtures.py

Writes Tests/LoRATests/Fixtures/ops/ (a few KB of JSON, no tensors):

  resize_rules.json  kohya resize_lora.py's rank choice (`rank_resize` with its `index_sv_*`
                     helpers) for singular-value vectors, every dynamic rule and several targets,
                     computed in float32 with torch exactly as that script does (formulas written
                     here from its documented behaviour: ratio = count(S > S0/t) - 1; cumulative =
                     searchsorted(cumsum(S)/sum(S), t); fro = searchsorted(cumsum(S^2)/sum(S^2), t^2);
                     each clamped to [0, len-1], + 1; rank 1 when S0 <= 1e-6; capped at the limit;
                     alpha = scale * rank; fro_retained = sqrt(sum kept S^2)/sqrt(sum S^2)).
  hashes.json        hashes of a deterministic file the Swift test rebuilds bit for bit:
                     A1111's sha256 / AutoV2 (first 10 hex) / model_hash (legacy, 8 hex at 1 MiB) /
                     addnet hash (sha256 after the header), and kohya's precalculated
                     sshs_model_hash / sshs_legacy_hash of the same tensors with ss_* metadata
                     (safetensors.torch.save(tensors, ss_metadata) hashed as kohya's train_util does).
  tags.json          A1111's LoRA-card tag ranking (ui_edit_user_metadata.build_tags semantics) for
                     several ss_tag_frequency values.
"""
import hashlib
import json
import os
import re
import tempfile

import torch
from safetensors.torch import save, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "LoRATests", "Fixtures", "ops")


# ---------------------------------------------------------------------------------------------
# resize rank rules
# ---------------------------------------------------------------------------------------------

MIN_SV = 1e-6


def pick_index(S, method, target):
    """kohya's index for one dynamic method (float32 tensor S, descending)."""
    n = len(S)
    if method == "sv_ratio":
        min_sv = S[0] / target
        index = int(torch.sum(S > min_sv).item()) - 1
    elif method == "sv_cumulative":
        total = float(torch.sum(S))
        index = int(torch.searchsorted(torch.cumsum(S, dim=0) / total, target))
    elif method == "sv_fro":
        squares = S.pow(2)
        total = float(torch.sum(squares))
        index = int(torch.searchsorted(torch.cumsum(squares, dim=0) / total, target ** 2))
    else:
        raise ValueError(method)
    return max(0, min(index, n - 1))


def rank_choice(S, method, target, limit, scale):
    new_rank = limit if method is None else pick_index(S, method, target) + 1
    if S[0] <= MIN_SV:
        new_rank = 1
    elif new_rank > limit:
        new_rank = limit
    new_alpha = float(scale * new_rank)
    squares = S.pow(2)
    return {
        "newRank": new_rank,
        "newAlpha": new_alpha,
        "froRetained": float(torch.sqrt(torch.sum(squares[:new_rank])) / torch.sqrt(torch.sum(squares))),
        "sumRetained": float(torch.sum(torch.abs(S[:new_rank])) / torch.sum(torch.abs(S))),
        "maxRatio": float(S[0] / S[new_rank - 1]),
    }


def resize_rules():
    g = torch.Generator().manual_seed(7)
    vectors = {
        "decaying": torch.tensor([10.0 * 0.7 ** i for i in range(16)], dtype=torch.float32),
        "flat": torch.ones(8, dtype=torch.float32),
        "cliff": torch.tensor([5.0, 4.0, 3.5, 0.01, 0.009, 0.001], dtype=torch.float32),
        "random": torch.sort(torch.rand(32, generator=g) * 3, descending=True).values.float(),
        "zero": torch.tensor([5e-7, 1e-7, 0.0], dtype=torch.float32),
        "single": torch.tensor([2.5], dtype=torch.float32),
    }
    rules = [("sv_ratio", t) for t in (2.0, 10.0, 1000.0)] + [("sv_fro", t) for t in (0.5, 0.9, 0.99)] \
        + [("sv_cumulative", t) for t in (0.5, 0.75, 0.9)] + [(None, None)]
    cases = []
    for name, S in vectors.items():
        for method, target in rules:
            for limit in (3, 64):
                limit = min(limit, 64)
                scale = 0.5
                expected = rank_choice(S, method, target, limit if method else min(limit, len(S)), scale)
                cases.append({"vector": name, "method": method, "target": target,
                              "limit": limit if method else min(limit, len(S)), "scale": scale, **expected})
    return {"vectors": {k: v.tolist() for k, v in vectors.items()}, "cases": cases}


# ---------------------------------------------------------------------------------------------
# hashes
# ---------------------------------------------------------------------------------------------

def pattern(count, seed):
    """The deterministic values the Swift test builds too: ((i * 7919 + seed) % 2001 - 1000) / 1024."""
    i = torch.arange(count, dtype=torch.int64)
    return (((i * 7919 + seed) % 2001) - 1000).to(torch.float32) / 1024


def hashes():
    tensors = {
        "lora_unet_x.lora_down.weight": pattern(4 * 80000, 1).reshape(4, 80000),   # 1.28 MB: the legacy window is inside
        "lora_unet_x.lora_up.weight": pattern(320 * 4, 2).reshape(320, 4).half(),
        "lora_unet_x.alpha": torch.tensor(2.0),
    }
    ss = {"ss_network_dim": "4", "ss_network_alpha": "2.0", "ss_network_module": "networks.lora",
          "ss_tag_frequency": json.dumps({"5_x": {"a b": 3}})}
    blob = save(tensors, ss)
    n = int.from_bytes(blob[:8], "little")
    sshs_model = hashlib.sha256(blob[n + 8:]).hexdigest()
    sshs_legacy = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]

    # A file with one metadata key: the reference writer's bytes are deterministic then, and the
    # Swift writer's are identical, so whole-file hashes can be compared.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "one.safetensors")
        save_file(tensors, path, metadata={"format": "pt"})
        data = open(path, "rb").read()
    n1 = int.from_bytes(data[:8], "little")
    return {
        "ssMetadata": ss,
        "sshsModelHash": sshs_model,
        "sshsLegacyHash": sshs_legacy,
        "oneKeyFile": {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "autoV2": hashlib.sha256(data).hexdigest()[:10],
            "addnet": hashlib.sha256(data[n1 + 8:]).hexdigest(),
            "legacy": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
        },
        "emptyLegacy": hashlib.sha256(b"").hexdigest()[:8],
    }


# ---------------------------------------------------------------------------------------------
# tags
# ---------------------------------------------------------------------------------------------

WORD = re.compile(r"[-_\w']+")


def ranked_tags(tag_frequency):
    counts = {}
    for _, tags in json.loads(tag_frequency).items():
        for tag, n in tags.items():
            tag = tag.strip()
            counts[tag] = counts.get(tag, 0) + int(n)
    if counts and sum(len(t) for t in counts) / len(counts) >= 16:
        words = {}
        for text, n in counts.items():
            for w in WORD.findall(text):
                if len(w) >= 3:
                    words[w] = words.get(w, 0) + n
        counts = words
    order = sorted(counts.keys(), key=counts.get, reverse=True)
    return [[t, counts[t]] for t in order]


def tags():
    samples = [
        {"5_chara": {"1girl": 10, " solo": 8, "smile": 8, "blue hair ": 3}, "2_extra": {"solo": 4, "hat": 8}},
        {"10_style": {"a photo of a sks dog sitting on grass": 5, "a photo of a sks dog": 7,
                      "an oil painting, sks dog, dramatic light": 2}},
        {"1_x": {"日本語 タグ": 2, "ab": 9, "naïve café": 2}},
        {"1_a": {"t1": 2.0, "t2": "3"}},
        {},
    ]
    return [{"ss_tag_frequency": json.dumps(s, ensure_ascii=False), "ranked": ranked_tags(json.dumps(s))} for s in samples]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, build in [("resize_rules.json", resize_rules), ("hashes.json", hashes), ("tags.json", tags)]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(build(), f, indent=1, ensure_ascii=False)
        print("wrote", name)


if __name__ == "__main__":
    main()
