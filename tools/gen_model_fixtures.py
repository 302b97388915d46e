#!/usr/bin/env python3
"""Tiny Stable Diffusion model fixtures for Tests/HostTests (key maps, family detection, targets).

Run with the peers venv (no hub access needed; everything is built from configs):

    /work/venv/peers/bin/python tools/gen_model_fixtures.py

For each family (SD1, SD2, SDXL) it builds a random-initialised model with the real block
structure (SD1: 4 levels x 2 resnets, cross-attention in the first 3, conv proj_in; SD2: the
same with linear proj_in and a gelu "OpenCLIP" encoder; SDXL: 3 levels, transformer depth
(1, 2, 2), two encoders, text_time embedding) and tiny widths (UNet/VAE channels 4/8, GroupNorm
4 groups, text width 32, 2 layers), then writes into Tests/HostTests/Fixtures/models/:

  <name>/                  diffusers folder: unet/, text_encoder/, [text_encoder_2/], [vae/]
                           (`*.safetensors` + config.json; text encoders keep the classic
                           `text_model.` key prefix that every published diffusers repo has)
  <name>.safetensors       the same weights as an A1111/ComfyUI single file (ldm keys for SD1/SD2,
                           sgm keys for SDXL), written by THIS script's own key mapping, then proven
                           with diffusers' `from_single_file(..., config=<local pipeline folder>)`:
                           every tensor must equal the original model's tensor.
  <name>.keymap.json       (single-file key, diffusers key, transform) triples produced by the
                           PEER's conversion functions (diffusers.loaders.single_file_utils), plus
                           the single-file keys the peer drops.
  <name>.targets.json      per layer: which peers named it (LyCORIS kohya network, LyCORIS
                           standalone wrapper, PEFT) and its layer kind; see build_targets.

plus sd1_inpaint.safetensors: a UNet-only single file, 9 input channels, all F32.

Only SD1 carries a VAE (its mapping is family-independent); SD2's text encoder is F32 inside
otherwise F16 files. Everything is seeded: reruns write identical files.

Transforms: "id"; "qkv0"/"qkv1"/"qkv2" (third i of OpenCLIP's fused in_proj rows);
"conv1x1" (ldm conv weight [C,C,1,1] <-> diffusers linear [C,C]); "T" (transpose).
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")

logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

# ----------------------------------------------------------------------------------------------
# Tiny architectures (real block structure, tiny widths)
# ----------------------------------------------------------------------------------------------

VOCAB = 64


def te_config(hidden, act, projection=None, layers=2):
    return CLIPTextConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                          num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=77,
                          hidden_act=act, projection_dim=projection or hidden,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def vae_model():
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=4,
                         block_out_channels=(4, 4, 8, 8), sample_size=32,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def sd1_unet(in_channels=4, linear=False, context=32):
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(4, 4, 8, 8), norm_num_groups=4, cross_attention_dim=context,
        attention_head_dim=2, use_linear_projection=linear,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def sdxl_unet(context, pooled):
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(4, 8, 8), norm_num_groups=4, cross_attention_dim=context,
        attention_head_dim=2, use_linear_projection=True, transformer_layers_per_block=(1, 2, 2),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + pooled)


def randomize(module, seed):
    """Every parameter random (norm weights too), so each tensor has distinct values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def tokenizer(tmp):
    """A CLIP tokenizer over a tiny vocabulary (the pipeline wants one; no hub)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    d = tempfile.mkdtemp(dir=tmp)
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))


# ----------------------------------------------------------------------------------------------
# Our own diffusers -> single-file (ldm/sgm) mapping, used to WRITE the single files.
# (The Swift side has its own tables; the peer proves this file and gives the key pairs.)
# ----------------------------------------------------------------------------------------------

RESNET_TO_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                 ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(sd, config):
    L = config.layers_per_block
    has_attn = ["CrossAttn" in t for t in config.up_block_types]
    out = {}
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for key, t in sd.items():
        parts = key.split(".")
        new = None
        for d, l in fixed.items():
            if key.startswith(d + "."):
                new = l + key[len(d):]
        if new is None:
            if parts[0] in ("down_blocks", "up_blocks"):
                b, kind = int(parts[1]), parts[2]
                if kind in ("downsamplers", "upsamplers"):
                    rest = ".".join(parts[5:])  # after `<kind>.0.conv`
                else:
                    j = int(parts[3])
                    rest = ".".join(parts[4:])
                    if kind == "resnets":
                        for d, l in RESNET_TO_LDM:
                            if rest.startswith(d + "."):
                                rest = l + rest[len(d):]
                    slot = 0 if kind == "resnets" else 1
                if parts[0] == "down_blocks":
                    if kind == "downsamplers":
                        new = f"input_blocks.{1 + b * (L + 1) + L}.0.op.{rest}"
                    else:
                        new = f"input_blocks.{1 + b * (L + 1) + j}.{slot}.{rest}"
                else:
                    if kind == "upsamplers":
                        new = f"output_blocks.{b * (L + 1) + L}.{2 if has_attn[b] else 1}.conv.{rest}"
                    else:
                        new = f"output_blocks.{b * (L + 1) + j}.{slot}.{rest}"
            elif parts[0] == "mid_block":
                kind, j = parts[1], int(parts[2])
                rest = ".".join(parts[3:])
                if kind == "attentions":
                    new = f"middle_block.1.{rest}"
                else:
                    for d, l in RESNET_TO_LDM:
                        if rest.startswith(d + "."):
                            rest = l + rest[len(d):]
                    new = f"middle_block.{0 if j == 0 else 2}.{rest}"
        assert new is not None, key
        out["model.diffusion_model." + new] = t
    return out


def vae_to_ldm(sd, config):
    n = len(config.up_block_types)
    out = {}
    for key, t in sd.items():
        new = key.replace("conv_norm_out", "norm_out")
        p = new.split(".")
        if p[1] == "down_blocks":
            if p[3] == "resnets":
                new = f"{p[0]}.down.{p[2]}.block.{p[4]}." + ".".join(p[5:])
            else:
                new = f"{p[0]}.down.{p[2]}.downsample.conv." + ".".join(p[6:])
        elif p[1] == "up_blocks":
            i = n - 1 - int(p[2])
            if p[3] == "resnets":
                new = f"{p[0]}.up.{i}.block.{p[4]}." + ".".join(p[5:])
            else:
                new = f"{p[0]}.up.{i}.upsample.conv." + ".".join(p[6:])
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                new = f"{p[0]}.mid.block_{int(p[3]) + 1}." + ".".join(p[4:])
            else:
                inner = ".".join(p[4:])
                for d, l in [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                             ("to_out.0.", "proj_out.")]:
                    if inner.startswith(d):
                        inner = l + inner[len(d):]
                new = f"{p[0]}.mid.attn_1.{inner}"
                if t.ndim == 2:
                    t = t[:, :, None, None]  # ldm uses 1x1 convolutions there
        new = new.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = t
    return out


def clip_to_ldm(sd, prefix):
    """HF CLIP keys inside the ldm checkpoint (SD1 `cond_stage_model.transformer.`, SDXL embedder 0)."""
    return {prefix + "text_model." + k.removeprefix("text_model."): t for k, t in sd.items()}


def open_clip_to_ldm(sd, prefix, keep_projection):
    """HF CLIP keys -> OpenCLIP keys with fused in_proj (SD2 `cond_stage_model.model.`, SDXL embedder 1)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {}
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    for k, v in fixed.items():
        out[prefix + v] = sd[k]
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                     ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]:
            for wb in ("weight", "bias"):
                out[f"{dst}{b}.{wb}"] = sd[f"{src}{a}.{wb}"]
        for wb in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{wb}"] = torch.cat([sd[f"{src}self_attn.{x}_proj.{wb}"] for x in "qkv"], 0)
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    elif keep_projection is not None:
        out[prefix + "text_projection"] = keep_projection
    return out


