#!/usr/bin/env python3
"""Conformance fixtures for the Swift txt2img pipeline (Tests/RuntimeTests/Fixtures/generation).

Run with the peers venv after tools/gen_model_fixtures.py (tiny models) and
tools/gen_lora_fixtures.py (LoRA files):

    /work/venv/peers/bin/python tools/gen_generation_fixtures.py --kdiffusion DIR

DIR: `pip install --no-deps --target DIR k-diffusion==0.1.1.post1` (only k_diffusion/sampling.py
and external.py are loaded, with stand-ins for their unused imports, as tools/gen_runtime_fixtures.py
does). Torch must dispatch to its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 is set below), the
Box-Muller kernel the Swift A1111ImageNoise defaults to.

Every case is a full generation at 64x64 (latents 4x8x8) on the tiny random-init models of
Tests/HostTests/Fixtures/models (widened to F32: exact), with the prompt conditioning computed by
the peer's own text encoder for the token ids A1111 would feed it (open_clip's tokenizer, 77-token
chunk, SD2/bigG zero padding after the end token, SDXL's CLIP-L padded with the end token). The
tiny encoders have 64 token rows, so ids are folded modulo 64, which is what the Swift pipeline
does for such toy vocabularies. Emphasis is not used (every multiplier 1).

Cases (each writes <name>.safetensors with the start noise and the final latents; sd1_euler, sd1_ddim
and sd1_euler_a_seed also the decoded image and A1111's uint8 conversion of it; parameters in
manifest.json):

  sd1_euler          diffusers StableDiffusionPipeline, EulerDiscreteScheduler(timestep_spacing=
                     "linspace") given k-diffusion's sigmas (A1111's "Automatic" schedule; diffusers'
                     own linspace sigmas interpolate σ linearly, k-diffusion in log σ, so they are
                     passed explicitly); noise from a file.
  sd1_ddim           A1111's DDIM (steps 5: timesteps 1, 201, …, 801; 4 UNet calls): diffusers'
                     DDIMScheduler ("leading", steps_offset=1, no clipping, set_alpha_to_one=False)
                     stepping every timestep but the last (t = 1), i.e. to ᾱ₁, as A1111 stops.
  sd1_lora_euler     as sd1_euler with <lora:kohya_sd1_noalpha:0.8> (a kohya LoRA without alphas:
                     scale 1 everywhere, which diffusers loads correctly): diffusers
                     load_lora_weights + fuse_lora(lora_scale=0.8) on the F32 model ("latents": the
                     exact merge, what bypass mode computes), and again with every fused weight
                     rounded to its stored dtype (F16), as A1111 and merged mode store it
                     ("latents_merged_f16"). The fused deltas are checked against the kohya formula.
  sd1_euler_a_seed   A1111 itself, minus the webui: k-diffusion's sample_euler_ancestral through
                     CompVisDenoiser and A1111's CFGDenoiser combination (on denoised estimates),
                     noise from torch.Generator("cpu").manual_seed(seed): the start noise, then one
                     draw per step (A1111's ImageRNG with CPU RNG).
  sd1_dpmpp_2m_karras  the same with sample_dpmpp_2m and get_sigmas_karras (webui's "DPM++ 2M" +
                     schedule "Karras"), seeded.
  sd2_v_euler        SD2 (v-prediction forced), StableDiffusionPipeline with a v_prediction Euler
                     scheduler; no VAE in the tiny SD2: latents only. Also records A1111's SD2
                     v-probe value mean(UNet(0.5, t=999, ctx=0.5) - 0.5) for the tiny SD2 UNet.
  sdxl_euler         StableDiffusionXLPipeline (no VAE: latents only), empty negative prompt (zeros,
                     A1111's force_zero_embeddings), pooled embedding from bigG at the end token,
                     time ids [64, 64, 0, 0, 64, 64].

`--sd15-random DIR` instead writes an SD1.5-shaped random-init diffusers folder (F16, ~2 GB) for
timing the pipeline at real shapes.

Also writes lora/kohya_sd1_noalpha_pt.pt (the sd1_lora_euler LoRA pickled with torch.save, for the
.pt path) and png/*.png: small RGB images saved by PIL as A1111 saves them (PngInfo.add_text
"parameters": tEXt for Latin-1 text, iTXt otherwise), for the Swift PNG reader tests.
Everything is seeded: reruns write identical files.
"""
import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import types

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")
LORAS = os.path.join(ROOT, "Tests", "LoRATests", "Fixtures")
OUT = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures", "generation")

logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

SOT, EOT = 49406, 49407
VOCAB = 64          # token rows of the tiny encoders
SIZE = 64           # image side; latents are SIZE / 8
CFG = 7.0

# ---------------------------------------------------------------------------------------------
# Peers


def load_kdiffusion(directory):
    """k_diffusion.sampling and .external from a --no-deps install, with stand-ins for imports
    those two modules do not use here (removed again afterwards: diffusers probes for the real
    packages)."""
    stubs = []
    for name in ["scipy", "scipy.integrate", "torchdiffeq", "torchsde", "tqdm", "tqdm.auto", "PIL", "PIL.Image",
                 "torchvision", "torchvision.transforms", "torchvision.transforms.functional"]:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
                stubs.append(name)
    sys.modules["scipy"].integrate = sys.modules["scipy.integrate"]
    if not hasattr(sys.modules["torchdiffeq"], "odeint"):
        sys.modules["torchdiffeq"].odeint = None
    tqdm_auto = sys.modules["tqdm.auto"]
    if not hasattr(tqdm_auto, "trange"):
        tqdm_auto.trange = lambda n, disable=None: range(n)
        tqdm_auto.tqdm = lambda *a, **k: None
    package = types.ModuleType("k_diffusion")
    package.__path__ = [os.path.join(directory, "k_diffusion")]
    sys.modules["k_diffusion"] = package
    modules = {}
    for name in ["utils", "sampling", "external"]:
        spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", os.path.join(directory, "k_diffusion", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"k_diffusion.{name}"] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)
        modules[name] = module
    for name in stubs:
        del sys.modules[name]
    return modules["sampling"], modules["external"]


def ldm_alphas_cumprod():
    """LDM's register_schedule (scaled linear, F64) stored as F32: what A1111 samples with."""
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


def clip_ids(text):
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer().encode(text)


def a1111_chunk(ids, zero_pad):
    """[start] + 75 tokens padded with the end token + [end]; OpenCLIP encoders: 0 after the first end."""
    assert len(ids) <= 75
    chunk = [SOT] + ids + [EOT] * (76 - len(ids))
    if zero_pad:
        first = chunk.index(EOT)
        chunk = chunk[:first + 1] + [0] * (76 - first)
    return chunk


def folded(chunk):
    return torch.tensor([[i % VOCAB for i in chunk]])


def te(folder, name="text_encoder", projection=False):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls.from_pretrained(os.path.join(MODELS, folder, name)).float().eval()


def unet_of(folder):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(os.path.join(MODELS, folder, "unet")).float().eval()


def vae_of(folder):
    from diffusers import AutoencoderKL
    path = os.path.join(MODELS, folder, "vae")
    return AutoencoderKL.from_pretrained(path).float().eval() if os.path.isdir(path) else None


def tiny_tokenizer(tmp):
    """The pipelines insist on a tokenizer; prompt embeddings are passed, so it is never used."""
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "a</w>": 3}
    with open(os.path.join(tmp, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tmp, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))


def euler_scheduler(prediction="epsilon"):
    from diffusers import EulerDiscreteScheduler
    s = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                               beta_schedule="scaled_linear", timestep_spacing="linspace",
                               prediction_type=prediction)
    s.alphas_cumprod = ldm_alphas_cumprod()
    return s


def start_noise(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=g)


def a1111_uint8(decoded):
    """processing.py: clamp((x + 1) / 2, 0, 1), then (255. * moveaxis(x, 0, 2)).astype(uint8)."""
    x = torch.clamp((decoded[0].float() + 1.0) / 2.0, min=0.0, max=1.0)
    return torch.from_numpy((255. * np.moveaxis(x.numpy(), 0, 2)).astype(np.uint8))


