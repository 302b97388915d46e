#!/usr/bin/env python3
"""Conformance fixtures for Tests/LoRATests: LoRA-family adapter files made by the peers, and
the merged weights a correct loader must produce on the tiny SD1/SDXL models.

Run with the peers venv after tools/gen_model_fixtures.py (it reuses that script's tiny
models in Tests/HostTests/Fixtures/models):

    /work/venv/peers/bin/python tools/gen_lora_fixtures.py

Writes Tests/LoRATests/Fixtures/:

  <case>.safetensors            the adapter file, as the peer wrote it
  <case>.expected.safetensors   every model tensor the adapter changes, merged (F32), keyed by the
                                model's SINGLE-FILE key (ldm/sgm, what A1111 loads)
  manifest.json                 per case: model, strengths, which peer produced the file, where the
                                expected values come from, and every peer cross-check with its
                                max |difference| (peer discrepancies are recorded, not hidden)
  unit.safetensors + unit.json  small float64 references for the Swift unit tests (OFT Cayley,
                                BOFT, DoRA on both axes at strength 1 and 0.6, LoKr, LoHa Tucker)

Expected values come from a peer merge (diffusers `fuse_lora`, PEFT `merge`, LyCORIS
`get_merged_weight`) where that peer handles the type correctly, else from A1111's formula
computed in float64 by this script (`a1111_*` below, written from the A1111 extension's code).
Each case records which one it used ("expectedFrom") and how the others compare ("checks").
"""
import copy
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file


DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def save_file(tensors, path, metadata=None):
    """safetensors with a reproducible header (sorted names and metadata; the reference writer
    keeps metadata in a hash map, so its bytes change from run to run)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in sorted(metadata.items())}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=False, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)

logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)
logging.getLogger("lycoris").setLevel(logging.ERROR)
logging.getLogger("LyCORIS").setLevel(logging.ERROR)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")
OUT = os.path.join(ROOT, "Tests", "LoRATests", "Fixtures")

torch.set_grad_enabled(False)


# ----------------------------------------------------------------------------------------------
# The tiny models (from tools/gen_model_fixtures.py) and where each diffusers tensor lives in the
# single file
# ----------------------------------------------------------------------------------------------

class TextModelHolder(torch.nn.Module):
    """transformers >= 5 flattened CLIPTextModel; published adapters are named over the classic
    tree `text_model.encoder.…`, so peers that name modules by path see that tree."""

    def __init__(self, te):
        super().__init__()
        self.text_model = te

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["text_model"], name)


def with_text_model(te):
    return te if hasattr(te, "text_model") else TextModelHolder(te)


def unwrap(te):
    return te.text_model if isinstance(te, TextModelHolder) else te


def digest(t):
    return hashlib.sha1(t.detach().contiguous().float().numpy().tobytes() + str(list(t.shape)).encode()).hexdigest()


class TinyModel:
    def __init__(self, name):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection
        self.name = name
        folder = os.path.join(MODELS, name)
        self.single_path = os.path.join(MODELS, name + ".safetensors")
        self.single = {k: v for k, v in load_file(self.single_path).items()}
        self.dtype = self.single["model.diffusion_model.input_blocks.0.0.weight"].dtype
        self.components = {
            "unet": UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")).float().eval(),
            "text_encoder": with_text_model(CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")).float().eval()),
        }
        if os.path.isdir(os.path.join(folder, "text_encoder_2")):
            self.components["text_encoder_2"] = with_text_model(
                CLIPTextModelWithProjection.from_pretrained(os.path.join(folder, "text_encoder_2")).float().eval())
        # single-file key and transform for every component tensor, by value (the values are random
        # and distinct, so equal digests mean the same tensor)
        origin = {}
        for k, t in self.single.items():
            if not t.is_floating_point():
                continue
            origin.setdefault(digest(t), (k, "id"))
            if t.ndim == 4 and t.shape[2:] == (1, 1):
                origin.setdefault(digest(t[:, :, 0, 0]), (k, "conv1x1"))
            if t.ndim == 2:
                origin.setdefault(digest(t.T), (k, "T"))
            if k.endswith("in_proj_weight") or k.endswith("in_proj_bias"):
                h = t.shape[0] // 3
                for i in range(3):
                    origin.setdefault(digest(t[i * h:(i + 1) * h]), (k, f"qkv{i}"))
        self.where = {}
        for comp, model in self.components.items():
            for pname, p in model.named_parameters():
                src = origin.get(digest(p.to(self.dtype)))
                assert src is not None, f"{name}: {comp}.{pname} has no single-file tensor"
                self.where[(comp, pname)] = src

    def sgm_name(self, comp, path):
        """kohya's SDXL UNet spelling: `lora_unet_` + the sgm (single-file) module path."""
        sf, _ = self.where[(comp, path + ".weight")]
        return "lora_unet_" + sf[len("model.diffusion_model."):-len(".weight")].replace(".", "_")

    def fresh(self):
        """Independent copies of the components (peers mutate what they touch)."""
        return {k: copy.deepcopy(v) for k, v in self.components.items()}


class Expected:
    """Merged single-file tensors built from merged diffusers-shaped parameters."""

    def __init__(self, model):
        self.model = model
        self.tensors = {}

    def put(self, comp, pname, merged):
        sf, transform = self.model.where[(comp, pname)]
        base = self.tensors.get(sf)
        if base is None:
            base = self.model.single[sf].double().clone()
        merged = merged.double()
        if transform == "id":
            base = merged.reshape(base.shape)
        elif transform == "conv1x1":
            base = merged.reshape(base.shape)
        elif transform == "T":
            base = merged.T.clone()
        elif transform.startswith("qkv"):
            i = int(transform[3])
            h = base.shape[0] // 3
            base[i * h:(i + 1) * h] = merged.reshape(base[i * h:(i + 1) * h].shape)
        self.tensors[sf] = base

    def diff(self, other):
        keys = set(self.tensors) | set(other.tensors)
        worst = 0.0
        for k in keys:
            a = self.tensors.get(k, self.model.single[k].double())
            b = other.tensors.get(k, self.model.single[k].double())
            worst = max(worst, (a - b).abs().max().item())
        return worst


def base_weight(model, comp, pname):
    """The model's parameter as float64 (the fixture dtype's values, exactly)."""
    return dict(model.components[comp].named_parameters())[pname].double()


# ----------------------------------------------------------------------------------------------
# A1111's formulas, float64 (from stable-diffusion-webui extensions-builtin/Lora: network_lora,
# network_hada, network_lokr, network_full, network_norm, network_ia3, network_oft,
# network_glora, network.finalize_updown / apply_weight_decompose, lyco_helpers)
# ----------------------------------------------------------------------------------------------

def mat(t):
    return t.reshape(t.shape[0], -1)


def cp(t, wa, wb):
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)


def a1111_lora(w, W, scale, dyn=None):
    up, down, mid = w["up"], w["down"], w.get("mid")
    if mid is not None:
        d = torch.einsum("n m k l, i n, m j -> i j k l", mid, mat(up), mat(down))
    else:
        u, dn = mat(up), mat(down)
        if dyn is not None:
            u, dn = u[:, :dyn], dn[:dyn]
        d = u @ dn
    return d.reshape(W.shape) * scale


def a1111_loha(w, W, scale):
    if "hada_t1" in w:
        d1 = cp(w["hada_t1"], w["hada_w1_a"], w["hada_w1_b"])
    else:
        d1 = mat(w["hada_w1_a"]) @ mat(w["hada_w1_b"])
    if "hada_t2" in w:
        d2 = cp(w["hada_t2"], w["hada_w2_a"], w["hada_w2_b"])
    else:
        d2 = mat(w["hada_w2_a"]) @ mat(w["hada_w2_b"])
    return (d1.reshape(W.shape) * d2.reshape(W.shape)) * scale


