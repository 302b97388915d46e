#!/usr/bin/env python3
"""Fixtures for Tests/TextualInversionTests, Tests/HypernetworkTests and Tests/DreamBoothTests.

Run with the peers venv after tools/gen_model_fixtures.py (DreamBooth reuses its tiny SD1 model,
Tests/HostTests/Fixtures/models/sd1.safetensors):

    /work/venv/peers/bin/python tools/gen_ti_hn_db_fixtures.py

Textual Inversion (Tests/TextualInversionTests/Fixtures/), every layout A1111's
EmbeddingDatabase.load_from_file and diffusers' load_textual_inversion read, written the way
their writers write them:
  a1111_sd1.pt              A1111 Embedding.save dict; stored `name` differs from the file stem
  original_sd1.pt           original textual inversion (string_to_param a ParameterDict,
                            string_to_token tensors)
  kohya_sd2.safetensors     kohya sd-scripts {"emb_params": [3, 1024]} (F16)
  learned_embeds.bin        diffusers {"<cat-toy>": [768]} (torch.save)
  dog_concept.safetensors   diffusers {"<dog>": [2, 768]}
  sdxl_emb.safetensors      SDXL {"clip_l": [2, 768], "clip_g": [2, 1280]} (F16)
  multi_terms.pt            two terms in string_to_param (A1111 refuses it)
  expected.safetensors      "<file>.<width>" → the vectors as F32 [n, width]

Hypernetworks (Tests/HypernetworkTests/Fixtures/): A1111's HypernetworkModule (layer building
copied from modules/hypernetworks/hypernetwork.py) and Hypernetwork.save's dict layout, with
random weights large enough that every layer matters:
  <case>.pt                 A1111 layout (see CASES)
  act_<name>.safetensors    the safetensors form (same flattened keys, options as metadata),
                            one per activation A1111 accepts and the host supports
  expected.safetensors      "<case>.<width>.x|k|v": a context x [2, 3, width] and the module
                            outputs x + MLP(x)·0.7 (torch, eval mode); "chain.8.x|k|v": relu_ln
                            at 0.7 then swish_out at 1.3, chained as apply_hypernetworks does

DreamBooth (Tests/DreamBoothTests/Fixtures/): the tuned checkpoints are the tiny SD1 model with
a few tensors changed; only those are stored (the tests rebuild the whole files):
  f16_changes.safetensors   tuned values of the changed tensors (F16 base = sd1.safetensors)
  f32_changes.safetensors   the same for the F32 copy of the base (base.float(), exact)
  f16_expected.safetensors  "diff/<key>": the stored difference (see `difference`); "full/<key>"
  f32_expected.safetensors  and "half/<key>": the merge at weight 1 and 0.5, (A32 + w·D) in F32
                            rounded to the checkpoint dtype, as the host computes it
  manifest.json             per dtype: changed tensors/elements, stored dtypes, and how many
                            elements the merge at weight 1 cannot give back bit-exactly (F16: 0,
                            asserted; F32: elements whose difference is coarser than the value)
  sha256.json               hashlib digests of byte patterns and of sd1.safetensors
"""
import hashlib
import inspect
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TI_OUT = os.path.join(ROOT, "Tests", "TextualInversionTests", "Fixtures")
HN_OUT = os.path.join(ROOT, "Tests", "HypernetworkTests", "Fixtures")
DB_OUT = os.path.join(ROOT, "Tests", "DreamBoothTests", "Fixtures")
SD1 = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models", "sd1.safetensors")


# ----------------------------------------------------------------------------------------------
# Textual Inversion
# ----------------------------------------------------------------------------------------------