def save(name, tensors, metadata=None):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.safetensors")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    os.chmod(path, 0o644)


# ---------------------------------------------------------------------------------------------
# Conditioning (A1111's, computed with the peer encoders)


def sd1_conditioning(encoder, prompt, negative):
    ids = {k: clip_ids(t) for k, t in (("prompt", prompt), ("negative", negative))}
    chunks = {k: a1111_chunk(v, zero_pad=False) for k, v in ids.items()}
    with torch.no_grad():
        embeds = {k: encoder(input_ids=folded(c)).last_hidden_state for k, c in chunks.items()}
    return embeds["prompt"], embeds["negative"], chunks


def sd2_conditioning(encoder, prompt, negative):
    """FrozenOpenCLIPEmbedder(layer="penultimate"): hidden_states[-2], then ln_final."""
    ids = {k: clip_ids(t) for k, t in (("prompt", prompt), ("negative", negative))}
    chunks = {k: a1111_chunk(v, zero_pad=True) for k, v in ids.items()}
    with torch.no_grad():
        # transformers >= 5.6 flattens CLIPTextModel (no `text_model` level).
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        embeds = {k: final_norm(encoder(input_ids=folded(c), output_hidden_states=True).hidden_states[-2])
                  for k, c in chunks.items()}
    return embeds["prompt"], embeds["negative"], chunks


def sdxl_conditioning(te1, te2, prompt):
    """CLIP-L and bigG hidden_states[-2] side by side; pooled: bigG's final-normed output at the
    end token, projected. The empty negative prompt gives zeros (force_zero_embeddings)."""
    ids = clip_ids(prompt)
    c1, c2 = a1111_chunk(ids, zero_pad=False), a1111_chunk(ids, zero_pad=True)
    with torch.no_grad():
        h1 = te1(input_ids=folded(c1), output_hidden_states=True).hidden_states[-2]
        out2 = te2(input_ids=folded(c2), output_hidden_states=True)
        h2 = out2.hidden_states[-2]
        pooled = te2.text_projection(out2.last_hidden_state[:, c2.index(EOT)])
    context = torch.cat([h1, h2], dim=-1)
    return context, pooled, {"prompt_te1": c1, "prompt_te2": c2}


# ---------------------------------------------------------------------------------------------
# Cases


def sd1_pipeline(tmp, unet, encoder, vae, scheduler):
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tiny_tokenizer(tmp), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def run_euler(pipe, cond, uncond, sigmas, noise):
    """The pipeline with explicit σ (k-diffusion's); returns the final latents."""
    with torch.no_grad():
        latents = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=CFG, sigmas=sigmas,
                       latents=noise.clone(), height=SIZE, width=SIZE, output_type="latent").images
    got = pipe.scheduler.sigmas.tolist()
    assert np.allclose(got, sigmas, rtol=0, atol=0), f"scheduler changed the sigmas: {got} vs {sigmas}"
    return latents


def decode(vae, latents):
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample


def kdiffusion_sigmas(external, steps, karras=False):
    wrap = external.CompVisDenoiser(types.SimpleNamespace(alphas_cumprod=ldm_alphas_cumprod()), quantize=False)
    if karras:
        import k_diffusion.sampling as sampling
        return sampling.get_sigmas_karras(steps, wrap.sigmas[0].item(), wrap.sigmas[-1].item())
    return wrap.get_sigmas(steps)


def case_sd1_euler(tmp, external, manifest):
    unet, encoder, vae = unet_of("sd1"), te("sd1"), vae_of("sd1")
    prompt, negative = "a red cat, sitting on a mat", "blurry, dark"
    cond, uncond, chunks = sd1_conditioning(encoder, prompt, negative)
    sigmas = kdiffusion_sigmas(external, 4).tolist()
    noise = start_noise(1234)
    latents = run_euler(sd1_pipeline(tmp, unet, encoder, vae, euler_scheduler()), cond, uncond, sigmas, noise)
    decoded = decode(vae, latents)
    save("sd1_euler", {"noise": noise, "latents": latents, "decoded": decoded, "image_u8": a1111_uint8(decoded)})
    manifest["sd1_euler"] = {"model": "sd1", "prompt": prompt, "negative": negative, "sampler": "Euler", "steps": 4,
                             "cfg": CFG, "seed": 0, "noise": "file", "sigmas": sigmas, "tokens": chunks,
                             "peer": "diffusers StableDiffusionPipeline + EulerDiscreteScheduler(linspace, k-diffusion sigmas)"}