def a1111_lokr(w, W, scale):
    w1 = w["lokr_w1"] if "lokr_w1" in w else w["lokr_w1_a"] @ w["lokr_w1_b"]
    if "lokr_w2" in w:
        w2 = w["lokr_w2"]
    elif "lokr_t2" in w:
        w2 = cp(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
    else:
        w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
    if w2.ndim == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    return torch.kron(w1, w2.contiguous()).reshape(W.shape) * scale


def a1111_dora(W, unit, magnitude, on_output, strength):
    """A1111 1.10 finalize_updown: updown·scale → DoRA renormalisation → ·multiplier.
    (A1111 itself only implements the per-input axis; the per-output axis is the same
    operation on the other axis, as LyCORIS and PEFT define it.)"""
    merged = W + unit
    if on_output:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (W.dim() - 1))
        m = magnitude.reshape(-1, *[1] * (W.dim() - 1))
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1).reshape(1, -1, *[1] * (W.dim() - 2))
        m = magnitude.reshape(1, -1, *[1] * (W.dim() - 2))
    return W + strength * (merged * (m / norm) - W)


def cayley(blocks, constraint):
    q = blocks - blocks.transpose(-1, -2)
    if constraint is not None and constraint > 0:
        n = torch.norm(q) + 1e-8
        if n > constraint:
            q = q * constraint / n
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype)
    return (eye + q) @ torch.linalg.inv(eye - q)


def oft_merged(W, blocks, alpha, rescale):
    """LyCORIS diag-OFT / kohya OFT: blockdiag(Rᵀ)·W, then rescale."""
    out = W.shape[0]
    r = cayley(blocks, None if alpha is None else alpha * out)
    k, b, _ = blocks.shape
    merged = torch.einsum("k n m, k n ... -> k m ...", r, W.reshape(k, b, *W.shape[1:])).reshape(W.shape)
    if rescale is not None:
        merged = merged * rescale.reshape(-1, *[1] * (W.dim() - 1))
    return merged


def boft_merged(W, blocks, alpha, rescale):
    """LyCORIS BOFT at multiplier 1 (functional/boft.py `_diff_weight` with scale 1) + W."""
    m, num, b, _ = blocks.shape
    r = cayley(blocks, None if alpha is None else alpha * W.shape[0])
    inp = W
    for i in range(m):
        k = 2 ** i * (b // 2)
        inp = inp.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, b))
        inp = torch.einsum("b i j, b j ... -> b i ...", r[i], inp)
        inp = inp.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
    if rescale is not None:
        inp = inp * rescale.reshape(-1, *[1] * (W.dim() - 1))
    return inp


def glora_delta(w, W, scale):
    """LyCORIS (current layout) `_glora_weight`: (W·a1·a2 + b1·b2)·scale."""
    a1, a2 = mat(w["a1.weight"]), mat(w["a2.weight"])
    if "bm.weight" in w:
        b = torch.einsum("m n ..., i m, n j -> i j ...", w["bm.weight"], mat(w["b1.weight"]), mat(w["b2.weight"]))
    else:
        b = (mat(w["b1.weight"]) @ mat(w["b2.weight"])).reshape(W.shape)
    if W.dim() > 2:
        wa = torch.einsum("o i ..., i j -> o j ...", torch.einsum("o i ..., i j -> o j ...", W, a1), a2)
    else:
        wa = W @ a1 @ a2
    return (wa + b.reshape(W.shape)) * scale


# ----------------------------------------------------------------------------------------------
# Reading an adapter file back (what the Swift side reads) per module
# ----------------------------------------------------------------------------------------------

def read_adapter(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def module_tensors(tensors, prefix, suffix_map=None):
    """The file's tensors of one module, by suffix (float64), optionally renamed."""
    out = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            s = k[len(prefix) + 1:]
            s = (suffix_map or {}).get(s, s)
            out[s] = v.double() if v.is_floating_point() else v
    return out


PEFT_SUFFIXES = {"lora_A.weight": "down", "lora_B.weight": "up", "lora_down.weight": "down", "lora_up.weight": "up",
                 "lora_mid.weight": "mid", "lora.down.weight": "down", "lora.up.weight": "up",
                 "lora_linear_layer.down.weight": "down", "lora_linear_layer.up.weight": "up",
                 "lora_magnitude_vector": "magnitude"}


# ----------------------------------------------------------------------------------------------
# Peers
# ----------------------------------------------------------------------------------------------

def tokenizer():
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))