# ----------------------------------------------------------------------------------------------
# Peer key pairs: run diffusers' own converters and recover where every output tensor came from
# ----------------------------------------------------------------------------------------------

def digest(t):
    return hashlib.sha1(t.detach().contiguous().float().numpy().tobytes() + str(list(t.shape)).encode()).hexdigest()


def peer_pairs(ckpt, family, unet, vae, te, te2):
    origin = {}
    for k, t in ckpt.items():
        origin.setdefault(digest(t), (k, "id"))
        if t.ndim == 4 and t.shape[2:] == (1, 1):
            origin.setdefault(digest(t[:, :, 0, 0]), (k, "conv1x1"))
        if t.ndim == 2:
            origin.setdefault(digest(t.T), (k, "T"))
        if k.endswith("in_proj_weight") or k.endswith("in_proj_bias"):
            h = t.shape[0] // 3
            for i in range(3):
                origin.setdefault(digest(t[i * h:(i + 1) * h]), (k, f"qkv{i}"))
    converted = []
    converted += [("unet." + k, v) for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, unet.config).items()]
    if vae is not None:
        converted += [("vae." + k, v) for k, v in sfu.convert_ldm_vae_checkpoint(ckpt, vae.config).items()]
    if family == "sd1":
        converted += [("text_encoder." + k, v) for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()]
    elif family == "sd2":
        converted += [("text_encoder." + k, v) for k, v in
                      sfu.convert_open_clip_checkpoint(te, ckpt, prefix="cond_stage_model.model.").items()]
    else:
        converted += [("text_encoder." + k, v) for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()]
        converted += [("text_encoder_2." + k, v) for k, v in
                      sfu.convert_open_clip_checkpoint(te2, ckpt, prefix="conditioner.embedders.1.model.").items()]
    pairs = []
    for dkey, t in converted:
        src = origin.get(digest(t))
        assert src is not None, f"peer output {dkey} matches no single-file tensor"
        pairs.append([src[0], dkey, src[1]])
    used = {p[0] for p in pairs}
    unmapped = sorted(k for k in ckpt if k not in used)
    return pairs, unmapped


