#!/usr/bin/env python3
"""Fixtures for the runtime-plugin tests (Tests/HostTests/Fixtures/plugins/).

Builds a tiny diffusers UNet2DConditionModel from a config (no hub download), adapts it with
PEFT's VeRA and HRA (random, non-trivial parameters: PEFT initialises VeRA's lambda_b to 0 and
HRA to the identity, so both are perturbed), and writes, per adapter:

  adapter_model.safetensors  PEFT's own save (`PeftModel.save_pretrained`, safetensors), keys
                             as PEFT writes them: `base_model.model.<diffusers module>.<param>`
                             (VeRA also saves the shared `base_model.vera_A` / `vera_B`).
  adapter_config.json        PEFT's config, for reference.
  base.safetensors           the targeted layers' weights before adaptation (diffusers keys).
  merged.safetensors         the same weights after PEFT's `merge_and_unload()`: the expected
                             values W + dW the plugins must reproduce.

Run: /work/venv/peers/bin/python tools/gen_plugin_fixtures.py
"""
import json
import os
import shutil
import tempfile

import torch
from diffusers import UNet2DConditionModel
from peft import HRAConfig, VeraConfig, get_peft_model
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "plugins")


def tiny_unet(seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, attention_head_dim=4, norm_num_groups=4,
    ).eval()


def write_case(name: str, make_config, perturb, seed: int) -> None:
    unet = tiny_unet(seed)
    config = make_config()
    model = get_peft_model(unet, config)
    perturb(model)
    # Layers PEFT wrapped, by diffusers module name (as `unet.named_modules()` spells it).
    targets = sorted({
        n[len("base_model.model."):] for n, m in model.named_modules()
        if n.startswith("base_model.model.") and hasattr(m, "base_layer") and not n.endswith("base_layer")
    })
    base = {f"{t}.weight": unet.get_submodule(t).get_base_layer().weight.detach().clone().contiguous()
            for t in targets}

    out_dir = os.path.join(OUT, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(os.path.join(tmp, "adapter_model.safetensors"), out_dir)
        with open(os.path.join(tmp, "adapter_config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=1, sort_keys=True)

    merged_model = model.merge_and_unload()
    merged = {k: merged_model.get_submodule(k[: -len(".weight")]).weight.detach().clone().contiguous()
              for k in base}
    for k in base:
        assert not torch.equal(base[k], merged[k]), f"{name}: {k} unchanged by the adapter"
    save_file(base, os.path.join(out_dir, "base.safetensors"))
    save_file(merged, os.path.join(out_dir, "merged.safetensors"))
    print(f"{name}: {len(targets)} modules -> {out_dir}")


# ---- VeRA: every linear layer of the first down block's transformer, plus mid-block layers of
# other shapes (the shared projections are sized for the largest layer and sliced per layer).
VERA_TARGETS = (r"(down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
                r"|down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.ff\.net\.(0\.proj|2)"
                r"|mid_block\.attentions\.0\.transformer_blocks\.0\.(attn2\.to_k|ff\.net\.0\.proj|ff\.net\.2))")


def vera_config():
    return VeraConfig(r=4, target_modules=VERA_TARGETS, save_projection=True, projection_prng_key=7,
                      d_initial=0.1)


def perturb_vera(model):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "vera_lambda_b" in n or "vera_lambda_d" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ---- HRA: linear layers and convolutions (3x3 and 1x1), rank 4.
HRA_TARGETS = (r"(down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.to_q"
               r"|down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.ff\.net\.2"
               r"|down_blocks\.0\.attentions\.0\.proj_out"
               r"|down_blocks\.0\.resnets\.0\.conv1)")


def hra_config(apply_gs: bool):
    return lambda: HRAConfig(r=4, target_modules=HRA_TARGETS, apply_GS=apply_gs, init_weights=True)


def perturb_hra(model):
    g = torch.Generator().manual_seed(13)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "hra_u" in n:
                # PEFT's symmetric init repeats each column twice, so the reflections cancel.
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


if __name__ == "__main__":
    write_case("vera", vera_config, perturb_vera, seed=1)
    write_case("hra", hra_config(False), perturb_hra, seed=2)
    write_case("hra_gs", hra_config(True), perturb_hra, seed=3)
