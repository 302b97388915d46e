#!/usr/bin/env python3
"""End-to-end conformance fixtures for Textual Inversion and hypernetworks on the runtime
(Tests/RuntimeTests/AdapterConformance*Tests.swift; CI never runs this).

Run with the peers venv after tools/gen_model_fixtures.py and tools/gen_text_encoder_fixtures.py:

    /work/venv/peers/bin/python tools/gen_adapter_conformance_fixtures.py

Writes Tests/RuntimeTests/Fixtures/adapters6/ (everything seeded: reruns write identical data).

Textual Inversion — real embedding files, sized for the prompt encoders of
Fixtures/textencoder/prompt_*.safetensors (tiny CLIPs over the real 49408-token vocabulary,
rebuilt here with gen_text_encoder_fixtures.prompt_encoder and checked against the stored files):

  emba1111.pt               A1111 Embedding.save dict, string_to_param {"*": [2, 16]}   (SD1)
  embkohya.safetensors      kohya {"emb_params": [3, 16]} F16                          (SD1)
  cattoy.bin                diffusers learned_embeds {"<cat-toy>": [16]} (torch.save)  (SD1)
  dogconcept.safetensors    diffusers {"<dog>": [2, 16]}                               (SD1)
  embsd2.safetensors        kohya {"emb_params": [2, 8]}                               (SD2)
  origsd2.pt                original textual inversion (ParameterDict) [1, 8]          (SD2)
  embxl.safetensors         SDXL {"clip_l": [2, 16], "clip_g": [2, 8]} F16             (SDXL)
  xlsingle.safetensors      SDXL {"clip_l": [1, 16], "clip_g": [1, 8]}                 (SDXL)

  The prompt name is the file stem (A1111). The vectors are read back from the files the way
  A1111's EmbeddingDatabase.load_from_file reads them (F32). The prompts use every embedding,
  with emphasis on some, and are long enough to cross the 75-token chunk boundary with a
  multi-vector embedding that does not fit and moves whole to the next chunk.

  Reference: A1111's chunking (gen_text_encoder_fixtures.Chunker, checked there against the
  webui-generated tokenizer fixture), then per chunk and encoder transformers' CLIPTextModel /
  CLIPTextModelWithProjection fed through `inputs_embeds` (the embeddings module's input): the
  token table's rows for the chunk's ids with the TI vectors written at fix offset + 1 (A1111's
  EmbeddingsWithFixes); the family's layer (SD1 last_hidden_state; SD2 hidden_states[-2] +
  final_layer_norm, ids zero-padded after the first end token; SDXL hidden_states[-2] raw of both
  encoders, CLIP-L then bigG on the channel axis, pooled = bigG text_embeds (text_projection of
  the first end token) of the first chunk); A1111's emphasis "Original" (z·m in float64, then
  · mean_f32(z) / mean(z·m)); chunks concatenated; the shorter of cond/uncond padded with the
  empty prompt's conditioning (pad_cond_uncond).

  ti.json                   per case: family, prompt, negative, files, expected chunks
                            (tokens, multipliers, fixes), token-table formulas
  ti_expected.safetensors   "<case>.cond|uncond[|pooled|uncond_pooled]"

Hypernetworks — A1111 .pt files (Hypernetwork.save layout, modules as A1111's HypernetworkModule,
from gen_ti_hn_db_fixtures) sized for the tiny UNets of Tests/HostTests/Fixtures/models
(SD1: self-attention widths 4 and 8, cross-attention context 32; SDXL: width 8, context 48):

  hn_full.pt     widths 4, 8, 32: relu + layer norm, [1, 1, 1]
  hn_second.pt   widths 4, 32: swish (Hardswish) with activate_output, [1, 0.75, 1]
  hn_cross.pt    width 32 only (cross-attention contexts): tanh + layer norm, [1, 0.5, 1]
  hn_mid.pt      width 8 only (the 8-channel self-attentions): elu, [1, 2, 1]
  hn_xl.pt       widths 8, 48: leakyrelu + layer norm, [1, 0.25, 1] (SDXL)

  Reference: diffusers' UNet2DConditionModel (F32) with every attention's processor replaced
  by diffusers' AttnProcessor plus A1111's hook: the context (encoder_hidden_states, or the
  hidden states themselves for self-attention) goes through apply_hypernetworks — for each
  hypernetwork in order, the pair for context_k.shape[2] (none: unchanged) gives
  context_k = k(context_k), context_v = v(context_v), each x + MLP(x)·multiplier — and to_k /
  to_v read context_k / context_v; to_q is untouched. The hypernetworks are loaded back from
  the .pt files as A1111's Hypernetwork.load does.

  hn_expected.safetensors   inputs (sd1./sdxl. sample, timesteps, context[, text_embeds,
                            time_ids]) and outputs: sd1.plain, sd1.full (0.8), sd1.chain
                            (full 0.8 then second 0.5), sd1.cross (0.8), sd1.mid (0.8),
                            sdxl.plain, sdxl.xl (0.8)
  hn.json                   strengths and how many attention calls each width got (the Swift
                            test counts the same)
"""
import importlib.util
import json
import os
from collections import Counter