# ----------------------------------------------------------------------------------------------
# Adapter names from the peers' naming, and the targets they must resolve to
# ----------------------------------------------------------------------------------------------

def lycoris_kohya_names(unet, tes):
    """LyCORIS's kohya network (sd-scripts naming: prefix + '.' + module path, '.' -> '_')."""
    from lycoris import kohya
    # LyCORIS's "full" preset lists TimestepEmbedding AND time_embedding.linear_1/2 by name, which
    # makes its own duplicate-name assertion fire on a diffusers UNet; same targets, listed once.
    preset = os.path.join(tempfile.mkdtemp(), "preset.toml")
    with open(preset, "w") as f:
        f.write('enable_conv = true\n'
                'unet_target_module = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D", '
                '"TimestepEmbedding"]\n'
                'unet_target_name = ["conv_in", "conv_out"]\n'
                'text_encoder_target_module = ["CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"]\n'
                'text_encoder_target_name = []\n')
    wrapped = [_with_text_model(te) for te in tes]
    net = kohya.create_network(1.0, 1, 1, None, wrapped if len(wrapped) > 1 else wrapped[0], unet,
                               algo="lora", preset=preset, warn_on_unmatched=False)
    names = {}
    for lora in net.unet_loras:
        names[lora.lora_name] = ("unet", lora)
    for lora in net.text_encoder_loras:
        names[lora.lora_name] = ("te", lora)
    return names


class _TextModelHolder(torch.nn.Module):
    """transformers >= 5.6 flattened CLIPTextModel; published adapters were named over the
    classic tree `text_model.encoder.…`, so present that tree to the namers."""

    def __init__(self, te):
        super().__init__()
        self.text_model = te

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["text_model"], name)


def _with_text_model(te):
    return te if hasattr(te, "text_model") else _TextModelHolder(te)


def lycoris_wrapper_names(module):
    """LyCORIS standalone wrapper: `lycoris_` + module path with '_' (SimpleTuner files), incl. norms."""
    from lycoris import LycorisNetwork, create_lycoris
    LycorisNetwork.apply_preset({"target_module": ["Linear", "Conv2d", "GroupNorm", "LayerNorm"],
                                 "target_name": [], "module_algo_map": {}, "name_algo_map": {}})
    net = create_lycoris(module, 1.0, linear_dim=1, linear_alpha=1, algo="lora", train_norm=True,
                         warn_on_unmatched=False)
    return [l.lora_name for l in net.loras]