def case_sd1_ddim(tmp, manifest):
    from diffusers import DDIMScheduler
    unet, encoder, vae = unet_of("sd1"), te("sd1"), vae_of("sd1")
    prompt, negative = "a blue house", "ugly"
    cond, uncond, chunks = sd1_conditioning(encoder, prompt, negative)
    steps = 5
    s = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    s.alphas_cumprod = ldm_alphas_cumprod()
    s.final_alpha_cumprod = s.alphas_cumprod[0]
    s.set_timesteps(steps)
    a1111 = [min(max(t + 1, 0), 999) for t in range(0, 1000, 1000 // steps)]
    assert s.timesteps.tolist() == a1111[::-1], (s.timesteps, a1111)
    noise = start_noise(99)
    x = noise.clone()
    context = torch.cat([uncond, cond])
    with torch.no_grad():
        for t in s.timesteps[:-1]:          # A1111 stops at t = 1: steps - 1 model calls
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
            eps_uncond, eps_cond = out.chunk(2)
            eps = eps_uncond + CFG * (eps_cond - eps_uncond)
            x = s.step(eps, t, x, eta=0.0).prev_sample
    decoded = decode(vae, x)
    save("sd1_ddim", {"noise": noise, "latents": x, "decoded": decoded, "image_u8": a1111_uint8(decoded)})
    manifest["sd1_ddim"] = {"model": "sd1", "prompt": prompt, "negative": negative, "sampler": "DDIM", "steps": steps,
                            "cfg": CFG, "seed": 0, "noise": "file", "timesteps": a1111, "tokens": chunks,
                            "peer": "diffusers DDIMScheduler (leading, steps_offset 1) stepping all but t=1, diffusers UNet"}


def kohya_delta(lora, module, strength):
    """strength * (alpha/rank) * up @ down for one kohya module (alpha absent: scale 1)."""
    down, up = lora[f"{module}.lora_down.weight"].double(), lora[f"{module}.lora_up.weight"].double()
    rank = down.shape[0]
    alpha = lora.get(f"{module}.alpha")
    scale = (alpha.item() / rank) if alpha is not None else 1.0
    if down.dim() == 4:
        delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], down.shape[1], *down.shape[2:])
    else:
        delta = up @ down
    return strength * scale * delta