def gen_ti():
    os.makedirs(TI_OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    expected = {}

    def vec(n, width, dtype=torch.float32):
        return (torch.randn(n, width, generator=g) * 0.02).to(dtype)

    # A1111 Embedding.save (modules/textual_inversion/textual_inversion.py); the vector is the
    # trained tensor (requires_grad), as A1111 saves it.
    v = vec(2, 768).requires_grad_(True)
    torch.save({
        "string_to_token": {"*": 265},
        "string_to_param": {"*": v},
        "name": "internal-name",
        "step": 1500,
        "sd_checkpoint": "6ce0161689",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }, os.path.join(TI_OUT, "a1111_sd1.pt"))
    expected["a1111_sd1.768"] = v.detach().float()

    # Original textual inversion (rinongal/textual_inversion EmbeddingManager.save).
    v = vec(1, 768)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(v.clone())})
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params},
               os.path.join(TI_OUT, "original_sd1.pt"))
    expected["original_sd1.768"] = v

    # kohya sd-scripts train_textual_inversion.py (save_weights: {"emb_params": …}), F16.
    v = vec(3, 1024, torch.float16)
    save_file({"emb_params": v}, os.path.join(TI_OUT, "kohya_sd2.safetensors"))
    expected["kohya_sd2.1024"] = v.float()

    # diffusers textual_inversion.py save_progress: {placeholder_token: embeds}; one vector.
    v = vec(1, 768)[0]
    torch.save({"<cat-toy>": v}, os.path.join(TI_OUT, "learned_embeds.bin"))
    expected["learned_embeds.768"] = v[None]
    v = vec(2, 768)
    save_file({"<dog>": v}, os.path.join(TI_OUT, "dog_concept.safetensors"))
    expected["dog_concept.768"] = v

    # SDXL (sd-scripts sdxl_train_textual_inversion / A1111): clip_l + clip_g.
    l, gg = vec(2, 768, torch.float16), vec(2, 1280, torch.float16)
    save_file({"clip_l": l, "clip_g": gg}, os.path.join(TI_OUT, "sdxl_emb.safetensors"))
    expected["sdxl_emb.768"] = l.float()
    expected["sdxl_emb.1280"] = gg.float()

    torch.save({"string_to_token": {"*": 265, "#": 266},
                "string_to_param": {"*": vec(1, 8), "#": vec(1, 8)}, "name": "two"},
               os.path.join(TI_OUT, "multi_terms.pt"))

    save_file({k: t.contiguous() for k, t in expected.items()}, os.path.join(TI_OUT, "expected.safetensors"))


# ----------------------------------------------------------------------------------------------
# Hypernetworks: A1111's module, layer building copied from modules/hypernetworks/hypernetwork.py
# ----------------------------------------------------------------------------------------------

class HypernetworkModule(torch.nn.Module):
    activation_dict = {
        "linear": torch.nn.Identity,
        "relu": torch.nn.ReLU,
        "leakyrelu": torch.nn.LeakyReLU,
        "elu": torch.nn.ELU,
        "swish": torch.nn.Hardswish,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    }
    activation_dict.update({cls_name.lower(): cls_obj for cls_name, cls_obj in inspect.getmembers(torch.nn.modules.activation)
                            if inspect.isclass(cls_obj) and cls_obj.__module__ == 'torch.nn.modules.activation'})

    def __init__(self, dim, layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure):
        super().__init__()
        self.multiplier = 1.0
        assert layer_structure[0] == 1 and layer_structure[-1] == 1
        linears = []
        for i in range(len(layer_structure) - 1):
            linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func == "linear" or activation_func is None or (i >= len(layer_structure) - 2 and not activate_output):
                pass
            elif activation_func in self.activation_dict:
                linears.append(self.activation_dict[activation_func]())
            else:
                raise RuntimeError(f'hypernetwork uses an unsupported activation function: {activation_func}')
            if add_layer_norm:
                linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                linears.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*linears)

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout):
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    dropout_values = [0]
    dropout_values.extend([0.3] * (len(layer_structure) - 3))
    dropout_values.append(0.3 if last_layer_dropout else 0)
    dropout_values.append(0)
    return dropout_values


def randomize(module, g):
    """Weights with std 0.5 (A1111 initialises with 0.01: outputs would be ~x, testing nothing)."""
    for layer in module.linear:
        if isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
            layer.weight.data = torch.randn(layer.weight.shape, generator=g) * (0.5 if isinstance(layer, torch.nn.Linear) else 0.3) \
                + (1.0 if isinstance(layer, torch.nn.LayerNorm) else 0.0)
            layer.bias.data = torch.randn(layer.bias.shape, generator=g) * 0.3
        elif isinstance(layer, torch.nn.PReLU):
            layer.weight.data = torch.tensor([0.1])