def diffusers_fuse(model, path, te_scale, unet_scale, components=("unet", "text_encoder", "text_encoder_2")):
    """diffusers: load_lora_weights(file) then fuse_lora per component; the merged parameters."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, AutoencoderKL
    comps = model.fresh()
    te = unwrap(comps["text_encoder"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                        block_out_channels=(8,), sample_size=8, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",))
    tok = tokenizer()
    if "text_encoder_2" in comps:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=unwrap(comps["text_encoder_2"]),
                                         tokenizer=tok, tokenizer_2=tok, unet=comps["unet"], scheduler=DDIMScheduler())
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=comps["unet"],
                                       scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.load_lora_weights(path)
    for comp in components:
        if hasattr(pipe, comp) and getattr(pipe, comp) is not None:
            pipe.fuse_lora(components=[comp], lora_scale=unet_scale if comp == "unet" else te_scale)
    pipe.unload_lora_weights()
    result = {}
    for comp in model.components:
        m = getattr(pipe, comp)
        wrapped = isinstance(model.components[comp], TextModelHolder)
        for pname, p in m.named_parameters():
            key = "text_model." + pname if wrapped else pname
            result[(comp, key)] = p.detach().double()
    return result


def filtered_copy(path, keep):
    """A temporary copy of an adapter file with only the keys `keep(key)` accepts (same metadata)."""
    tensors, meta = read_adapter(path)
    out = os.path.join(tempfile.mkdtemp(), os.path.basename(path))
    save_file({k: v.contiguous() for k, v in tensors.items() if keep(k)}, out, metadata=meta)
    return out


def expected_from_params(model, merged_params, touched):
    """Expected single-file tensors from merged diffusers parameters (only `touched` ones)."""
    e = Expected(model)
    for comp, pname in touched:
        e.put(comp, pname, merged_params[(comp, pname)])
    return e


def changed_params(model, merged_params, tol=0.0):
    """Parameters a peer merge changed."""
    out = []
    for (comp, pname), v in merged_params.items():
        base = base_weight(model, comp, pname)
        if (v - base).abs().max().item() > tol:
            out.append((comp, pname))
    return out


# ----------------------------------------------------------------------------------------------
# Helpers to make adapters non-trivial and save them
# ----------------------------------------------------------------------------------------------

def perturb(params, seed, std=0.2):
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(params, key=lambda x: x[0]):
        p.copy_(torch.randn(p.shape, generator=g) * std)


# Small, representative module sets (linear, 1×1/3×3/strided convs, cross-attention, norms,
# text encoder) keep the fixtures in the KB range.
UNET_NAMES = [
    "conv_in", "time_embedding.linear_1", "down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.1.time_emb_proj",
    "down_blocks.1.resnets.0.conv_shortcut", "down_blocks.0.downsamplers.0.conv", "down_blocks.1.attentions.0.proj_in",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0",
    "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_v", "mid_block.resnets.1.conv2",
    "up_blocks.1.upsamplers.0.conv", "up_blocks.1.attentions.0.proj_out", "up_blocks.1.resnets.2.conv_shortcut",
]
NORM_NAMES = ["down_blocks.0.resnets.0.norm1", "down_blocks.1.attentions.0.transformer_blocks.0.norm1"]
TE_NAMES = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.out_proj",
            "text_model.encoder.layers.1.self_attn.v_proj", "text_model.encoder.layers.1.mlp.fc1"]
TE_NORM_NAMES = ["text_model.encoder.layers.0.layer_norm1"]


def existing(module, names):
    have = {n for n, _ in module.named_modules()}
    return [n for n in names if n in have]


def pattern(name):
    """LyCORIS matches preset names with re.match: anchor them. (Not escaped: the toml writer
    doubles backslashes in quoted keys; an unescaped '.' still only matches these names.)"""
    return name + "$"


def name_preset(model, unet_names=None, te_names=None, name_algo=None, norms=False):
    unet = existing(model.components["unet"], (unet_names or UNET_NAMES) + (NORM_NAMES if norms else []))
    te = existing(model.components["text_encoder"], (te_names if te_names is not None else TE_NAMES) + (TE_NORM_NAMES if norms else []))
    preset = {"enable_conv": True, "unet_target_module": [], "unet_target_name": [pattern(n) for n in unet],
              "text_encoder_target_module": [], "text_encoder_target_name": [pattern(n) for n in te],
              "module_algo_map": {}, "name_algo_map": {pattern(k): v for k, v in (name_algo or {}).items()}}
    return preset


def preset_file(preset):
    import toml
    d = tempfile.mkdtemp()
    path = os.path.join(d, "preset.toml")
    with open(path, "w") as f:
        toml.dump(preset, f)
    return path


def kohya_network(model, algo, dim, alpha, seed, preset=None, **kwargs):
    from lycoris import kohya
    # apply_preset keeps class-level maps from the previous network unless they are replaced
    kohya.LycorisNetworkKohya.NAME_ALGO_MAP = {}
    kohya.LycorisNetworkKohya.MODULE_ALGO_MAP = {}
    preset = preset_file(preset or name_preset(model))
    comps = model.fresh()
    tes = [comps["text_encoder"]] + ([comps["text_encoder_2"]] if "text_encoder_2" in comps else [])
    net = kohya.create_network(1.0, dim, alpha, None, tes if len(tes) > 1 else tes[0], comps["unet"],
                               algo=algo, preset=preset, warn_on_unmatched=False, **kwargs)
    net.apply_to(tes if len(tes) > 1 else tes[0], comps["unet"], True, True)
    trainable = [(n, p) for n, p in net.named_parameters()]
    perturb(trainable, seed)
    return net, comps


def lycoris_targets(model, comps, net):
    """(module name in the file, component, parameter path prefix, lycoris module) per module."""
    out = []
    for lora in net.loras:
        org = lora.org_module[0]
        for comp, m in comps.items():
            for path, mod in m.named_modules():
                if mod is org:
                    out.append((lora.lora_name, comp, path, lora))
    return out


def save(tensors, name, metadata=None):
    path = os.path.join(OUT, name + ".safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    return path


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

MANIFEST = []


def record(name, model, path, expected, expected_from, producer, te, unet, checks, notes="", format=None,
           base_model=None, methods=None, modules=None, embeddings=None):
    exp_path = os.path.join(OUT, name + ".expected.safetensors")
    save_file({k: v.float().contiguous() for k, v in sorted(expected.tensors.items())}, exp_path)
    entry = {"name": name, "model": model.name, "file": os.path.basename(path),
             "expected": os.path.basename(exp_path), "expectedFrom": expected_from, "producer": producer,
             "teStrength": te, "unetStrength": unet, "checks": checks, "notes": notes,
             "format": format, "baseModel": base_model, "methods": methods, "modules": modules,
             "changedKeys": len(expected.tensors)}
    if embeddings is not None:
        entry["embeddings"] = embeddings
    MANIFEST.append(entry)
    shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in checks.items()}
    print(f"  {name}: {modules} modules, {len(expected.tensors)} tensors, expected from {expected_from}; {shown}")


def formula_expected(model, items, te, unet, fn):
    """Expected by formula: `items` = [(comp, module path, tensors by suffix)], fn(w, W, strength) -> W'
    or (W', b')."""
    e = Expected(model)
    for comp, path, w in items:
        W = base_weight(model, comp, path + ".weight")
        strength = unet if comp == "unet" else te
        e.put(comp, path + ".weight", fn(w, W, strength))
        for bias_key in ("diff_b", "b_norm"):   # full / norm: Δb = strength · diff_b (not alpha-scaled)
            if bias_key in w:
                e.put(comp, path + ".bias", base_weight(model, comp, path + ".bias") + strength * w[bias_key])
    return e


def lycoris_expected(model, targets, te, unet):
    """LyCORIS's own merge of every module (`get_merged_weight`)."""
    e = Expected(model)
    for _, comp, path, lora in targets:
        strength = unet if comp == "unet" else te
        W = base_weight(model, comp, path + ".weight")
        weight, bias = lora.get_merged_weight(multiplier=strength, shape=W.shape)
        e.put(comp, path + ".weight", weight.double())
        if bias is not None:
            e.put(comp, path + ".bias", bias.double())
    return e


# --- formulas per module type (dispatch on the module's keys) ---------------------------------

KOHYA_LORA = {"lora_up.weight": "up", "lora_down.weight": "down", "lora_mid.weight": "mid"}


# Set while computing "what LyCORIS's merge gives" for LoHa/LoKr: its get_diff_weight applies
# alpha/rank inside get_weight and again outside (s²).
SCALE_SQUARED = {"on": False}


def rank_scale(w, rank):
    if "scale" in w:
        return w["scale"].item()
    s = w["alpha"].item() / rank if ("alpha" in w and rank) else 1.0
    return s * s if SCALE_SQUARED["on"] else s


def dora_axis_is_output(ds, W):
    return ds.dim() == 1 and ds.shape[0] == W.shape[0] or ds.dim() > 1 and ds.shape[0] == W.shape[0] and ds.shape[1] == 1


def weight_delta_type(w, W, s, unit):
    if "dora_scale" in w:
        ds = w["dora_scale"]
        return a1111_dora(W, unit, ds.flatten(), dora_axis_is_output(ds, W), s)
    return W + s * unit


def lora_formula(w, W, s):
    w = {KOHYA_LORA.get(k, k): v for k, v in w.items()}
    return weight_delta_type(w, W, s, a1111_lora(w, W, rank_scale(w, w["down"].shape[0])))


def loha_formula(w, W, s):
    return weight_delta_type(w, W, s, a1111_loha(w, W, rank_scale(w, w["hada_w1_b"].shape[0])))


def lokr_formula(w, W, s):
    rank = w["lokr_w2_b"].shape[0] if "lokr_w2_b" in w else (w["lokr_w1_b"].shape[0] if "lokr_w1_b" in w else None)
    return weight_delta_type(w, W, s, a1111_lokr(w, W, rank_scale(w, rank)))


def ia3_formula(w, W, s):
    f = w["weight"].flatten()
    if int(w["on_input"].item()):
        return W + s * W * f.reshape(1, -1, *[1] * (W.dim() - 2))
    return W + s * W * f.reshape(-1, *[1] * (W.dim() - 1))


def oft_formula(w, W, s):
    alpha = w["alpha"].item() if "alpha" in w else None
    resc = w.get("rescale")
    blocks = w["oft_blocks"]
    merged = boft_merged(W, blocks, alpha, resc) if blocks.dim() == 4 else oft_merged(W, blocks, alpha, resc)
    return W + s * (merged - W)


def glora_formula(w, W, s):
    return W + s * glora_delta(w, W, rank_scale(w, mat(w["a2.weight"]).shape[0]))


def any_formula(w, W, s):
    if "lora_down.weight" in w or "down" in w:
        return lora_formula(w, W, s)
    if "hada_w1_a" in w:
        return loha_formula(w, W, s)
    if any(k.startswith("lokr_") for k in w):
        return lokr_formula(w, W, s)
    if "on_input" in w:
        return ia3_formula(w, W, s)
    if "oft_blocks" in w:
        return oft_formula(w, W, s)
    if "a1.weight" in w:
        return glora_formula(w, W, s)
    if "diff" in w:
        return W + s * w["diff"].reshape(W.shape)
    if "w_norm" in w:
        return W + s * w["w_norm"].reshape(W.shape)
    raise ValueError(sorted(w))


# --- kohya --------------------------------------------------------------------------------------

def kohya_items(model, targets, tensors, rename=None):
    return [(c, p, module_tensors(tensors, (rename or {}).get(n, n))) for n, c, p, _ in targets]