def case_sd1_lora(tmp, external, manifest):
    name, strength = "kohya_sd1_noalpha", 0.8
    path = os.path.join(LORAS, f"{name}.safetensors")
    unet, encoder, vae = unet_of("sd1"), te("sd1"), vae_of("sd1")
    before = {**{f"unet.{k}": v.clone() for k, v in unet.state_dict().items()},
              **{f"te.{k}": v.clone() for k, v in encoder.state_dict().items()}}
    pipe = sd1_pipeline(tmp, unet, encoder, vae, euler_scheduler())
    pipe.load_lora_weights(path, adapter_name="lora")
    pipe.fuse_lora(lora_scale=strength, components=["unet", "text_encoder"])
    pipe.unload_lora_weights()
    after = {**{f"unet.{k}": v for k, v in unet.state_dict().items()},
             **{f"te.{k}": v for k, v in encoder.state_dict().items()}}
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    # The fused deltas against the kohya formula (every module of the file, by shape match).
    lora = load_file(path)
    modules = sorted({k.rsplit(".lora_down", 1)[0] for k in lora if ".lora_down." in k})
    deltas = {k: (after[k] - before[k]).double() for k in changed}
    worst = 0.0
    for module in modules:
        expected = kohya_delta(lora, module, strength)
        matches = [k for k, d in deltas.items() if d.shape == expected.shape and torch.allclose(d, expected, rtol=1e-3, atol=1e-6)]
        assert matches, f"no fused weight matches module {module}"
        worst = max(worst, min((deltas[k] - expected).abs().max().item() for k in matches))
    assert len(changed) == len(modules), (len(changed), len(modules))

    prompt_text, negative = "a red cat, sitting on a mat", "blurry, dark"
    prompt = f"{prompt_text} <lora:{name}:{strength}>"
    cond, uncond, chunks = sd1_conditioning(encoder, prompt_text + " ", negative)
    sigmas = kdiffusion_sigmas(external, 4).tolist()
    noise = start_noise(1234)
    latents = run_euler(pipe, cond, uncond, sigmas, noise)

    # Merged mode / A1111: each patched weight is stored back in the file's dtype (F16 here).
    stored = {}
    for part, sub in (("unet", "unet/diffusion_pytorch_model.safetensors"), ("te", "text_encoder/model.safetensors")):
        for k, v in load_file(os.path.join(MODELS, "sd1", sub)).items():
            stored[f"{part}.{k}"] = v.dtype
    with torch.no_grad():
        for prefix, model in (("unet", unet), ("te", encoder)):
            for k, p in model.named_parameters():
                if f"{prefix}.{k}" in changed:
                    # transformers >= 5.6 names text-encoder parameters without `text_model.`.
                    dtype = stored.get(f"{prefix}.{k}") or stored[f"{prefix}.text_model.{k}"]
                    p.copy_(p.to(dtype).float())
    cond16, uncond16, _ = sd1_conditioning(encoder, prompt_text + " ", negative)
    latents16 = run_euler(pipe, cond16, uncond16, sigmas, noise)
    save("sd1_lora_euler", {"noise": noise, "latents": latents, "latents_merged_f16": latents16})
    manifest["sd1_lora_euler"] = {
        "model": "sd1", "prompt": prompt, "negative": negative, "sampler": "Euler", "steps": 4, "cfg": CFG,
        "seed": 0, "noise": "file", "lora": f"LoRATests/Fixtures/{name}.safetensors", "strength": strength,
        "tokens": chunks, "changed_weights": len(changed),
        "peer": "diffusers load_lora_weights + fuse_lora(lora_scale=0.8), then StableDiffusionPipeline as sd1_euler",
        "check_fused_vs_kohya_formula_max_abs": worst,
        "latents_merged_f16": "same, every fused weight rounded to its stored dtype (F16) before sampling"}