import torch
from safetensors.torch import load_file, save_file

from diffusers import UNet2DConditionModel
from transformers.models.clip.modeling_clip import CLIPTextEmbeddings
from diffusers.models.attention_processor import AttnProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")
TEXT_FIXTURES = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures", "textencoder")
OUT = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures", "adapters6")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


te = load_tool("gen_text_encoder_fixtures")
tihn = load_tool("gen_ti_hn_db_fixtures")


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# ----------------------------------------------------------------------------------------------
# Textual Inversion: files
# ----------------------------------------------------------------------------------------------

# stem -> (family, file name)
TI_FILES = {
    "emba1111": ("sd1", "emba1111.pt"),
    "embkohya": ("sd1", "embkohya.safetensors"),
    "cattoy": ("sd1", "cattoy.bin"),
    "dogconcept": ("sd1", "dogconcept.safetensors"),
    "embsd2": ("sd2", "embsd2.safetensors"),
    "origsd2": ("sd2", "origsd2.pt"),
    "embxl": ("sdxl", "embxl.safetensors"),
    "xlsingle": ("sdxl", "xlsingle.safetensors"),
}


def write_ti_files():
    g = torch.Generator().manual_seed(61)

    def vec(n, width, dtype=torch.float32):
        # The fixture token tables are in [-0.5, 0.5]; learned vectors are of that order.
        return (torch.randn(n, width, generator=g) * 0.4).to(dtype)

    def path(stem):
        return os.path.join(OUT, TI_FILES[stem][1])

    # A1111 Embedding.save (the vector is the trained parameter, saved with requires_grad).
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec(2, 16).requires_grad_(True)},
                "name": "stored-name", "step": 800, "sd_checkpoint": "0123456789",
                "sd_checkpoint_name": "tiny-sd1"}, path("emba1111"))
    save_file({"emb_params": vec(3, 16, torch.float16)}, path("embkohya"))
    torch.save({"<cat-toy>": vec(1, 16)[0]}, path("cattoy"))
    save_file({"<dog>": vec(2, 16)}, path("dogconcept"))
    save_file({"emb_params": vec(2, 8)}, path("embsd2"))
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vec(1, 8))})
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}, path("origsd2"))
    save_file({"clip_l": vec(2, 16, torch.float16), "clip_g": vec(2, 8, torch.float16)}, path("embxl"))
    save_file({"clip_l": vec(1, 16), "clip_g": vec(1, 8)}, path("xlsingle"))


def a1111_read_embedding(path):
    """{width: F32 [n, width]} as A1111's EmbeddingDatabase.load_from_file reads the file, and
    the vector count it registers (SDXL: clip_g's)."""
    if path.endswith(".safetensors"):
        data = load_file(path)
    else:
        data = torch.load(path, map_location="cpu", weights_only=False)
    if "string_to_param" in data:
        params = data["string_to_param"]
        assert len(params) == 1, "embedding file has multiple terms in it"
        emb = next(iter(params.items()))[1]
        vec = emb.detach().to(torch.float32)
        return {vec.shape[-1]: vec}, vec.shape[0]
    if "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(torch.float32) for k, v in data.items()}
        return {vec["clip_l"].shape[-1]: vec["clip_l"], vec["clip_g"].shape[-1]: vec["clip_g"]}, vec["clip_g"].shape[0]
    assert len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor)
    emb = next(iter(data.values()))
    if emb.dim() == 1:
        emb = emb.unsqueeze(0)
    vec = emb.detach().to(torch.float32)
    return {vec.shape[-1]: vec}, vec.shape[0]