def make_hypernetwork(widths, g, layer_structure=(1, 2, 1), activation_func=None, add_layer_norm=False,
                      activate_output=False, use_dropout=False, last_layer_dropout=False, dropout_structure=None):
    layer_structure = list(layer_structure)
    if dropout_structure is None:
        dropout_structure = parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    layers = {}
    for w in widths:
        pair = []
        for _ in range(2):
            m = HypernetworkModule(w, layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure)
            randomize(m, g)
            m.eval()
            pair.append(m)
        layers[w] = tuple(pair)
    options = dict(layer_structure=layer_structure, activation_func=activation_func, is_layer_norm=add_layer_norm,
                   weight_initialization="Normal", activate_output=activate_output, use_dropout=use_dropout,
                   dropout_structure=dropout_structure,
                   last_layer_dropout=(dropout_structure[-2] != 0) if dropout_structure is not None else last_layer_dropout)
    return layers, options


def save_a1111(path, name, layers, options, drop_keys=()):
    """Hypernetwork.save: {width: (k.state_dict(), v.state_dict()), options…}."""
    state_dict = {}
    for k, v in layers.items():
        state_dict[k] = (v[0].state_dict(), v[1].state_dict())
    state_dict['step'] = 1200
    state_dict['name'] = name
    state_dict['layer_structure'] = options['layer_structure']
    state_dict['activation_func'] = options['activation_func']
    state_dict['is_layer_norm'] = options['is_layer_norm']
    state_dict['weight_initialization'] = options['weight_initialization']
    state_dict['sd_checkpoint'] = "e1441589a6"
    state_dict['sd_checkpoint_name'] = "v1-5-pruned"
    state_dict['activate_output'] = options['activate_output']
    state_dict['use_dropout'] = options['use_dropout']
    state_dict['dropout_structure'] = options['dropout_structure']
    state_dict['last_layer_dropout'] = options['last_layer_dropout']
    state_dict['optional_info'] = None
    for key in drop_keys:
        del state_dict[key]
    torch.save(state_dict, path)


def save_safetensors_form(path, name, layers, options):
    tensors = {}
    for w, pair in layers.items():
        for half, m in enumerate(pair):
            for k, t in m.state_dict().items():
                tensors[f"{w}.{half}.{k}"] = t.contiguous()
    metadata = {
        "name": name,
        "layer_structure": json.dumps(options["layer_structure"]),
        "activation_func": str(options["activation_func"]),
        "is_layer_norm": str(options["is_layer_norm"]),
        "activate_output": str(options["activate_output"]),
        "use_dropout": str(options["use_dropout"]),
        "dropout_structure": json.dumps(options["dropout_structure"]),
    }
    save_file(tensors, path, metadata=metadata)


def outputs(layers, x, multiplier):
    w = x.shape[-1]
    k, v = layers[w]
    k.multiplier = v.multiplier = multiplier
    with torch.no_grad():
        return k(x), v(x)


ACTIVATIONS = ["linear", "relu", "leakyrelu", "elu", "swish", "hardswish", "tanh", "sigmoid", "celu", "gelu",
               "hardshrink", "hardsigmoid", "hardtanh", "logsigmoid", "mish", "prelu", "relu6", "rrelu", "selu",
               "silu", "softplus", "softshrink", "softsign", "tanhshrink"]


