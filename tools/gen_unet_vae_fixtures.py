#!/usr/bin/env python3
"""Conformance fixtures for the Swift UNet and VAE (Tests/RuntimeTests/Fixtures/{unet,vae}).

Run with the peers venv after tools/gen_model_fixtures.py has written the tiny models:

    /work/venv/peers/bin/python tools/gen_unet_vae_fixtures.py

The tiny random-initialised SD1, SD2 and SDXL-architecture models of
Tests/HostTests/Fixtures/models (F16 files; every parameter random, norms included) are loaded
with diffusers, widened to F32 (exact), and evaluated in F32 on fixed, seeded inputs:

  unet/<family>.safetensors   one UNet2DConditionModel call: sample [2, 4, 8, 8], two different
                              continuous timesteps, context [2, 10, width]; SDXL also pooled
                              text embeddings [2, 16] and time ids [2, 6]. Output under "output".
  unet/timestep_embedding.safetensors
                              diffusers' get_timestep_embedding for a few timesteps (dims 32, 31).
  vae/sd1.safetensors         AutoencoderKL: decode of latents z [1, 4, 4, 4] ("decoded"), and
                              the encoder's latent mean/logvar for an image [1, 3, 32, 32].

The Swift tests compare their outputs with these within 1e-4 (max abs difference relative to
the largest reference magnitude). Everything is seeded: reruns write identical files.
"""
import os

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")
OUT = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures")


def save(tensors, path, metadata):
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    os.chmod(path, 0o644)


def unet_fixture(name, seed):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, name, "unet")).float().eval()
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    timesteps = torch.tensor([999.0, 17.25])
    context = torch.randn(2, 10, unet.config.cross_attention_dim, generator=g)
    tensors = {"sample": sample, "timesteps": timesteps, "context": context}
    added = None
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        text_embeds = torch.randn(2, pooled, generator=g)
        time_ids = torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 64.0], [32.0, 32.0, 4.0, 8.0, 64.0, 48.0]])
        tensors.update({"text_embeds": text_embeds, "time_ids": time_ids})
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
    with torch.no_grad():
        output = unet(sample, timesteps, encoder_hidden_states=context, added_cond_kwargs=added).sample
    tensors["output"] = output
    os.makedirs(os.path.join(OUT, "unet"), exist_ok=True)
    save(tensors, os.path.join(OUT, "unet", f"{name}.safetensors"),
         metadata={"generator": "tools/gen_unet_vae_fixtures.py", "model": f"models/{name}/unet"})
    print(f"unet/{name}: output {list(output.shape)}, |max| {output.abs().max():.4g}")


def embedding_fixture():
    t = torch.tensor([0.0, 1.5, 17.25, 500.0, 999.0])
    tensors = {"timesteps": t,
               "dim32": get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0),
               "dim31": get_timestep_embedding(t, 31, flip_sin_to_cos=True, downscale_freq_shift=0)}
    save(tensors, os.path.join(OUT, "unet", "timestep_embedding.safetensors"),
         metadata={"generator": "tools/gen_unet_vae_fixtures.py"})


def vae_fixture():
    vae = AutoencoderKL.from_pretrained(os.path.join(MODELS, "sd1", "vae")).float().eval()
    g = torch.Generator().manual_seed(7)
    z = torch.randn(1, 4, 4, 4, generator=g)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(z).sample
        dist = vae.encode(image).latent_dist
    tensors = {"z": z, "decoded": decoded, "image": image, "mean": dist.mean, "logvar": dist.logvar}
    os.makedirs(os.path.join(OUT, "vae"), exist_ok=True)
    save(tensors, os.path.join(OUT, "vae", "sd1.safetensors"),
         metadata={"generator": "tools/gen_unet_vae_fixtures.py", "model": "models/sd1/vae"})
    print(f"vae/sd1: decoded {list(decoded.shape)}, |max| {decoded.abs().max():.4g}; mean {list(dist.mean.shape)}")


def main():
    torch.set_num_threads(1)
    for seed, name in enumerate(["sd1", "sd2", "sdxl"]):
        unet_fixture(name, 100 + seed)
    embedding_fixture()
    vae_fixture()


if __name__ == "__main__":
    main()