# ----------------------------------------------------------------------------------------------
# Textual Inversion: reference conditioning through inputs_embeds
# ----------------------------------------------------------------------------------------------

def embeddings_module(model):
    # transformers 5: CLIPTextModel holds the text transformer's parts itself,
    # CLIPTextModelWithProjection under `text_model`.
    return next(m for m in model.modules() if isinstance(m, CLIPTextEmbeddings))


def final_layer_norm(model):
    return next(m for n, m in model.named_modules() if n.endswith("final_layer_norm"))


def run_with_inputs_embeds(model, ids, inputs_embeds):
    """The model on `ids` [1, 77] (ids decide the pooled position) with the embeddings module fed
    `inputs_embeds` [1, 77, width] instead of its token lookup; all hidden states."""
    module = embeddings_module(model)
    original = module.forward

    def forward(input_ids=None, position_ids=None, inputs_embeds_unused=None, **_):
        return original(input_ids=None, position_ids=position_ids, inputs_embeds=inputs_embeds)

    module.forward = forward
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    finally:
        module.forward = original


class Encoder:
    """One text encoder as A1111 wraps it: id padding, the layer it reads, TI by width."""

    def __init__(self, model, pad_zero, layer):
        self.model, self.pad_zero, self.layer = model, pad_zero, layer
        self.width = model.config.hidden_size

    def encode(self, chunk, vectors):
        ids = list(chunk["tokens"])
        if self.pad_zero:
            end = ids.index(49407)
            ids = ids[:end + 1] + [0] * (len(ids) - end - 1)
        with torch.no_grad():
            embeds = embeddings_module(self.model).token_embedding(torch.tensor([ids])).clone()
        for offset, name in chunk["fixes"]:
            vec = vectors[name][self.width]
            # EmbeddingsWithFixes: emb_len = min(len - offset - 1, vectors), written after BOS.
            n = min(embeds.shape[1] - offset - 1, vec.shape[0])
            embeds[0, offset + 1:offset + 1 + n] = vec[:n]
        out = run_with_inputs_embeds(self.model, [ids], embeds)
        hs = out.hidden_states
        with torch.no_grad():
            if self.layer == "last":
                z = out.last_hidden_state
            elif self.layer == "penultimate_norm":
                z = final_layer_norm(self.model)(hs[-2])
            else:
                z = hs[-2]
            z = f32(z)
            # sd_emphasis.EmphasisOriginal: multipliers are float64 (torch.asarray of Python floats).
            mult = torch.asarray([chunk["multipliers"]])
            mult = mult.reshape(mult.shape + (1,)).expand(z.shape)
            original = z.mean()
            z = z * mult
            z = (z * (original / z.mean())).to(torch.float32)
        pooled = f32(out.text_embeds) if getattr(out, "text_embeds", None) is not None else None
        return z, pooled


def conditioning(encoders, chunker, prompt, vectors):
    chunks, _ = chunker.chunks(prompt)
    zs, pooled = [], None
    for i, chunk in enumerate(chunks):
        parts = [enc.encode(chunk, vectors) for enc in encoders]
        zs.append(torch.cat([p[0] for p in parts], dim=-1))
        if i == 0:
            pooled = parts[-1][1]
    return torch.cat(zs, dim=1)[0], (pooled[0] if pooled is not None else None), chunks