def most_common_alpha_check(model, path, items, te, unet, merged_by_diffusers):
    """diffusers 0.42 converts kohya alphas into a PEFT alpha_pattern, but spells the keys of UNet
    attention projections in the old `…attnN.processor.to_q_lora…` form and cuts the text
    encoder's keys one component short (`…self_attn`), so those never match and fall back to
    lora_alpha — the most common alpha. The merge that diagnosis predicts:"""
    from collections import Counter
    # diffusers builds one LoraConfig per component; ties go to the first alpha in key order.
    tensors, _ = read_adapter(path)
    by_comp = {}
    for k in sorted(tensors):
        if k.endswith(".alpha"):
            comp = ("text_encoder_2" if k.startswith("lora_te2_") else
                    "text_encoder" if k.startswith("lora_te") else "unet")
            by_comp.setdefault(comp, []).append(round(tensors[k].item(), 6))
    common = {c: Counter(a).most_common(1)[0][0] for c, a in by_comp.items()}

    def falls_back(comp, path):
        return comp != "unet" or re.search(r"attn[12]\.to_(q|k|v|out\.0)$", path) is not None

    ref = formula_expected(model, [(c, p, {**w, "alpha": torch.tensor(common[c])} if falls_back(c, p) else w)
                                   for c, p, w in items], te, unet, lora_formula)
    return merged_by_diffusers.diff(ref)


def case_kohya_locon(sd1):
    """kohya-format LoRA + 3×3 LoCon (LyCORIS's kohya network, algo lora), per-module alphas ≠ rank."""
    net, comps = kohya_network(sd1, "lora", 4, 2, seed=11, conv_dim=2, conv_alpha=3)
    targets = lycoris_targets(sd1, comps, net)
    sd = net.state_dict()
    for i, (name, comp, path, _) in enumerate(targets):
        sd[name + ".alpha"] = torch.tensor(float([1, 2, 3, 6, 0.5, 2, 2][i % 7]))  # ≠ rank, varies per module
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2",
            "ss_base_model_version": "sd_v1"}
    path = save(sd, "kohya_sd1_locon", meta)
    tensors, _ = read_adapter(path)
    items = kohya_items(sd1, targets, tensors)
    te, unet = 0.7, 1.0
    ref = formula_expected(sd1, items, te, unet, lora_formula)
    merged = diffusers_fuse(sd1, path, te, unet)
    peer = expected_from_params(sd1, merged, changed_params(sd1, merged))
    checks = {"diffusers 0.42 load_lora_weights+fuse_lora vs formula": peer.diff(ref),
              "diffusers vs formula with the most common alpha on UNet attention + TE modules": most_common_alpha_check(sd1, path, items, te, unet, peer)}
    record("kohya_sd1_locon", sd1, path, ref, "A1111 formula (float64)",
           "lycoris.kohya create_network(algo=lora, conv_dim=2), alphas set per module", te, unet, checks,
           notes="per-module alphas 0.5..6 (≠ rank 4 / conv rank 2); 3×3 LoCon incl. a strided conv",
           format="kohya", base_model="sd1", methods=["lora"], modules=len(targets))


def case_kohya_tucker(sd1):
    net, comps = kohya_network(sd1, "lora", 4, 2, seed=15, conv_dim=3, conv_alpha=1.5, use_tucker=True,
                               preset=name_preset(sd1, te_names=[]))
    targets = lycoris_targets(sd1, comps, net)
    path = save(net.state_dict(), "kohya_sd1_tucker", {"ss_network_module": "lycoris.kohya",
                                                        "ss_network_args": json.dumps({"algo": "lora", "use_tucker": "True"})})
    tensors, _ = read_adapter(path)
    items = kohya_items(sd1, targets, tensors)
    ref = formula_expected(sd1, items, 1.0, 1.0, lora_formula)
    lyc = lycoris_expected(sd1, targets, 1.0, 1.0)
    record("kohya_sd1_tucker", sd1, path, lyc, "LyCORIS get_merged_weight", "lycoris.kohya create_network(algo=lora, use_tucker)",
           1.0, 1.0, {"LyCORIS vs formula": lyc.diff(ref)}, notes="lora_mid (Tucker) on 3×3 convs",
           format="lycoris", methods=["lora"], modules=len(targets))


def case_kohya_noalpha(sd1):
    net, comps = kohya_network(sd1, "lora", 2, 1, seed=21, conv_dim=2, conv_alpha=1)
    targets = lycoris_targets(sd1, comps, net)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith(".alpha")}
    path = save(sd, "kohya_sd1_noalpha", {})
    tensors, _ = read_adapter(path)
    ref = formula_expected(sd1, kohya_items(sd1, targets, tensors), 1.0, 1.0, lora_formula)
    merged = diffusers_fuse(sd1, path, 1.0, 1.0)
    peer = expected_from_params(sd1, merged, changed_params(sd1, merged))
    d = peer.diff(ref)
    record("kohya_sd1_noalpha", sd1, path, peer if d < 1e-6 else ref,
           "diffusers load_lora_weights+fuse_lora" if d < 1e-6 else "A1111 formula (float64)",
           "lycoris.kohya create_network(algo=lora), alpha keys removed", 1.0, 1.0,
           {"diffusers vs formula": d}, notes="no alpha: scale 1", format="kohya", methods=["lora"], modules=len(targets))