def gen_hn():
    os.makedirs(HN_OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2)
    expected = {}
    strength = 0.7

    def record(case, layers):
        for w in sorted(layers):
            x = torch.randn(2, 3, w, generator=g) * 2
            k, v = outputs(layers, x, strength)
            expected[f"{case}.{w}.x"], expected[f"{case}.{w}.k"], expected[f"{case}.{w}.v"] = x, k, v

    cases = {
        "relu_ln": dict(widths=[8, 12], activation_func="relu", add_layer_norm=True),
        # Fractional structure (int(8·1.5) = 12), dropout after linears 0 and 1 (indices shift).
        "deep_dropout": dict(widths=[8], layer_structure=(1, 1.5, 2, 1), activation_func="leakyrelu",
                             add_layer_norm=True, activate_output=True, use_dropout=True, last_layer_dropout=True),
        "swish_out": dict(widths=[8], activation_func="swish", activate_output=True),
        "linear_ln": dict(widths=[8], activation_func="linear", add_layer_norm=True),
        "prelu": dict(widths=[8], activation_func="prelu"),
        # Saved before dropout_structure existed: A1111 rebuilds it from use_dropout/last_layer_dropout.
        "old_dropout": dict(widths=[8], layer_structure=(1, 2, 2, 1), activation_func="relu", use_dropout=True,
                            last_layer_dropout=True),
    }
    built = {}
    for case, spec in cases.items():
        layers, options = make_hypernetwork(g=g, **spec)
        drop = ("dropout_structure",) if case == "old_dropout" else ()
        save_a1111(os.path.join(HN_OUT, f"{case}.pt"), f"stored-{case}", layers, options, drop_keys=drop)
        record(case, layers)
        built[case] = layers

    # The oldest files: linear1/linear2 (no activation, no options), as A1111's fix_old_state_dict reads.
    layers, _ = make_hypernetwork([8, 12], g)
    legacy = {}
    for w, (k, v) in layers.items():
        legacy[w] = tuple({("linear1" if n.startswith("linear.0.") else "linear2") + n[len("linear.0"):]: t
                           for n, t in m.state_dict().items()} for m in (k, v))
    legacy["step"] = 3000
    legacy["name"] = "legacy"
    torch.save(legacy, os.path.join(HN_OUT, "legacy.pt"))
    record("legacy", layers)

    for name in ACTIVATIONS:
        layers, options = make_hypernetwork([4], g, activation_func=name, activate_output=True)
        save_safetensors_form(os.path.join(HN_OUT, f"act_{name}.safetensors"), f"act_{name}", layers, options)
        record(f"act_{name}", layers)

    # Two hypernetworks chained (apply_hypernetworks): k and v follow separate chains.
    x = torch.randn(2, 3, 8, generator=g) * 2
    k1, v1 = built["relu_ln"][8][0], built["relu_ln"][8][1]
    k2, v2 = built["swish_out"][8][0], built["swish_out"][8][1]
    k1.multiplier = v1.multiplier = 0.7
    k2.multiplier = v2.multiplier = 1.3
    with torch.no_grad():
        ck, cv = x, x
        ck, cv = k1(ck), v1(cv)
        ck, cv = k2(ck), v2(cv)
    expected["chain.8.x"], expected["chain.8.k"], expected["chain.8.v"] = x, ck, cv

    save_file({k: t.contiguous().float() for k, t in expected.items()}, os.path.join(HN_OUT, "expected.safetensors"),
              metadata={"strength": str(strength)})


# ----------------------------------------------------------------------------------------------
# DreamBooth
# ----------------------------------------------------------------------------------------------

# Changed tensors: linear/conv/1×1-conv/norm weights and biases in UNet, text encoder and VAE,
# the token embedding, and one bias whose weight is unchanged.
SMALL = [  # fine-tune-sized changes (a few F16 ulps): differences exact in F16
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.1.1.norm.weight",
    "model.diffusion_model.input_blocks.1.1.norm.bias",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias",  # bias only
]
LARGE = [  # large changes: sign crossings, growth and shrinkage
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.bias",
    "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "model.diffusion_model.input_blocks.1.1.proj_in.weight",
    "model.diffusion_model.time_embed.0.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.bias",
    "cond_stage_model.transformer.text_model.final_layer_norm.bias",
    "first_stage_model.decoder.mid.attn_1.q.weight",
    "first_stage_model.decoder.mid.attn_1.q.bias",
]


def to_dtype(x32, dtype):
    return x32.astype(dtype)