def peft_names(module, prefix):
    """PEFT LoRA state-dict module names (what diffusers' save_lora_weights writes, `unet.`/`text_encoder.`)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    import copy
    m = copy.deepcopy(module)
    targets = [n for n, x in m.named_modules() if isinstance(x, (torch.nn.Linear, torch.nn.Conv2d))]
    inject_adapter_in_model(LoraConfig(r=1, target_modules=targets), m)
    keys = get_peft_model_state_dict(m).keys()
    return sorted({prefix + k[: -len(".lora_A.weight")] for k in keys if k.endswith(".lora_A.weight")})


def layer_kind(mod, rank):
    if isinstance(mod, torch.nn.Conv2d):
        return f"conv2d:{mod.stride[0]}:{mod.padding[0] if isinstance(mod.padding, tuple) else 0}"
    if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
        return "norm"
    if isinstance(mod, torch.nn.Embedding):
        return "embedding"
    if isinstance(mod, torch.nn.Linear):
        return "conv2d:1:0" if rank == 4 else "linear"
    raise ValueError(type(mod))


def build_targets(components, pairs, ckpt, diff_keys, kohya, lyc, peft):
    """One entry per (component, module path): the peers' names for it and its layer kind.

    The expected target keys come from the PEER key pairs (keymap JSON): the diffusers model's
    target is `<m>.weight`/`<m>.bias`; the single file's is the single-file key paired with it
    (rows from a "qkvN" transform). Entry: {"m": module, "n": {dialect: name}, "k": layer kind in
    the diffusers model, "ks": layer kind in the single file when it differs}.

    Names the Swift test derives itself, by rules checked here or taken from the peer key pairs:
    kohya `lora_unet_`/`lora_te_`/`lora_te1_`/`lora_te2_` + path with '_'; lycoris `lycoris_` + path;
    PEFT `<component>.<path>` (and without `text_model.` for transformers >= 5.6 trees); kohya's
    sgm spelling `lora_unet_` + (single-file key of the weight, minus `model.diffusion_model.` and
    `.weight`) with '_' — sd-scripts' sdxl_original_unet names its modules by sgm paths — and
    ComfyUI's plain `diffusion_model.<sgm path>`."""
    d2s = {d: (s, tr) for s, d, tr in pairs}
    modules = {}
    for comp, model in components.items():
        for path, mod in model.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm,
                                torch.nn.Embedding)):
                modules[(comp, _classic(comp, path))] = mod
    entries = {}

    def add(comp, path, name, dialect):
        if (comp, path) not in modules:
            raise KeyError(f"{name}: no module {comp}.{path}")
        names = entries.setdefault((comp, path), {})
        assert dialect not in names, (name, names)
        names[dialect] = name

    te_comps = [c for c in components if c.startswith("text_encoder")]
    for name, (kind, lora) in kohya.items():
        mod = lora.org_module[0] if isinstance(lora.org_module, list) else lora.org_module
        comp, path = _find(components, mod, te_comps if kind == "te" else ["unet"])
        add(comp, path, name, "kohya")
    for comp, names in lyc.items():
        model = components[comp]
        for name in names:
            add(comp, _lycoris_path(_with_text_model(model) if comp in te_comps else model, name), name, "lycoris")
    for (comp, flat), names in peft.items():
        for name in names:
            add(comp, _classic(comp, name[len(comp) + 1:]), name, "peft-flat" if flat else "peft")
    out = []
    te_kohya = {"text_encoder": "lora_te1_" if len(te_comps) > 1 else "lora_te_", "text_encoder_2": "lora_te2_"}
    for (comp, path), names in sorted(entries.items()):
        # The fixture stores which peers named the module; each peer's name is checked here against
        # the naming rule the Swift test rebuilds it with (so the JSON stays small).
        flat = path.removeprefix("text_model.")
        rules = {"kohya": ("lora_unet_" if comp == "unet" else te_kohya[comp]) + path.replace(".", "_"),
                 "lycoris": "lycoris_" + path.replace(".", "_"),
                 "peft": f"{comp}.{path}", "peft-flat": f"{comp}.{flat}"}
        for dialect, name in names.items():
            assert name == rules[dialect], (dialect, name, rules[dialect])
        mod = modules[(comp, path)]
        dkey = f"{comp}.{path}.weight"
        assert dkey in diff_keys, dkey
        skey, transform = d2s[dkey]
        e = {"m": f"{comp}.{path}", "n": sorted(names), "k": layer_kind(mod, diff_keys[dkey])}
        ks = layer_kind(mod, ckpt[skey].ndim)
        if transform == "T":
            e["ks"] = None  # stored transposed in the single file (OpenCLIP text_projection): no target there
        elif ks != e["k"]:
            e["ks"] = ks
        out.append(e)
    return out