def prompt_encoders():
    """The prompt encoders of gen_text_encoder_fixtures (same seeds), checked against the stored
    files so a change there cannot silently desynchronise this fixture."""
    models_tool = load_tool("gen_model_fixtures")
    sd1 = te.prompt_encoder(16, "quick_gelu", False, 101, te.TABLES["sd1"])
    sd2 = te.prompt_encoder(8, "gelu", False, 102, te.TABLES["sd2"])
    xl0 = te.prompt_encoder(16, "quick_gelu", False, 103, te.TABLES["sdxl.0"])
    xl1 = te.prompt_encoder(8, "gelu", True, 104, te.TABLES["sdxl.1"])
    rebuilt = {
        "prompt_sd1": {"text_encoder." + k: v for k, v in te.stored_state(sd1).items()},
        "prompt_sd2": models_tool.open_clip_to_ldm(te.stored_state(sd2), "cond_stage_model.model.", None),
        "prompt_sdxl": {**models_tool.clip_to_ldm(te.stored_state(xl0), "conditioner.embedders.0.transformer."),
                        **models_tool.open_clip_to_ldm(te.stored_state(xl1), "conditioner.embedders.1.model.", None)},
    }
    for name, state in rebuilt.items():
        stored = load_file(os.path.join(TEXT_FIXTURES, name + ".safetensors"))
        mine = {k: v for k, v in state.items() if "token_embedding" not in k}
        assert set(mine) == set(stored), name
        for k in stored:
            assert torch.equal(mine[k].contiguous(), stored[k]), f"{name}: {k} differs from the stored encoder"
    return {"sd1": [Encoder(sd1, False, "last")],
            "sd2": [Encoder(sd2, True, "penultimate_norm")],
            "sdxl": [Encoder(xl0, False, "penultimate"), Encoder(xl1, True, "penultimate")]}


def boundary_prompt(chunker, head, mover, tail):
    """`head` + n fillers + `mover` + `tail`, with n chosen so that the multi-vector embedding
    `mover` starts at prompt token 73 or 74: it does not fit the first chunk and moves whole."""
    for n in range(30, 75):
        prompt = head + " " + " ".join(["filler"] * n) + " " + mover + tail
        chunks, _ = chunker.chunks(prompt)
        if len(chunks) < 2:
            continue
        name = mover.strip("()[]").split(":")[0]
        late = [f for f in chunks[0]["fixes"] if f[1] == name and f[0] >= 60]
        second = chunks[1]["fixes"]
        used = 75 - chunks[0]["tokens"][1:76].count(49407)
        if not late and second and second[0] == [0, name] and used >= 73:
            return prompt
    raise AssertionError("no filler count moves the embedding across the boundary")