class CompVisShim(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser needs of an ldm model: alphas_cumprod and apply_model."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.register_buffer("alphas_cumprod", ldm_alphas_cumprod())

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


def a1111_cfg_denoiser(wrap):
    """A1111's CFGDenoiser for one prompt: [cond; uncond] in one batch, then
    denoised = uncond + (cond - uncond) * (weight * scale) on the denoised estimates."""
    def denoiser(x, sigma, cond, uncond, cond_scale):
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        out = wrap(x_in, sigma_in, cond=torch.cat([cond, uncond]))
        denoised_uncond = out[1:]
        return denoised_uncond + (out[0:1] - denoised_uncond) * (1.0 * cond_scale)
    return denoiser


def case_kdiffusion_seeded(tmp, sampling, external, manifest, name, sampler, seed, steps):
    unet, encoder, vae = unet_of("sd1"), te("sd1"), vae_of("sd1")
    prompt, negative = "a green tree in the rain", "text"
    cond, uncond, chunks = sd1_conditioning(encoder, prompt, negative)
    wrap = external.CompVisDenoiser(CompVisShim(unet), quantize=False)
    if sampler == "Euler a":
        sigmas = wrap.get_sigmas(steps)
    else:
        sigmas = sampling.get_sigmas_karras(steps, wrap.sigmas[0].item(), wrap.sigmas[-1].item())
    # A1111's ImageRNG (CPU): one generator per image; randn(C, H, W) per draw, stacked.
    g = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn((4, SIZE // 8, SIZE // 8), generator=g).unsqueeze(0)
    noise = draw()
    x = noise * sigmas[0]
    extra = {"cond": cond, "uncond": uncond, "cond_scale": CFG}
    with torch.no_grad():
        if sampler == "Euler a":
            latents = sampling.sample_euler_ancestral(a1111_cfg_denoiser(wrap), x, sigmas, extra_args=extra,
                                                      noise_sampler=lambda s, sn: draw(), eta=1.0, s_noise=1.0)
        else:
            latents = sampling.sample_dpmpp_2m(a1111_cfg_denoiser(wrap), x, sigmas, extra_args=extra)
    tensors = {"noise": noise, "latents": latents}
    if sampler == "Euler a":   # one seeded case carries the decoded image too (fixtures stay small)
        decoded = decode(vae, latents)
        tensors.update({"decoded": decoded, "image_u8": a1111_uint8(decoded)})
    save(name, tensors)
    manifest[name] = {"model": "sd1", "prompt": prompt, "negative": negative,
                      "sampler": "Euler a" if sampler == "Euler a" else "DPM++ 2M Karras", "steps": steps,
                      "cfg": CFG, "seed": seed, "noise": "seed", "sigmas": sigmas.tolist(), "tokens": chunks,
                      "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "peer": f"k-diffusion {'sample_euler_ancestral' if sampler == 'Euler a' else 'sample_dpmpp_2m + get_sigmas_karras'}"
                              " + CompVisDenoiser + A1111's CFGDenoiser combination, torch.Generator('cpu') noise"}


def case_sd2(tmp, external, manifest):
    from diffusers import StableDiffusionPipeline
    unet, encoder = unet_of("sd2"), te("sd2")
    prompt, negative = "a red cat, sitting on a mat", "blurry"
    cond, uncond, chunks = sd2_conditioning(encoder, prompt, negative)
    sigmas = kdiffusion_sigmas(external, 4).tolist()
    noise = start_noise(555)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=encoder, tokenizer=tiny_tokenizer(tmp), unet=unet,
                                   scheduler=euler_scheduler("v_prediction"), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    latents = run_euler(pipe, cond, uncond, sigmas, noise)
    # A1111's sd_models_config.is_using_v_parameterization_for_sd2, on this UNet.
    with torch.no_grad():
        x = torch.ones((1, 4, 8, 8)) * 0.5
        ctx = torch.ones((1, 2, unet.config.cross_attention_dim)) * 0.5
        probe = (unet(x, torch.asarray([999]), encoder_hidden_states=ctx).sample - x).mean().item()
    save("sd2_v_euler", {"noise": noise, "latents": latents})
    manifest["sd2_v_euler"] = {"model": "sd2", "prompt": prompt, "negative": negative, "sampler": "Euler", "steps": 4,
                               "cfg": CFG, "seed": 0, "noise": "file", "prediction": "v", "sigmas": sigmas,
                               "tokens": chunks, "a1111_v_probe_mean": probe,
                               "peer": "diffusers StableDiffusionPipeline, EulerDiscreteScheduler(v_prediction, k-diffusion sigmas)"}


def case_sdxl(tmp, external, manifest):
    from diffusers import StableDiffusionXLPipeline
    unet, te1, te2 = unet_of("sdxl"), te("sdxl"), te("sdxl", "text_encoder_2", projection=True)
    prompt = "a red cat, sitting on a mat"
    context, pooled, chunks = sdxl_conditioning(te1, te2, prompt)
    sigmas = kdiffusion_sigmas(external, 4).tolist()
    noise = start_noise(777)
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=te1, text_encoder_2=te2, tokenizer=tiny_tokenizer(tmp),
                                     tokenizer_2=tiny_tokenizer(tmp), unet=unet, scheduler=euler_scheduler(),
                                     force_zeros_for_empty_prompt=True)
    with torch.no_grad():
        latents = pipe(prompt_embeds=context, negative_prompt_embeds=torch.zeros_like(context),
                       pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=torch.zeros_like(pooled),
                       guidance_scale=CFG, sigmas=sigmas, latents=noise.clone(), height=SIZE, width=SIZE,
                       original_size=(SIZE, SIZE), target_size=(SIZE, SIZE), crops_coords_top_left=(0, 0),
                       output_type="latent").images
    save("sdxl_euler", {"noise": noise, "latents": latents})
    manifest["sdxl_euler"] = {"model": "sdxl", "prompt": prompt, "negative": "", "sampler": "Euler", "steps": 4,
                              "cfg": CFG, "seed": 0, "noise": "file", "sigmas": sigmas, "tokens": chunks,
                              "time_ids": [SIZE, SIZE, 0, 0, SIZE, SIZE],
                              "peer": "diffusers StableDiffusionXLPipeline (prompt/pooled embeds given, zeros for the empty negative)"}


def pickled_lora(manifest):
    """kohya_sd1_noalpha saved the old way, as a pickle (torch.save of the state dict): the same
    LoRA through the host's TorchPickle source."""
    os.makedirs(os.path.join(OUT, "lora"), exist_ok=True)
    path = os.path.join(OUT, "lora", "kohya_sd1_noalpha_pt.pt")
    torch.save(load_file(os.path.join(LORAS, "kohya_sd1_noalpha.safetensors")), path)
    os.chmod(path, 0o644)
    manifest["pickled_lora"] = {"file": "lora/kohya_sd1_noalpha_pt.pt",
                                "peer": "torch.save(safetensors.load_file('LoRATests/Fixtures/kohya_sd1_noalpha.safetensors'))"}


def png_fixtures(manifest):
    """RGB PNGs as A1111 saves them (PIL, PngInfo.add_text("parameters", …))."""
    from PIL import Image, PngImagePlugin
    os.makedirs(os.path.join(OUT, "png"), exist_ok=True)
    pixels = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
    cases = {"latin1": "a café, naïve\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Seed: 1",
             "utf8": "ein Kätzchen 猫 <lora:名前:0.5>\nSteps: 4, Sampler: DDIM, Seed: 2"}
    for name, text in cases.items():
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        path = os.path.join(OUT, "png", f"{name}.png")
        Image.fromarray(pixels).save(path, pnginfo=info)
        os.chmod(path, 0o644)
    manifest["png"] = {"pixels": "np.arange(45).reshape(3, 5, 3) * 5 (height 3, width 5)", "texts": cases,
                       "peer": "PIL Image.save(pnginfo=PngInfo.add_text) as A1111 images.save_image_with_geninfo"}


def write_sd15_random(folder):
    """An SD1.5-shaped model with random weights (torch's default init), as a diffusers folder
    in F16: for timing `adapterhost generate` at real shapes (not a fixture; nothing is kept)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                        block_out_channels=(128, 256, 512, 512), sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                           projection_dim=768))
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", encoder)):
        module.half().save_pretrained(os.path.join(folder, name), safe_serialization=True)
    print(f"wrote {folder}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kdiffusion")
    ap.add_argument("--sd15-random", metavar="DIR", help="only write a random SD1.5-shaped diffusers folder to DIR")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.sd15_random:
        write_sd15_random(args.sd15_random)
        return
    if not args.kdiffusion:
        raise SystemExit("the fixtures need --kdiffusion DIR")
    import diffusers  # before the k-diffusion stand-ins exist
    import transformers
    sampling, external = load_kdiffusion(args.kdiffusion)
    manifest = {"generator": "tools/gen_generation_fixtures.py",
                "torch": torch.__version__, "size": SIZE}
    manifest["diffusers"] = diffusers.__version__
    manifest["transformers"] = transformers.__version__
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        case_sd1_euler(tmp, external, cases)
        case_sd1_ddim(tmp, cases)
        case_sd1_lora(tmp, external, cases)
        case_kdiffusion_seeded(tmp, sampling, external, cases, "sd1_euler_a_seed", "Euler a", 31337, 4)
        case_kdiffusion_seeded(tmp, sampling, external, cases, "sd1_dpmpp_2m_karras", "DPM++ 2M Karras", 4242, 5)
        case_sd2(tmp, external, cases)
        case_sdxl(tmp, external, cases)
        extras = {}
        png_fixtures(extras)
        pickled_lora(extras)
    manifest["cases"] = cases
    manifest.update(extras)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    for name, case in cases.items():
        print(name, "-", case.get("peer", ""))


if __name__ == "__main__":
    main()