def _classic(comp, path):
    """Module path in the classic (pre transformers 5.6) text-encoder tree: `text_model.…`."""
    if comp.startswith("text_encoder") and not path.startswith(("text_model.", "text_projection")):
        return "text_model." + path
    return path


def _find(components, mod, comps):
    for comp in comps:
        for path, m in components[comp].named_modules():
            if m is mod:
                if comp.startswith("text_encoder") and not path.startswith(("text_model.", "text_projection")):
                    path = "text_model." + path
                return comp, path
    raise KeyError(mod)


def _lycoris_path(model, name):
    table = {("lycoris_" + p).replace(".", "_"): p for p, _ in model.named_modules()}
    return table[name]


# ----------------------------------------------------------------------------------------------
# Fixture assembly
# ----------------------------------------------------------------------------------------------

def te_state(te):
    """Text-encoder state with the classic `text_model.` prefix (published diffusers repos)."""
    sd = te.state_dict()
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in sd.items()}


def save_component(folder, sub, filename, state, config_dict, dtype):
    d = os.path.join(folder, sub)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, os.path.join(d, filename))
    os.chmod(os.path.join(d, filename), 0o644)
    # `_use_default_values` is a set in diffusers: sorted, so reruns write identical files.
    config = {k: sorted(v) if k == "_use_default_values" else v for k, v in config_dict.items()}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True, default=str)


def build_models(family, dtype, seed, inpaint=False):
    vae = randomize(vae_model(), seed * 100 + 1)
    te2 = None
    if family == "sd1":
        te = randomize(CLIPTextModel(te_config(32, "quick_gelu")), seed * 100 + 2)
        unet = randomize(sd1_unet(in_channels=9 if inpaint else 4), seed * 100 + 3)
    elif family == "sd2":
        te = randomize(CLIPTextModel(te_config(32, "gelu")), seed * 100 + 2)
        unet = randomize(sd1_unet(linear=True), seed * 100 + 3)
    else:
        te = randomize(CLIPTextModel(te_config(32, "quick_gelu")), seed * 100 + 2)
        # OpenCLIP-bigG stand-in: a different width from CLIP-L (diffusers tells the two apart by width)
        te2 = randomize(CLIPTextModelWithProjection(te_config(16, "gelu", projection=16)), seed * 100 + 4)
        unet = randomize(sdxl_unet(context=32 + 16, pooled=16), seed * 100 + 3)
    # Round through the fixture dtype first so single file, folder and peer all hold the same values.
    with torch.no_grad():
        for m in (vae, te, te2, unet):
            if m is not None:
                for p in m.parameters():
                    p.copy_(p.to(dtype).float())
                m.eval()
    return unet, vae, te, te2


def save_single(path, ckpt, dtype, f32_prefixes=()):
    """Floats in `dtype`, except keys under `f32_prefixes` and schedule buffers (kept F32, as in
    real mixed-precision checkpoints)."""
    def cast(k, v):
        if not v.is_floating_point() or k == "alphas_cumprod" or k.startswith(tuple(f32_prefixes)):
            return v.float() if v.is_floating_point() else v
        return v.to(dtype)
    save_file({k: cast(k, v).contiguous() for k, v in ckpt.items()}, path,
              metadata={"generator": "tools/gen_model_fixtures.py"})
    os.chmod(path, 0o644)  # safetensors writes through a private temp file


def assert_same(mine, theirs, what):
    assert set(mine) == set(theirs), f"{what}: key sets differ: {sorted(set(mine) ^ set(theirs))[:8]}"
    for k in mine:
        assert torch.equal(mine[k].float(), theirs[k].float()), f"{what}.{k} differs after from_single_file"
    return len(mine)