def case_kohya_sdxl(sdxl):
    """SDXL kohya file: sgm UNet names (lora_unet_input_blocks_…), lora_te1_/lora_te2_, bundled embedding."""
    net, comps = kohya_network(sdxl, "lora", 4, 3, seed=31, conv_dim=2, conv_alpha=1)
    targets = lycoris_targets(sdxl, comps, net)
    names = {n: (sdxl.sgm_name(c, p) if c == "unet" else n) for n, c, p, _ in targets}
    renamed = {}
    for k, v in net.state_dict().items():
        mod = k.split(".")[0]
        renamed[names.get(mod, mod) + k[len(mod):]] = v
    for i, (name, comp, path, _) in enumerate(targets):
        renamed[names[name] + ".alpha"] = torch.tensor(float([3, 1, 4][i % 3]))
    g = torch.Generator().manual_seed(32)
    renamed["bundle_emb.xltoken.clip_l"] = torch.randn(2, 32, generator=g)
    renamed["bundle_emb.xltoken.clip_g"] = torch.randn(2, 64, generator=g)
    path = save(renamed, "kohya_sdxl_sgm", {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora"})
    tensors, _ = read_adapter(path)
    items = kohya_items(sdxl, targets, tensors, names)
    te, unet = 1.0, 0.8
    ref = formula_expected(sdxl, items, te, unet, lora_formula)
    checks = {}
    for label, candidate in (("file", path), ("file without bundle_emb keys", filtered_copy(path, lambda k: not k.startswith("bundle_emb.")))):
        try:
            merged = diffusers_fuse(sdxl, candidate, te, unet)
            peer = expected_from_params(sdxl, merged, changed_params(sdxl, merged))
            checks[f"diffusers 0.42 load_lora_weights+fuse_lora ({label}) vs formula"] = peer.diff(ref)
            checks[f"diffusers ({label}) vs formula with the most common alpha on UNet attention + TE modules"] = \
                most_common_alpha_check(sdxl, candidate, items, te, unet, peer)
        except Exception as exc:  # recorded, not hidden
            checks[f"diffusers 0.42 load_lora_weights ({label})"] = f"failed: {type(exc).__name__}: {exc}"[:160]
    record("kohya_sdxl_sgm", sdxl, path, ref, "A1111 formula (float64)",
           "lycoris.kohya create_network(algo=lora) on SDXL; UNet names rewritten to kohya's sgm spelling; "
           "bundle_emb added", te, unet, checks, format="kohya", base_model="sdxl", methods=["lora"],
           modules=len(targets), embeddings={"xltoken": {"32": "bundle_emb.xltoken.clip_l", "64": "bundle_emb.xltoken.clip_g"}})


def case_kohya_bundle(sd1):
    net, comps = kohya_network(sd1, "lora", 2, 1, seed=35, preset=name_preset(sd1, unet_names=UNET_NAMES[6:9]))
    targets = lycoris_targets(sd1, comps, net)
    sd = net.state_dict()
    g = torch.Generator().manual_seed(36)
    sd["bundle_emb.sd1token.string_to_param.*"] = torch.randn(3, 32, generator=g)
    sd["bundle_emb.other.string_to_param.*"] = torch.randn(1, 32, generator=g)
    path = save(sd, "kohya_sd1_bundle", {"ss_network_module": "networks.lora"})
    tensors, _ = read_adapter(path)
    ref = formula_expected(sd1, kohya_items(sd1, targets, tensors), 1.0, 1.0, lora_formula)
    record("kohya_sd1_bundle", sd1, path, ref, "A1111 formula (float64)",
           "lycoris.kohya create_network(algo=lora) + bundle_emb.* (A1111's bundled-embedding keys)", 1.0, 1.0, {},
           format="kohya", methods=["lora"], modules=len(targets),
           embeddings={"sd1token": {"32": "bundle_emb.sd1token.string_to_param.*"},
                       "other": {"32": "bundle_emb.other.string_to_param.*"}})


# --- PEFT / diffusers -----------------------------------------------------------------------------

def peft_unet_te(model, unet_cfg, te_cfg, seed):
    from peft import inject_adapter_in_model, get_peft_model_state_dict
    comps = model.fresh()
    comps["unet"].add_adapter(unet_cfg)
    inject_adapter_in_model(te_cfg, comps["text_encoder"])
    params = [(c + n, p) for c in ("unet", "text_encoder") for n, p in comps[c].named_parameters()
              if "lora_" in n and "magnitude" not in n]
    perturb(params, seed, std=0.15)
    g = torch.Generator().manual_seed(seed + 1)
    for c in ("unet", "text_encoder"):
        for n, p in sorted(comps[c].named_parameters(), key=lambda x: x[0]):
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
    return comps, get_peft_model_state_dict(comps["unet"]), get_peft_model_state_dict(comps["text_encoder"])


def peft_merged(model, comps):
    """PEFT's merge of every tuner layer; parameters keyed like the base model."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    out = {}
    for comp in ("unet", "text_encoder"):
        for path, mod in comps[comp].named_modules():
            if isinstance(mod, BaseTunerLayer):
                mod.merge(safe_merge=True)
                out[(comp, path + ".weight")] = mod.get_base_layer().weight.detach().double()
    return out


def peft_reference(model, tensors, cfg, te, unet):
    """A1111 formula with PEFT's per-module scale (alpha_pattern / lora_alpha, rsLoRA) from `cfg`;
    cfg None: scale 1 (no alphas in the file)."""
    e = Expected(model)
    prefixes = sorted({k.rsplit(".lora_", 1)[0] for k in tensors if ".lora_A." in k or ".lora.down." in k
                       or ".lora_linear_layer." in k})
    for pre in prefixes:
        comp = pre.split(".")[0]
        path = pre[len(comp) + 1:]
        w = module_tensors(tensors, pre, PEFT_SUFFIXES)
        r = w["down"].shape[0]
        scale = 1.0
        if cfg is not None:
            c = cfg[comp]
            alpha = c.lora_alpha
            for pat, a in c.alpha_pattern.items():
                if re.match(rf"(.*\.)?({pat})$", path):
                    alpha = a
                    break
            scale = alpha / (math.sqrt(r) if c.use_rslora else r)
        W = base_weight(model, comp, path + ".weight")
        strength = unet if comp == "unet" else te
        unit = a1111_lora(w, W, scale)
        merged = a1111_dora(W, unit, w["magnitude"], True, strength) if "magnitude" in w else W + strength * unit
        e.put(comp, path + ".weight", merged)
    return e, len(prefixes)


def case_peft_bias(sd1):
    """PEFT `LoraConfig(lora_bias=True)`: `lora_B` has a bias, and PEFT's merge adds
    scaling·lora_B.bias to the base layer's bias (peft/tuners/lora/layer.py `merge`). Expected
    values are PEFT's own merge of weights and biases (merge_and_unload's per-layer merge)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.tuners.tuners_utils import BaseTunerLayer
    unet_targets = [n for n in existing(sd1.components["unet"], UNET_NAMES)
                    if n.split(".")[-1] in ("proj_in", "0", "proj", "time_emb_proj", "conv1", "proj_out")]
    te_targets = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.mlp.fc1"]
    unet_cfg = LoraConfig(r=4, lora_alpha=6, target_modules=unet_targets, lora_bias=True)
    te_cfg = LoraConfig(r=2, lora_alpha=3, target_modules=te_targets, lora_bias=True)
    comps, unet_sd, te_sd = peft_unet_te(sd1, unet_cfg, te_cfg, 205)
    d = tempfile.mkdtemp()
    StableDiffusionPipeline.save_lora_weights(d, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
                                              safe_serialization=True, unet_lora_adapter_metadata=unet_cfg.to_dict(),
                                              text_encoder_lora_adapter_metadata=te_cfg.to_dict())
    tensors, meta = read_adapter(os.path.join(d, "pytorch_lora_weights.safetensors"))
    assert any(k.endswith("lora_B.bias") for k in tensors), "peft wrote no lora_B.bias"
    path = save(tensors, "peft_sd1_bias", meta)
    e = Expected(sd1)
    formula = Expected(sd1)
    n = 0
    for comp in ("unet", "text_encoder"):
        for mpath, mod in comps[comp].named_modules():
            if not isinstance(mod, BaseTunerLayer):
                continue
            n += 1
            W = mod.get_base_layer().weight.detach().double().clone()
            b = mod.get_base_layer().bias.detach().double().clone()
            s = mod.scaling["default"]
            A, B = mod.lora_A["default"].weight.double(), mod.lora_B["default"].weight.double()
            formula.put(comp, mpath + ".weight", W + s * (mat(B) @ mat(A)).reshape(W.shape))
            formula.put(comp, mpath + ".bias", b + s * mod.lora_B["default"].bias.double())
            mod.merge(safe_merge=True)
            e.put(comp, mpath + ".weight", mod.get_base_layer().weight.detach().double())
            e.put(comp, mpath + ".bias", mod.get_base_layer().bias.detach().double())
    checks = {"peft merge vs W + s·B·A, b + s·lora_B.bias (float64)": e.diff(formula)}
    record("peft_sd1_bias", sd1, path, e, "peft merge", "peft LoraConfig(lora_bias=True) + diffusers save_lora_weights",
           1.0, 1.0, checks, notes="lora_B.bias: Δb = scaling·lora_B.bias", format="peft", methods=["lora"], modules=n)


def unet_part(model, e):
    out = Expected(model)
    out.tensors = {k: v for k, v in e.tensors.items() if k.startswith("model.diffusion_model.")}
    return out


def case_peft(sd1, name, unet_cfg, te_cfg, seed, with_metadata=True, notes=""):
    from diffusers import StableDiffusionPipeline
    comps, unet_sd, te_sd = peft_unet_te(sd1, unet_cfg, te_cfg, seed)
    d = tempfile.mkdtemp()
    kw = {}
    if with_metadata:
        kw = {"unet_lora_adapter_metadata": unet_cfg.to_dict(), "text_encoder_lora_adapter_metadata": te_cfg.to_dict()}
    StableDiffusionPipeline.save_lora_weights(d, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
                                              safe_serialization=True, **kw)
    tensors, meta = read_adapter(os.path.join(d, "pytorch_lora_weights.safetensors"))
    path = save(tensors, name, meta)
    ref, n = peft_reference(sd1, tensors, {"unet": unet_cfg, "text_encoder": te_cfg} if with_metadata else None, 1.0, 1.0)
    checks = {}
    merged = peft_merged(sd1, comps)
    peft_e = expected_from_params(sd1, merged, list(merged.keys()))
    label = ("peft merge (in-memory adapter) vs formula" if with_metadata else
             "peft merge of the in-memory adapter (its lora_alpha is lost when saved without metadata) vs the file's formula")
    checks[label] = peft_e.diff(ref)
    try:
        # UNet part only: the tiny text encoder is transformers 5's flattened CLIPTextModel, which
        # diffusers cannot match against published `text_model.…` names.
        dm = diffusers_fuse(sd1, filtered_copy(path, lambda k: k.startswith("unet.")), 1.0, 1.0, components=("unet",))
        de = expected_from_params(sd1, dm, [k for k in changed_params(sd1, dm) if k[0] == "unet"])
        checks["diffusers load+fuse_lora of the file's UNet part vs formula"] = de.diff(unet_part(sd1, ref))
    except Exception as exc:
        checks["diffusers load+fuse_lora (UNet)"] = f"failed: {type(exc).__name__}: {exc}"[:200]
    if with_metadata and checks[label] < 1e-5:
        expected, source = peft_e, "peft merge"
    else:
        expected, source = ref, ("formula, scale 1 (no alphas in the file: PEFT/diffusers convention)"
                                 if not with_metadata else "A1111 formula (float64)")
    record(name, sd1, path, expected, source, "peft LoraConfig + diffusers save_lora_weights", 1.0, 1.0, checks,
           notes=notes, format="peft", methods=["lora"], modules=n)
    return tensors, ref


def case_old_diffusers(sd1, peft_tensors, peft_ref_scale1):
    """Older diffusers spellings, made by renaming a PEFT file's keys (no alphas: scale 1):
    UNet attention `…attnN.processor.to_q_lora.down.weight`, other UNet layers `….lora.down.weight`,
    text encoder `….q_proj.lora_linear_layer.down.weight`."""
    out = {}
    for k, v in peft_tensors.items():
        pre, part = k.rsplit(".lora_", 1)
        which = "down" if part.startswith("A") else "up"
        comp = pre.split(".")[0]
        if comp == "unet":
            m = re.match(r"(.*\.attn[12])\.(to_q|to_k|to_v|to_out\.0)$", pre)
            if m:
                proj = m.group(2).replace(".0", "")
                out[f"{m.group(1)}.processor.{proj}_lora.{which}.weight"] = v
            else:
                out[f"{pre}.lora.{which}.weight"] = v
        else:
            out[f"{pre}.lora_linear_layer.{which}.weight"] = v
    path = save(out, "diffusers_sd1_old", {})
    checks = {}
    try:
        dm = diffusers_fuse(sd1, filtered_copy(path, lambda k: k.startswith("unet.")), 1.0, 1.0, components=("unet",))
        de = expected_from_params(sd1, dm, [k for k in changed_params(sd1, dm) if k[0] == "unet"])
        checks["diffusers 0.42 load+fuse_lora of the UNet part vs formula"] = de.diff(unet_part(sd1, peft_ref_scale1))
    except Exception as exc:
        checks["diffusers 0.42 load_lora_weights"] = f"failed: {type(exc).__name__}: {exc}"[:200]
    n = len({k.rsplit(".", 3)[0] for k in out})
    record("diffusers_sd1_old", sd1, path, peft_ref_scale1, "formula, scale 1 (same factors as peft_sd1_nometa)",
           "keys of peft_sd1_nometa renamed to diffusers' older spellings", 1.0, 1.0, checks,
           notes="processor.to_q_lora / to_out_lora (UNet attention) → to_q / to_out.0; lora.down/up; lora_linear_layer",
           format="diffusers", methods=["lora"], modules=len(peft_tensors) // 2)


# --- LyCORIS ---------------------------------------------------------------------------------------

def lycoris_case(model, name, algo, dim, alpha, seed, te=1.0, unet=1.0, preset=None, expected="lycoris",
                 formula=any_formula, notes="", standalone=False, meta_extra=None, methods=None, **kwargs):
    """A LyCORIS file made by lycoris itself (its kohya network, or the standalone wrapper)."""
    if standalone:
        from lycoris import create_lycoris, LycorisNetwork
        LycorisNetwork.NAME_ALGO_MAP = {}
        LycorisNetwork.MODULE_ALGO_MAP = {}
        comps = model.fresh()
        p = preset or name_preset(model)
        standalone_preset = {"target_module": [], "target_name": p["unet_target_name"], "module_algo_map": {},
                             "name_algo_map": p["name_algo_map"]}
        net = create_lycoris(comps["unet"], 1.0, linear_dim=dim, linear_alpha=alpha, algo=algo,
                             preset=preset_file(standalone_preset), warn_on_unmatched=False, **kwargs)
        net.apply_to()
        perturb(list(net.named_parameters()), seed)
    else:
        net, comps = kohya_network(model, algo, dim, alpha, seed, preset=preset, **kwargs)
    targets = lycoris_targets(model, comps, net)
    meta = {"ss_network_module": "lycoris.kohya",
            "ss_network_args": json.dumps({"algo": algo, **{k: str(v) for k, v in kwargs.items()}})}
    meta.update(meta_extra or {})
    path = save(net.state_dict(), name, meta)
    tensors, _ = read_adapter(path)
    items = [(c, p, module_tensors(tensors, n)) for n, c, p, _ in targets]
    checks = {}
    lyc = lycoris_expected(model, targets, te, unet)
    ref = formula_expected(model, items, te, unet, formula) if formula else None
    if ref is not None:
        checks["LyCORIS get_merged_weight vs formula"] = lyc.diff(ref)
        if algo in ("loha", "lokr"):
            SCALE_SQUARED["on"] = True
            try:
                squared = formula_expected(model, items, te, unet, formula)
            finally:
                SCALE_SQUARED["on"] = False
            checks["LyCORIS get_merged_weight vs formula with (alpha/rank)²"] = lyc.diff(squared)
    out, source = (lyc, "LyCORIS get_merged_weight") if expected == "lycoris" else (ref, "A1111 formula (float64)")
    types = sorted({type(l).__name__ for _, _, _, l in targets})
    record(name, model, path, out, source,
           f"lycoris {'create_lycoris' if standalone else 'kohya create_network'}(algo={algo}) {types}",
           te, unet, checks, notes=notes, format="lycoris", methods=methods, modules=len(targets))


def case_lycoris_all(sd1, sdxl):
    tucker = dict(conv_dim=2, conv_alpha=1, use_tucker=True)
    lycoris_case(sd1, "lycoris_loha", "loha", 4, 2, 41, te=0.5, expected="formula", methods=["loha"], **tucker,
                 notes="LoHa with CP/Tucker 3×3 convs; LyCORIS's merge applies alpha/rank twice (s²)")
    lycoris_case(sd1, "lycoris_lokr", "lokr", 4, 2, 51, unet=0.75, expected="formula", methods=["lokr"], factor=4,
                 decompose_both=True, **tucker, notes="LoKr decompose_both + Tucker convs; LyCORIS's merge scales twice")
    lycoris_case(sd1, "lycoris_lokr_full", "lokr", 10000, 5, 52, expected="formula", methods=["lokr"], factor=4,
                 notes="both LoKr factors full matrices: scale 1 whatever alpha")
    lycoris_case(sd1, "lycoris_dora_out", "lora", 4, 8, 61, expected="lycoris", methods=["lora"], dora_wd=True,
                 wd_on_output=True, notes="DoRA per output (dora_scale [out,1,…]); strength 1, where all peers agree")
    lycoris_case(sd1, "lycoris_dora_in", "lora", 4, 8, 62, expected="lycoris", methods=["lora"], dora_wd=True,
                 wd_on_output=False, notes="DoRA per input (dora_scale [1,in,…]), A1111's only axis")
    lycoris_case(sd1, "lycoris_loha_dora", "loha", 4, 4, 63, expected="formula", methods=["loha"], dora_wd=True,
                 wd_on_output=True, notes="LoHa + DoRA")
    ia3_names = UNET_NAMES[7:12] + [UNET_NAMES[2]]
    lycoris_case(sd1, "lycoris_ia3", "ia3", 4, 1, 71, unet=0.6, expected="lycoris", methods=["ia3"],
                 preset=name_preset(sd1, unet_names=ia3_names,
                                    name_algo={ia3_names[4]: {"algo": "ia3", "train_on_input": True},
                                               TE_NAMES[3]: {"algo": "ia3", "train_on_input": True}}),
                 notes="(IA)^3 per output and per input (on_input), strength 0.6 on the UNet")
    lycoris_case(sd1, "lycoris_oft", "diag-oft", 4, 1, 81, expected="lycoris", methods=["oft"], constraint=0.05,
                 rescaled=True, notes="diag-OFT, constraint 0.05·out (active) and rescale")
    lycoris_case(sd1, "lycoris_oft_free", "diag-oft", 8, 1, 82, te=0.5, unet=0.5, expected="lycoris", methods=["oft"],
                 notes="diag-OFT without constraint (LyCORIS default), strength 0.5")
    lycoris_case(sd1, "lycoris_boft", "boft", 4, 1, 83, expected="lycoris", methods=["oft"],
                 notes="BOFT (butterfly), strength 1")
    lycoris_case(sd1, "lycoris_full", "full", 4, 1, 91, unet=0.9, expected="lycoris", methods=["full"],
                 notes="full diff / diff_b")
    lycoris_case(sd1, "lycoris_glora", "glora", 4, 2, 101, unet=0.8, expected="lycoris", methods=["glora"],
                 notes="GLoRA (current layout), incl. convs")
    lycoris_case(sd1, "lycoris_norm", "lora", 2, 1, 111, expected="lycoris", methods=["lora", "norm"],
                 preset=name_preset(sd1, unet_names=UNET_NAMES[6:9], te_names=TE_NAMES[:1], norms=True), train_norm=True,
                 notes="LoRA + GroupNorm/LayerNorm w_norm/b_norm modules")
    lycoris_case(sd1, "lycoris_rslora", "lora", 4, 2, 121, expected="lycoris", methods=["lora"], rs_lora=True,
                 notes="rs_lora: LyCORIS stores alpha·√r, so alpha/r in the file IS the rsLoRA scale; "
                       "ss_network_args says rs_lora (must not be applied again)")
    mixed = {UNET_NAMES[2]: {"algo": "loha"}, UNET_NAMES[7]: {"algo": "lokr", "factor": 4},
             UNET_NAMES[8]: {"algo": "glora"}, UNET_NAMES[9]: {"algo": "diag-oft"}, UNET_NAMES[10]: {"algo": "full"},
             UNET_NAMES[11]: {"algo": "loha"}, TE_NAMES[0]: {"algo": "lokr", "factor": 4}}
    lycoris_case(sd1, "lycoris_mixed", "lora", 4, 2, 151, te=0.8, expected="formula",
                 methods=["lora", "loha", "lokr", "oft", "glora", "full"],
                 preset=name_preset(sd1, name_algo=mixed), 
                 notes="one file mixing LoRA, LoHa, LoKr, GLoRA, diag-OFT and full modules")
    lycoris_case(sd1, "lycoris_standalone_lokr", "lokr", 4, 2, 131, expected="formula", methods=["lokr"],
                 standalone=True, factor=8, notes="standalone wrapper names (lycoris_…), UNet only")
    lycoris_case(sdxl, "lycoris_sdxl_lokr", "lokr", 4, 2, 141, te=0.9, expected="formula", methods=["lokr"], factor=4,
                 notes="SDXL (F16 model; TE2 q/k/v are rows of the single file's fused in_proj)")


# ----------------------------------------------------------------------------------------------
# Float64 references for the Swift unit tests
# ----------------------------------------------------------------------------------------------

def make_unit_refs():
    g = torch.Generator().manual_seed(7)

    def rnd(*shape, std=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std)

    tensors, tests = {}, []

    def add(name, adapter, W, fn, strengths, notes, kind="linear"):
        """adapter: adapter key → tensor; fn(strength) → ΔW (float64)."""
        entry = {"name": name, "notes": notes, "tensors": {}, "weight": f"{name}/W", "cases": [], "layer": kind}
        tensors[f"{name}/W"] = W
        for k, v in adapter.items():
            tensors[f"{name}/{k}"] = v
            entry["tensors"][k] = f"{name}/{k}"
        for s in strengths:
            tensors[f"{name}/delta@{s}"] = fn(s)
            entry["cases"].append({"strength": s, "delta": f"{name}/delta@{s}"})
        tests.append(entry)

    # OFT (Cayley + constraint + rescale) on a linear and a conv weight; BOFT.
    blocks, W, resc = rnd(2, 4, 4, std=0.3), rnd(8, 6), 1 + 0.1 * rnd(8, 1)
    add("oft", {"m.oft_blocks": blocks, "m.alpha": torch.tensor(0.02, dtype=torch.float64), "m.rescale": resc}, W,
        lambda s: s * (oft_merged(W, blocks, 0.02, resc) - W), [1.0, 0.5],
        "constraint 0.02·8 active; rescale; A1111 strength semantics")
    blocks_c, Wc = rnd(4, 2, 2, std=0.4), rnd(8, 3, 3, 3)
    add("oft_conv", {"m.oft_blocks": blocks_c}, Wc, lambda s: s * (oft_merged(Wc, blocks_c, None, None) - Wc), [1.0],
        "no alpha: no constraint", kind="conv")
    blocks_b, Wb = rnd(2, 2, 4, 4, std=0.3), rnd(8, 5)
    add("boft", {"m.oft_blocks": blocks_b, "m.alpha": torch.tensor(0.0, dtype=torch.float64)}, Wb,
        lambda s: s * (boft_merged(Wb, blocks_b, 0.0, None) - Wb), [1.0, 0.7], "2 butterfly stages, blocks of 4")
    # DoRA both axes, linear and conv, strength 1 and 0.6 (A1111: W + s·(DoRA(W + scale·ΔW) − W)).
    W, up, down = rnd(6, 5), rnd(6, 2), rnd(2, 5)
    unit = up @ down * 1.5
    m_out, m_in = W.norm(dim=1, keepdim=True) * (1 + 0.2 * rnd(6, 1)), W.norm(dim=0, keepdim=True) * (1 + 0.2 * rnd(1, 5))
    base = {"m.lora_up.weight": up, "m.lora_down.weight": down, "m.alpha": torch.tensor(3.0, dtype=torch.float64)}
    add("dora_out", {**base, "m.dora_scale": m_out}, W, lambda s: a1111_dora(W, unit, m_out.flatten(), True, s) - W,
        [1.0, 0.6], "dora_scale [out, 1]")
    # How the peers' DoRA merges differ from A1111's away from strength 1 (recorded, not used).
    eps = torch.finfo(torch.float32).eps
    merged = W + unit
    row = lambda t: t.norm(dim=1, keepdim=True)
    peer_03 = {
        "A1111 1.10 (W + s·(DoRA(W+ΔW) − W))": a1111_dora(W, unit, m_out.flatten(), True, 0.6),
        "LyCORIS weight_decompose ((W+ΔW)·(s·(m/‖W+ΔW‖ − 1) + 1))": merged * (0.6 * (m_out / (row(merged) + eps) - 1) + 1),
        "PEFT/diffusers (strength inside ΔW before renormalising)": (W + 0.6 * unit) * (m_out / row(W + 0.6 * unit)),
        "ComfyUI weight_decompose (output axis normalised by ‖W‖)": W + 0.6 * (merged * (m_out / (row(W) + eps)) - W),
    }
    ref_a = peer_03["A1111 1.10 (W + s·(DoRA(W+ΔW) − W))"]
    dora_peers = {k: (v - ref_a).abs().max().item() for k, v in peer_03.items()}
    add("dora_in", {**base, "m.dora_scale": m_in}, W, lambda s: a1111_dora(W, unit, m_in.flatten(), False, s) - W,
        [1.0, 0.6], "dora_scale [1, in]")
    add("dora_peft", {"m.lora_B.weight": up, "m.lora_A.weight": down, "m.alpha": torch.tensor(3.0, dtype=torch.float64),
                      "m.lora_magnitude_vector": m_out.flatten()}, W,
        lambda s: a1111_dora(W, unit, m_out.flatten(), True, s) - W, [1.0, 0.6], "PEFT magnitude [out]")
    Wc, upc, downc = rnd(4, 3, 3, 3), rnd(4, 2, 1, 1), rnd(2, 3, 3, 3)
    unitc = (mat(upc) @ mat(downc)).reshape(Wc.shape) * 0.5
    mc_out = Wc.reshape(4, -1).norm(dim=1).reshape(4, 1, 1, 1) * 1.1
    mc_in = Wc.transpose(0, 1).reshape(3, -1).norm(dim=1).reshape(1, 3, 1, 1) * 0.9
    basec = {"m.lora_up.weight": upc, "m.lora_down.weight": downc, "m.alpha": torch.tensor(1.0, dtype=torch.float64)}
    add("dora_conv_out", {**basec, "m.dora_scale": mc_out}, Wc,
        lambda s: a1111_dora(Wc, unitc, mc_out.flatten(), True, s) - Wc, [1.0, 0.6], "conv, [out,1,1,1]", kind="conv")
    add("dora_conv_in", {**basec, "m.dora_scale": mc_in}, Wc,
        lambda s: a1111_dora(Wc, unitc, mc_in.flatten(), False, s) - Wc, [1.0, 0.6], "conv, [1,in,1,1]", kind="conv")
    # Tucker LoRA, LoHa CP, LoKr conv (4-D and flattened w2), old-layout GLoRA.
    up, down, mid = rnd(5, 2, 1, 1), rnd(2, 3, 1, 1), rnd(2, 2, 3, 3)
    Wt = rnd(5, 3, 3, 3)
    tucker = {"m.lora_up.weight": up, "m.lora_down.weight": down, "m.lora_mid.weight": mid,
              "m.alpha": torch.tensor(1.0, dtype=torch.float64)}
    add("tucker", tucker, Wt, lambda s: s * a1111_lora({"up": up, "down": down, "mid": mid}, Wt, 0.5), [1.0],
        "lora_mid, alpha 1 / rank 2", kind="conv")
    lh = {"hada_w1_a": rnd(2, 5), "hada_w1_b": rnd(2, 3), "hada_w2_a": rnd(2, 5), "hada_w2_b": rnd(2, 3),
          "hada_t1": rnd(2, 2, 3, 3), "hada_t2": rnd(2, 2, 3, 3)}
    add("loha_cp", {**{f"m.{k}": v for k, v in lh.items()}, "m.alpha": torch.tensor(1.0, dtype=torch.float64)}, Wt,
        lambda s: s * a1111_loha(lh, Wt, 0.5), [1.0], "CP form, rank-first factors", kind="conv")
    Wk = rnd(6, 4, 3, 3)
    lk = {"lokr_w1": rnd(2, 2), "lokr_w2": rnd(3, 2, 3, 3)}
    add("lokr_conv", {f"m.{k}": v for k, v in lk.items()}, Wk, lambda s: s * a1111_lokr(lk, Wk, 1.0), [1.0],
        "w2 conv-shaped, both full: scale 1", kind="conv")
    lk2 = {"lokr_w1": rnd(2, 2), "lokr_w2_a": rnd(3, 2), "lokr_w2_b": rnd(2, 18)}
    add("lokr_flat", {**{f"m.{k}": v for k, v in lk2.items()}, "m.alpha": torch.tensor(1.0, dtype=torch.float64)}, Wk,
        lambda s: s * a1111_lokr(lk2, Wk, 0.5), [1.0], "w2 = w2_a·w2_b flattened over the kernel", kind="conv")
    Wg = rnd(6, 5)
    a1o, a2o, b1o, b2o = rnd(2, 5), rnd(5, 2), rnd(2, 5), rnd(6, 2)   # original layout
    add("glora_old", {"m.a1.weight": a1o, "m.a2.weight": a2o, "m.b1.weight": b1o, "m.b2.weight": b2o,
                      "m.alpha": torch.tensor(1.0, dtype=torch.float64)}, Wg,
        lambda s: s * 0.5 * (b2o @ b1o + Wg @ a2o @ a1o), [1.0, 0.5], "A1111's layout: ΔW = b2·b1 + W·a2·a1, scale alpha/rank")
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(OUT, "unit.safetensors"))
    with open(os.path.join(OUT, "unit.json"), "w") as f:
        json.dump({"tests": tests, "doraStrength0.6PeerMaxDiffVsA1111": dora_peers}, f, indent=1)
    print(f"  DoRA at strength 0.6, max |peer − A1111|: {dora_peers}")
    print(f"  unit references: {len(tests)} tests")


ONLY_CASES = {"peft_sd1_bias": case_peft_bias}


def main_only(names):
    """`--only NAME…`: regenerate only these SD1 cases, keeping every other fixture and
    replacing their manifest entries (the full run rewrites everything)."""
    sd1 = TinyModel("sd1")
    for name in names:
        ONLY_CASES[name](sd1)
    path = os.path.join(OUT, "manifest.json")
    with open(path) as f:
        cases = [c for c in json.load(f)["cases"] if c["name"] not in names]
    with open(path, "w") as f:
        json.dump({"cases": cases + MANIFEST}, f, indent=1, sort_keys=True, default=str)


def main():
    if "--only" in sys.argv:
        return main_only(sys.argv[sys.argv.index("--only") + 1:])
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".safetensors") or f.endswith(".json"):
            os.remove(os.path.join(OUT, f))
    sd1 = TinyModel("sd1")
    sdxl = TinyModel("sdxl")
    from peft import LoraConfig
    print("== kohya")
    case_kohya_locon(sd1)
    case_kohya_tucker(sd1)
    case_kohya_noalpha(sd1)
    case_kohya_bundle(sd1)
    case_kohya_sdxl(sdxl)
    print("== peft / diffusers")
    unet_targets = existing(sd1.components["unet"], UNET_NAMES)
    unet_targets = [n for n in unet_targets if "conv" not in n.split(".")[-1] and "time" not in n]
    te_targets = TE_NAMES
    case_peft(sd1, "peft_sd1_patterns",
              LoraConfig(r=4, lora_alpha=8, target_modules=unet_targets,
                         rank_pattern={"attn2.to_k": 2}, alpha_pattern={"attn2.to_out.0": 3, "proj_in": 1}),
              LoraConfig(r=4, lora_alpha=2, target_modules=te_targets, alpha_pattern={"out_proj": 6}),
              seed=201, notes="lora_adapter_metadata with rank_pattern/alpha_pattern")
    tensors, ref1 = case_peft(sd1, "peft_sd1_nometa", LoraConfig(r=4, lora_alpha=8, target_modules=unet_targets),
                              LoraConfig(r=2, lora_alpha=8, target_modules=te_targets),
                              seed=202, with_metadata=False, notes="no metadata, no alphas: scale 1")
    case_old_diffusers(sd1, tensors, ref1)
    case_peft(sd1, "peft_sd1_dora", LoraConfig(r=4, lora_alpha=4, target_modules=unet_targets, use_dora=True),
              LoraConfig(r=4, lora_alpha=4, target_modules=te_targets, use_dora=True),
              seed=203, notes="PEFT DoRA (lora_magnitude_vector: per output)")
    case_peft(sd1, "peft_sd1_rslora", LoraConfig(r=4, lora_alpha=6, target_modules=unet_targets, use_rslora=True),
              LoraConfig(r=4, lora_alpha=6, target_modules=te_targets, use_rslora=True),
              seed=204, notes="use_rslora: alpha/√r")
    case_peft_bias(sd1)
    print("== lycoris")
    case_lycoris_all(sd1, sdxl)
    print("== unit")
    make_unit_refs()
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"cases": MANIFEST}, f, indent=1, sort_keys=True, default=str)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    # PEFT writes target_modules from a set into lora_adapter_metadata: fix string hashing so the
    # fixtures are byte-for-byte reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    main()