def gen_ti():
    runtime = load_tool("gen_runtime_fixtures")
    hf = runtime.hf_clip_tokenizer(runtime.clip_merges_lines())

    def tokenize(texts):
        return hf(texts, truncation=False, add_special_tokens=False)["input_ids"]

    write_ti_files()
    encoders = prompt_encoders()
    vectors, counts = {}, {}
    for stem, (_, file) in TI_FILES.items():
        vectors[stem], counts[stem] = a1111_read_embedding(os.path.join(OUT, file))

    def chunker_for(family):
        return te.Chunker(tokenize, [(s, counts[s]) for s, (f, _) in TI_FILES.items() if f == family])

    sd1, sd2, xl = chunker_for("sd1"), chunker_for("sd2"), chunker_for("sdxl")
    cases = [
        ("sd1_formats", "sd1",
         boundary_prompt(sd1, "a photo of (emba1111:1.3) and [cattoy] on a table, dogconcept style,",
                         "(embkohya:1.2)", " at the end, emba1111"),
         "blurry, (emba1111:0.8), [dogconcept]"),
        ("sd1_short", "sd1", "cattoy emba1111 (dogconcept embkohya:1.5)", "embkohya"),
        ("sd2_formats", "sd2",
         boundary_prompt(sd2, "(embsd2:1.25) house in the style of origsd2,", "embsd2", ", [origsd2]"),
         "(origsd2:1.1) ugly"),
        ("sdxl_formats", "sdxl",
         boundary_prompt(xl, "photo of (embxl:1.3), xlsingle and a [dog],", "(embxl:0.9)", " final xlsingle"),
         "bad (xlsingle:1.2)"),
    ]
    tensors, out_cases = {}, []
    for name, family, prompt, negative in cases:
        chunker = {"sd1": sd1, "sd2": sd2, "sdxl": xl}[family]
        encs = encoders[family]
        cond, pooled, cchunks = conditioning(encs, chunker, prompt, vectors)
        uncond, upooled, uchunks = conditioning(encs, chunker, negative, vectors)
        empty, _, _ = conditioning(encs, chunker, "", vectors)
        while cond.shape[0] < uncond.shape[0]:
            cond = torch.cat([cond, empty], 0)
        while uncond.shape[0] < cond.shape[0]:
            uncond = torch.cat([uncond, empty], 0)
        fixes = [f for c in cchunks for f in c["fixes"]] + [f for c in uchunks for f in c["fixes"]]
        used = sorted({f[1] for f in fixes})
        tensors[f"{name}.cond"] = cond.contiguous()
        tensors[f"{name}.uncond"] = uncond.contiguous()
        if pooled is not None:
            tensors[f"{name}.pooled"] = pooled.contiguous()
            tensors[f"{name}.uncond_pooled"] = upooled.contiguous()
        out_cases.append({"name": name, "family": family, "prompt": prompt, "negative": negative,
                          "files": [TI_FILES[s][1] for s, (f, _) in TI_FILES.items() if f == family],
                          "used": used,
                          "chunks": [{"tokens": c["tokens"], "multipliers": c["multipliers"], "fixes": c["fixes"]}
                                     for c in cchunks],
                          "negative_chunks": [{"tokens": c["tokens"], "multipliers": c["multipliers"],
                                               "fixes": c["fixes"]} for c in uchunks]})
        print(f"ti {name}: {len(cchunks)} chunks, cond {list(cond.shape)}, embeddings used {used}")
    for stem, (family, _) in TI_FILES.items():
        assert any(stem in c["used"] for c in out_cases), f"{stem} is never used"
    save_file(tensors, os.path.join(OUT, "ti_expected.safetensors"), metadata={"generator": os.path.basename(__file__)})
    with open(os.path.join(OUT, "ti.json"), "w") as f:
        json.dump({"tables": te.TABLES, "vector_counts": counts, "cases": out_cases}, f, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------
# Hypernetworks
# ----------------------------------------------------------------------------------------------

class LoadedHypernetwork:
    """A1111's Hypernetwork.load: options with A1111's defaults, one (k, v) module pair per
    integer key, strict load_state_dict (after fix_old_state_dict), eval mode."""

    def __init__(self, path):
        sd = torch.load(path, map_location="cpu", weights_only=False)
        layer_structure = sd.get("layer_structure", [1, 2, 1])
        activation_func = sd.get("activation_func", None)
        add_layer_norm = sd.get("is_layer_norm", False)
        dropout_structure = sd.get("dropout_structure", None)
        use_dropout = True if dropout_structure is not None and any(dropout_structure) else sd.get("use_dropout", False)
        activate_output = sd.get("activate_output", True)
        last_layer_dropout = sd.get("last_layer_dropout", False)
        if dropout_structure is None:
            dropout_structure = tihn.parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
        self.layers = {}
        for size, pair in sd.items():
            if type(size) is int:
                modules = []
                for state in pair:
                    m = tihn.HypernetworkModule(size, layer_structure, activation_func, add_layer_norm,
                                                activate_output, dropout_structure)
                    m.load_state_dict(state, strict=True)
                    m.eval()
                    modules.append(m)
                self.layers[size] = tuple(modules)

    def set_multiplier(self, multiplier):
        for k, v in self.layers.values():
            k.multiplier = v.multiplier = multiplier


def apply_hypernetworks(hypernetworks, context, calls):
    """A1111's apply_hypernetworks / apply_single_hypernetwork (hypernetworks: loaded, with their
    multiplier set); `calls` counts the contexts each width's pair transformed."""
    context_k = context_v = context
    for hn in hypernetworks:
        layers = hn.layers.get(context_k.shape[2], None)
        if layers is None:
            continue
        calls[context_k.shape[2]] += 1
        context_k = layers[0](context_k)
        context_v = layers[1](context_v)
    return context_k, context_v


class HypernetworkAttnProcessor:
    """diffusers' AttnProcessor with A1111's hook: to_k/to_v read the hypernetworks' outputs of
    the context (encoder_hidden_states, or the hidden states for self-attention)."""

    def __init__(self, hypernetworks, calls):
        self.hypernetworks, self.calls = hypernetworks, calls

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        assert attn.spatial_norm is None and attn.group_norm is None and hidden_states.ndim == 3
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        context_k, context_v = apply_hypernetworks(self.hypernetworks, encoder_hidden_states, self.calls)
        key = attn.to_k(context_k)
        value = attn.to_v(context_v)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        hidden_states = torch.bmm(attention_probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


HN_FILES = {
    # Narrow hidden layers keep the files small (A1111 takes any structure starting and ending with 1).
    "hn_full": dict(widths=[4, 8, 32], layer_structure=(1, 1, 1), activation_func="relu", add_layer_norm=True),
    # int(4·0.75) = 3, int(32·0.75) = 24: Python's truncation.
    "hn_second": dict(widths=[4, 32], layer_structure=(1, 0.75, 1), activation_func="swish", activate_output=True),
    "hn_cross": dict(widths=[32], layer_structure=(1, 0.5, 1), activation_func="tanh", add_layer_norm=True),
    "hn_mid": dict(widths=[8], activation_func="elu"),
    "hn_xl": dict(widths=[8, 48], layer_structure=(1, 0.25, 1), activation_func="leakyrelu", add_layer_norm=True),
}
STRENGTH, SECOND_STRENGTH = 0.8, 0.5


def gen_hn():
    g = torch.Generator().manual_seed(62)
    for name, spec in HN_FILES.items():
        layers, options = tihn.make_hypernetwork(g=g, **spec)
        tihn.save_a1111(os.path.join(OUT, name + ".pt"), "stored-" + name, layers, options)
    loaded = {name: LoadedHypernetwork(os.path.join(OUT, name + ".pt")) for name in HN_FILES}

    tensors, calls_out = {}, {}
    g = torch.Generator().manual_seed(63)
    for family, runs in [("sd1", [("full", [("hn_full", STRENGTH)]),
                                  ("chain", [("hn_full", STRENGTH), ("hn_second", SECOND_STRENGTH)]),
                                  ("cross", [("hn_cross", STRENGTH)]),
                                  ("mid", [("hn_mid", STRENGTH)]),
                                  ("zero", [("hn_full", 0.0)])]),
                         ("sdxl", [("xl", [("hn_xl", STRENGTH)])])]:
        unet = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, family, "unet")).float().eval()
        sample = torch.randn(2, 4, 8, 8, generator=g)
        timesteps = torch.tensor([811.0, 42.5])
        context = torch.randn(2, 7, unet.config.cross_attention_dim, generator=g)
        inputs = {"sample": sample, "timesteps": timesteps, "context": context}
        added = None
        if unet.config.addition_embed_type == "text_time":
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            inputs["text_embeds"] = torch.randn(2, pooled, generator=g)
            inputs["time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [48.0, 32.0, 8.0, 0.0, 64.0, 48.0]])
            added = {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}
        for k, v in inputs.items():
            tensors[f"{family}.{k}"] = v

        def call(hypernetworks):
            calls = Counter()
            unet.set_attn_processor(HypernetworkAttnProcessor(hypernetworks, calls))
            with torch.no_grad():
                out = unet(sample, timesteps, encoder_hidden_states=context, added_cond_kwargs=added).sample
            return out, calls

        unet.set_attn_processor(AttnProcessor())
        with torch.no_grad():
            plain = unet(sample, timesteps, encoder_hidden_states=context, added_cond_kwargs=added).sample
        hooked_plain, _ = call([])
        assert torch.equal(plain, hooked_plain), "the hook processor without hypernetworks must be AttnProcessor"
        tensors[f"{family}.plain"] = plain
        for run_name, stack in runs:
            hns = []
            for hn_name, multiplier in stack:
                loaded[hn_name].set_multiplier(multiplier)
                hns.append(loaded[hn_name])
            out, calls = call(hns)
            change = ((out - plain).abs().max() / plain.abs().max()).item()
            if run_name == "zero":
                assert torch.equal(out, plain), "strength 0 must give the plain call"
                continue
            assert change > 1e-2, f"{family}.{run_name} changes the output by only {change}"
            tensors[f"{family}.{run_name}"] = out
            calls_out[f"{family}.{run_name}"] = {str(w): n for w, n in sorted(calls.items())}
            print(f"hn {family}.{run_name}: relative change {change:.3g}, calls per width {dict(sorted(calls.items()))}")

    save_file({k: f32(v) for k, v in tensors.items()}, os.path.join(OUT, "hn_expected.safetensors"),
              metadata={"generator": os.path.basename(__file__)})
    with open(os.path.join(OUT, "hn.json"), "w") as f:
        json.dump({"strength": STRENGTH, "second_strength": SECOND_STRENGTH,
                   "widths": {name: spec["widths"] for name, spec in HN_FILES.items()},
                   "calls": calls_out}, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    gen_ti()
    gen_hn()
    for name in os.listdir(OUT):
        os.chmod(os.path.join(OUT, name), 0o644)  # save_file creates files readable by the owner only