def make_inpaint(name, dtype, sd1_pairs):
    """A UNet-only single file (9 input channels), as inpainting UNets are often shared."""
    print(f"== {name}")
    tmp = tempfile.mkdtemp()
    unet, _, _, _ = build_models("sd1", dtype, 11, inpaint=True)
    ckpt = unet_to_ldm(unet.state_dict(), unet.config)
    path = os.path.join(OUT, name + ".safetensors")
    save_single(path, ckpt, dtype)
    unet.save_config(os.path.join(tmp, "unet"))
    loaded = UNet2DConditionModel.from_single_file(path, config=tmp, subfolder="unet", local_files_only=True)
    n = assert_same(unet.state_dict(), loaded.state_dict(), "unet")
    print(f"   from_single_file proof: {n} tensors equal")
    # The peer's UNet key pairs for it are exactly SD1's (the Swift tests reuse sd1.keymap.json).
    unet_pairs = _pairs_by_identity(ckpt, sfu.convert_ldm_unet_checkpoint(ckpt, unet.config), "unet.")
    assert sorted(unet_pairs) == sorted(p for p in sd1_pairs if p[1].startswith("unet.")), "inpaint pairs != sd1"
    shutil.rmtree(tmp, ignore_errors=True)


def _pairs_by_identity(ckpt, converted, prefix):
    origin = {digest(t): k for k, t in ckpt.items()}
    return [[origin[digest(t)], prefix + k, "id"] for k, t in converted.items()]