def difference(a, b):
    """The difference the diff command stores, element by element: D = B − A in F32; where the
    host's merge at weight 1, (A32 + D) rounded to the checkpoint dtype, is not B bit for bit,
    the nearest F32 neighbours D ± 1…8 ulps are tried (+k before −k) and the first that
    reproduces B is kept. D is stored in the checkpoint dtype when every element is exact there,
    else in F32. Returns (stored D, count of elements no candidate reproduces)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    d = (b32 - a32).astype(np.float32)
    bad = (a32 + d).astype(a.dtype).view(np.uint8 if a.dtype.itemsize == 1 else f"u{a.dtype.itemsize}") \
        != b.view(f"u{a.dtype.itemsize}")
    unreproducible = 0
    flat_d, flat_a, flat_b = d.reshape(-1), a32.reshape(-1), b.reshape(-1)
    for i in np.nonzero(bad.reshape(-1))[0]:
        found = None
        for k in range(1, 9):
            for direction in (np.float32(np.inf), np.float32(-np.inf)):
                c = flat_d[i]
                for _ in range(k):
                    c = np.nextafter(c, direction)
                r = np.array([flat_a[i] + c], dtype=np.float32).astype(a.dtype)
                if r.view(f"u{a.dtype.itemsize}")[0] == flat_b[i:i + 1].view(f"u{a.dtype.itemsize}")[0]:
                    found = c
                    break
            if found is not None:
                break
        if found is None:
            unreproducible += 1
        else:
            flat_d[i] = found
    if a.dtype != np.float32 and np.array_equal(d.astype(a.dtype).astype(np.float32), d):
        return d.astype(a.dtype), unreproducible
    return d, unreproducible


def gen_db():
    os.makedirs(DB_OUT, exist_ok=True)
    rng = np.random.default_rng(3)
    base = {k: v.numpy() for k, v in load_file(SD1).items()}
    manifest = {}
    for dtype, tag in ((np.float16, "f16"), (np.float32, "f32")):
        changes, expected = {}, {}
        unreproducible_total = 0
        for key in SMALL + LARGE:
            a = base[key].astype(dtype)
            a32 = a.astype(np.float32)
            if key in SMALL:
                if dtype == np.float16:
                    # A few ulps of the F16 value.
                    ulps = rng.integers(-3, 4, size=a.shape)
                    bits = a.view(np.int16).astype(np.int32)
                    b = np.where(a32 == 0, a32, (bits + np.sign(a32).astype(np.int32) * ulps).astype(np.int16)
                                 .view(np.float16).astype(np.float32)).astype(np.float16)
                else:
                    b = (a32 * (1 + rng.normal(0, 1e-3, size=a.shape)).astype(np.float32)).astype(np.float32)
            elif dtype == np.float16:
                # Sign flips, growth and shrinkage.
                b = (a32 * np.float32(rng.uniform(-1.5, 2.0)) + rng.normal(0, 0.05, size=a.shape)).astype(dtype)
            else:
                # A fine-tune-like F32 change: small weights cross zero.
                b = (a32 * np.float32(rng.uniform(0.8, 1.2)) + rng.normal(0, 0.01, size=a.shape)).astype(dtype)
            assert b.shape == a.shape and not np.array_equal(a.view(np.uint8), b.view(np.uint8)), key
            d, unreproducible = difference(a, b)
            unreproducible_total += unreproducible
            d32 = d.astype(np.float32)
            changes[key] = b
            expected["diff/" + key] = d
            expected["full/" + key] = (a32 + d32).astype(dtype)
            expected["half/" + key] = (a32 + np.float32(0.5) * d32).astype(dtype)
        # F16: every changed element comes back bit-exactly at weight 1.
        assert dtype != np.float16 or unreproducible_total == 0
        save_np({k: np.ascontiguousarray(v) for k, v in changes.items()}, os.path.join(DB_OUT, f"{tag}_changes.safetensors"))
        save_np({k: np.ascontiguousarray(v) for k, v in expected.items()}, os.path.join(DB_OUT, f"{tag}_expected.safetensors"))
        kinds = [str(v.dtype) for k, v in expected.items() if k.startswith("diff/")]
        manifest[tag] = {"changed_tensors": len(changes), "unreproducible_elements": unreproducible_total,
                         "changed_elements": int(sum(v.size for v in changes.values())),
                         "stored_dtypes": {t: kinds.count(t) for t in sorted(set(kinds))}}
        print(tag, manifest[tag])

    patterns = {}
    for n in [0, 1, 3, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 100_003]:
        data = bytes((i * 7 + 3) & 0xFF for i in range(n))
        patterns[str(n)] = hashlib.sha256(data).hexdigest()
    with open(SD1, "rb") as f:
        sd1 = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(DB_OUT, "sha256.json"), "w") as f:
        json.dump({"pattern": "(i * 7 + 3) & 0xFF", "patterns": patterns, "abc": hashlib.sha256(b"abc").hexdigest(),
                   "sd1.safetensors": sd1}, f, indent=1, sort_keys=True)
    with open(os.path.join(DB_OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    gen_ti()
    gen_hn()
    gen_db()
    for d in (TI_OUT, HN_OUT, DB_OUT):
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(d, len(os.listdir(d)), "files", total, "bytes")
