#!/usr/bin/env python3
"""Checks that a PEFT file written by `adapterhost convert --to peft` loads in diffusers/PEFT and
means what the kohya file it came from means. Not run by CI (it needs torch); run by hand:

    adapterhost convert Tests/LoRATests/Fixtures/kohya_sd1_locon.safetensors --to peft --out /tmp/p.safetensors
    /work/venv/peers/bin/python tools/check_peft_export.py /tmp/p.safetensors \
        Tests/LoRATests/Fixtures/kohya_sd1_locon.safetensors Tests/HostTests/Fixtures/models/sd1

It loads the PEFT file with diffusers' own loader (`lora_state_dict` with its
`lora_adapter_metadata`, then `load_lora_into_unet` / `load_lora_into_text_encoder` into the
tiny SD1 diffusers model), and compares every wrapped layer's `get_delta_weight` with the kohya
file's scale · up · down (kohya name = lora_unet_/lora_te_ + the diffusers path with '.' → '_').
Exit status 0 when every module is loaded and matches to 1e-5 relative.
"""
import logging
import sys

import torch
from safetensors.torch import load_file
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

logging.getLogger("diffusers").setLevel(logging.ERROR)


def main(peft_path, kohya_path, model_dir):
    # float32: the fixture files are F16, and LoRA layers compute in the model's dtype.
    unet = UNet2DConditionModel.from_pretrained(f"{model_dir}/unet", torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(f"{model_dir}/text_encoder", torch_dtype=torch.float32)
    state_dict, alphas, metadata = StableDiffusionPipeline.lora_state_dict(peft_path, return_lora_metadata=True)
    assert alphas is None, "a PEFT file carries no network_alphas"
    assert metadata, "lora_adapter_metadata missing"
    StableDiffusionPipeline.load_lora_into_unet(state_dict, None, unet, adapter_name="x", metadata=metadata)
    StableDiffusionPipeline.load_lora_into_text_encoder(state_dict, None, te, adapter_name="x", metadata=metadata)

    kohya = load_file(kohya_path)
    checked, worst = 0, 0.0
    for prefix, root in [("lora_unet_", unet), ("lora_te_", te)]:
        for name, module in root.named_modules():
            if not hasattr(module, "get_delta_weight") or "x" not in getattr(module, "lora_A", {}):
                continue
            # transformers ≥ 5.6 builds CLIPTextModel without the `text_model.` level.
            path = name if prefix == "lora_unet_" or name.startswith("text_model.") else "text_model." + name
            kname = prefix + path.replace(".", "_")
            down, up = kohya[kname + ".lora_down.weight"].double(), kohya[kname + ".lora_up.weight"].double()
            alpha = float(kohya[kname + ".alpha"]) if kname + ".alpha" in kohya else down.shape[0]
            expected = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)) * alpha / down.shape[0]
            got = module.get_delta_weight("x").double().reshape(expected.shape)
            err = float((got - expected).norm() / expected.norm())
            worst = max(worst, err)
            checked += 1
            if err > 1e-5:
                print(f"MISMATCH {name}: relative {err:.3g}")
    modules = len({k.rsplit(".lora_", 1)[0] for k in kohya if ".lora_down" in k})
    print(f"{checked} of {modules} modules loaded by diffusers/PEFT; worst relative difference {worst:.3g}")
    return 0 if checked == modules and worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