def make(name, family, dtype):
    print(f"== {name}")
    tmp = tempfile.mkdtemp()
    seed = {"sd1": 1, "sd2": 2, "sdxl": 3}[family]
    unet, vae, te, te2 = build_models(family, dtype, seed)

    # Only the SD1 fixtures carry a VAE (its mapping does not depend on the family; this keeps the
    # fixtures small and also covers checkpoints and folders without one).
    if family != "sd1":
        vae = None
    # SD2's text encoder stays F32 in both files (mixed-dtype checkpoints exist; F32 coverage).
    te_dtype = torch.float32 if family == "sd2" else dtype
    if family == "sd2":
        with torch.no_grad():
            for p in te.parameters():
                p.copy_(p.float())

    # single file, written with our own mapping
    ckpt = {}
    ckpt.update(unet_to_ldm(unet.state_dict(), unet.config))
    if vae is not None:
        ckpt.update(vae_to_ldm(vae.state_dict(), vae.config))
    if family == "sd1":
        ckpt.update(clip_to_ldm(te_state(te), "cond_stage_model.transformer."))
        # a non-model buffer real SD1 checkpoints carry (must be ignored, not mapped)
        ckpt["alphas_cumprod"] = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0)
    elif family == "sd2":
        g = torch.Generator().manual_seed(seed * 100 + 5)
        # SD2 files keep OpenCLIP's text_projection and logit_scale; diffusers' SD2 text encoder has neither.
        ckpt.update(open_clip_to_ldm(te_state(te), "cond_stage_model.model.",
                                     keep_projection=(torch.randn(32, 32, generator=g) * 0.5).to(dtype).float()))
        ckpt["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    else:
        ckpt.update(clip_to_ldm(te_state(te), "conditioner.embedders.0.transformer."))
        ckpt.update(open_clip_to_ldm(te_state(te2), "conditioner.embedders.1.model.", keep_projection=None))
        ckpt["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052)
    single_path = os.path.join(OUT, name + ".safetensors")
    save_single(single_path, ckpt, dtype, f32_prefixes=["cond_stage_model."] if family == "sd2" else [])

    # diffusers folder
    components = {"unet": unet, "text_encoder": te}
    states = {"unet": unet.state_dict(), "text_encoder": te_state(te)}
    if vae is not None:
        components["vae"] = vae
        states["vae"] = vae.state_dict()
    if te2 is not None:
        components["text_encoder_2"] = te2
        states["text_encoder_2"] = te_state(te2)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    save_component(folder, "unet", "diffusion_pytorch_model.safetensors", states["unet"], dict(unet.config), dtype)
    if vae is not None:
        save_component(folder, "vae", "diffusion_pytorch_model.safetensors", states["vae"], dict(vae.config), dtype)
    save_component(folder, "text_encoder", "model.safetensors", states["text_encoder"], te.config.to_dict(),
                   te_dtype)
    if te2 is not None:
        save_component(folder, "text_encoder_2", "model.safetensors", states["text_encoder_2"],
                       te2.config.to_dict(), dtype)

    # PROOF: the peer loads our single file into models equal to the originals.
    tok = tokenizer(tmp)
    sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False)
    pipe_dir = os.path.join(tmp, "pipe")
    stand_in_vae = vae or randomize(vae_model(), 0)  # the pipeline needs one; not in the checkpoint
    extra = {} if vae is not None else {"vae": stand_in_vae}
    if family == "sdxl":
        StableDiffusionXLPipeline(vae=stand_in_vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                  tokenizer_2=tok, unet=unet, scheduler=sched).save_pretrained(pipe_dir)
        loaded = StableDiffusionXLPipeline.from_single_file(single_path, config=pipe_dir, local_files_only=True,
                                                            tokenizer=tok, tokenizer_2=tok, scheduler=sched, **extra)
    else:
        StableDiffusionPipeline(vae=stand_in_vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(pipe_dir)
        loaded = StableDiffusionPipeline.from_single_file(single_path, config=pipe_dir, local_files_only=True,
                                                          tokenizer=tok, scheduler=sched, safety_checker=None,
                                                          feature_extractor=None, **extra)
    checked = sum(assert_same(m.state_dict(), getattr(loaded, c).state_dict(), c) for c, m in components.items())
    print(f"   from_single_file proof: {checked} tensors equal")

    # peer key pairs
    pairs, unmapped = peer_pairs(ckpt, family, unet, vae, te, te2)
    diff_keys = {f"{c}.{k}": v.ndim for c, st in states.items() for k, v in st.items()}
    peer_dkeys = {p[1] for p in pairs}
    # the peer's converted key set must be exactly the diffusers model's key set
    assert peer_dkeys == set(diff_keys), f"pair coverage differs: {sorted(peer_dkeys ^ set(diff_keys))[:8]}"
    layout = {"unetLevels": len(unet.config.down_block_types), "layersPerBlock": unet.config.layers_per_block,
              "vaeLevels": len(vae.config.down_block_types) if vae is not None else None}
    with open(os.path.join(OUT, name + ".keymap.json"), "w") as f:
        f.write('{"family": "%s", "layout": %s,\n "unmappedSingleFile": %s,\n "pairs": [\n' %
                (family, json.dumps(layout, sort_keys=True), json.dumps(unmapped)))
        f.write(",\n".join(json.dumps(p) for p in sorted(pairs)))
        f.write("\n]}\n")

    # adapter names from the peers
    tes = [te] if te2 is None else [te, te2]
    kohya = lycoris_kohya_names(unet, tes)
    lyc = {"unet": lycoris_wrapper_names(unet)}
    if te2 is None:  # bare `lycoris_text_model_…` names only say which encoder when there is one
        lyc["text_encoder"] = lycoris_wrapper_names(_with_text_model(te))
    peft = {("unet", False): peft_names(unet, "unet.")}
    for comp in [c for c in components if c.startswith("text_encoder")]:
        peft[(comp, False)] = peft_names(_with_text_model(components[comp]), comp + ".")
        if not hasattr(components[comp], "text_model"):
            # transformers >= 5.6 names the same modules without `text_model.`
            peft[(comp, True)] = peft_names(components[comp], comp + ".")
    targets = build_targets(components, pairs, ckpt, diff_keys, kohya, lyc, peft)
    with open(os.path.join(OUT, name + ".targets.json"), "w") as f:
        f.write('{"family": "%s", "targets": [\n' % family)
        f.write(",\n".join(json.dumps(e, sort_keys=True) for e in targets))
        f.write("\n]}\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return pairs


def main():
    os.makedirs(OUT, exist_ok=True)
    sd1_pairs = make("sd1", "sd1", torch.float16)
    make("sd2", "sd2", torch.float16)
    make("sdxl", "sdxl", torch.float16)
    make_inpaint("sd1_inpaint", torch.float32, sd1_pairs)  # the all-F32 fixture
    total = 0
    for dirpath, _, files in os.walk(OUT):
        for fn in files:
            total += os.path.getsize(os.path.join(dirpath, fn))
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    main()
