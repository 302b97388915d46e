#!/usr/bin/env python3
"""Text-encoder and prompt-conditioning fixtures for Tests/RuntimeTests (CI never runs this).

    /work/venv/peers/bin/python tools/gen_text_encoder_fixtures.py

Writes Tests/RuntimeTests/Fixtures/textencoder/:

encoder_ids.json + encoder_ids.safetensors — token-id level conformance of the tiny fixture
  models of Tests/HostTests/Fixtures/models (vocabulary 64, end-of-text id 1, so ids are small
  numbers, not real CLIP tokens). Reference: transformers' CLIPTextModel /
  CLIPTextModelWithProjection loaded from the diffusers folders in F32 (the encoders the
  diffusers pipelines run). Per encoder: the last layer with final_layer_norm, hidden_states[-2]
  raw and with final_layer_norm, the pooled output (and text_embeds for the projection model),
  and the same with textual-inversion vectors written over the token embeddings at given
  positions by a forward hook on token_embedding (how A1111's EmbeddingsWithFixes does it).

conditioning.json + conditioning.safetensors + prompt_*.safetensors — prompt -> conditioning.
  Tiny encoders with the real vocabulary (49408) are needed for real prompts; their token
  embedding table would be MBs, so it is NOT stored: row i, column j is
  ((i*A + j*B + C) mod 2001 - 1000) / 2000 in F32 (exact in any language; the Swift test builds
  the same table). The other weights are random, stored as F16, and the reference runs on the
  F16-rounded values. Files (token embedding left out):
    prompt_sd1.safetensors   diffusers keys (text_encoder.text_model.*), CLIP, quick_gelu, width 16
    prompt_sd2.safetensors   ldm keys (cond_stage_model.model.*, fused in_proj), gelu, width 8
    prompt_sdxl.safetensors  sgm keys: embedder 0 CLIP width 16, embedder 1 OpenCLIP width 8 with
                             text_projection
  The reference conditioning follows A1111 (modules/sd_hijack_clip.py, sd_emphasis.py,
  sd_models_xl.py, sd_samplers_cfg_denoiser.py pad_cond_uncond): emphasis parsing and
  75-token chunking (reimplemented below and checked against the webui-generated
  Fixtures/tokenizer/a1111_prompts.json), SD2 zero padding, textual-inversion vectors at
  fix offset + 1, the chosen layer (SD1: clip skip = hidden_states[-n] + final_layer_norm;
  SD2: penultimate + ln_final; SDXL: hidden_states[-2] raw for both, CLIP-L then bigG on the
  channel axis, pooled = bigG text_embeds of the first chunk), emphasis "Original"
  (z * multipliers, then * original_mean / new_mean, per chunk and per encoder), chunks
  concatenated on the token axis, the shorter of cond/uncond padded with the empty prompt's
  conditioning (pad_cond_uncond), and SDXL's empty negative prompt giving zeros.
"""
import importlib.util
import json
import os
import re

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "models")
OUT = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures", "textencoder")
A1111_PROMPTS = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures", "tokenizer", "a1111_prompts.json")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# ----------------------------------------------------------------------------------------------
# Running an encoder
# ----------------------------------------------------------------------------------------------

def token_embedding_module(model):
    return next(m for n, m in model.named_modules() if n.endswith("embeddings.token_embedding"))


def run(model, ids, injections=()):
    """Runs `model` on `ids` [B, T] with all hidden states; `injections`: (batch, position,
    vectors [n, width]) written over the token embeddings (A1111's EmbeddingsWithFixes)."""
    def hook(_module, _inputs, output):
        output = output.clone()
        for b, position, vectors in injections:
            n = min(output.shape[1] - position, vectors.shape[0])
            output[b, position:position + n] = vectors[:n]
        return output

    handle = token_embedding_module(model).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    finally:
        handle.remove()


def final_norm(model):
    return next(m for n, m in model.named_modules() if n.endswith("final_layer_norm"))


# ----------------------------------------------------------------------------------------------
# Token-id level: the tiny fixture models
# ----------------------------------------------------------------------------------------------

def id_batches():
    """Two sequences of 77 ids < 64: SD1-style (end id 1 repeated) and SD2-style (0 after the
    first end id), with a repeated token and the start id inside."""
    a = [0, 5, 17, 33, 2, 40, 63, 9, 9, 12] + [1] * 67
    b = [0, 40, 2, 9, 63, 12, 7, 0, 21, 50, 3, 44, 28, 1] + [0] * 63
    return [a, b]


KEPT = {"sd1.text_encoder": ["last", "penultimate_norm"], "sd2.text_encoder": ["last", "penultimate_norm"],
        "sdxl.text_encoder": ["penultimate"], "sdxl.text_encoder_2": ["penultimate"]}


def gen_encoder_ids():
    g = torch.Generator().manual_seed(7)
    ids = id_batches()
    tensors, encoders = {}, []
    specs = [("sd1", "text_encoder", CLIPTextModel), ("sd2", "text_encoder", CLIPTextModel),
             ("sdxl", "text_encoder", CLIPTextModel), ("sdxl", "text_encoder_2", CLIPTextModelWithProjection)]
    for family, folder, cls in specs:
        model = cls.from_pretrained(os.path.join(MODELS, family, folder), dtype=torch.float32).eval()
        cfg = model.config
        name = f"{family}.{folder}"
        out = run(model, ids)
        ln = final_norm(model)
        hs = out.hidden_states
        assert len(hs) == cfg.num_hidden_layers + 1
        # What each family's conditioning reads (the rest is left out to keep the file small):
        # SD1 last and clip skip 2, SD2 penultimate + norm (and last), SDXL penultimate raw.
        with torch.no_grad():
            outputs = {"last": out.last_hidden_state, "penultimate": hs[-2], "penultimate_norm": ln(hs[-2])}
        for key in KEPT[name]:
            tensors[f"{name}.{key}"] = f32(outputs[key])
        eos_positions = [row.index(cfg.eos_token_id) for row in ids]
        with torch.no_grad():
            tensors[f"{name}.pooled"] = f32(out.last_hidden_state[torch.arange(2), torch.tensor(eos_positions)])
        if cls is CLIPTextModelWithProjection:
            tensors[f"{name}.text_embeds"] = f32(out.text_embeds)
            with torch.no_grad():
                assert torch.allclose(model.text_projection(tensors[f"{name}.pooled"]), out.text_embeds, atol=1e-6)
        else:
            assert torch.allclose(out.pooler_output, tensors[f"{name}.pooled"])
        # Textual inversion: 3 vectors at positions 2..4 of sequence 0, 2 vectors at 75..76 of
        # sequence 1 (the second one lands on the last position).
        width = cfg.hidden_size
        v0 = torch.randn(3, width, generator=g)
        v1 = torch.randn(2, width, generator=g)
        tensors[f"{name}.ti_vectors0"] = v0
        tensors[f"{name}.ti_vectors1"] = v1
        ti = run(model, ids, [(0, 2, v0), (1, 75, v1)])
        ti_key = "ti_penultimate" if family == "sdxl" else "ti_last"
        tensors[f"{name}.{ti_key}"] = f32(ti.hidden_states[-2] if family == "sdxl" else ti.last_hidden_state)
        encoders.append({"name": name, "family": family, "folder": folder, "width": width,
                         "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                         "activation": cfg.hidden_act, "end_of_text_id": cfg.eos_token_id,
                         "eos_positions": eos_positions, "projection": cls is CLIPTextModelWithProjection,
                         "ti": [[0, 2, "ti_vectors0"], [1, 75, "ti_vectors1"]], "kept": KEPT[name],
                         "ti_output": ti_key})
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "encoder_ids.safetensors"))
    with open(os.path.join(OUT, "encoder_ids.json"), "w") as f:
        json.dump({"ids": ids, "encoders": encoders}, f, indent=1)
    print("wrote encoder_ids:", len(tensors), "tensors")


# ----------------------------------------------------------------------------------------------
# A1111's prompt -> chunks (reimplemented; checked against the webui-generated fixture)
# ----------------------------------------------------------------------------------------------

RE_ATTENTION = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text):
    out, rounds, squares = [], [], []

    def scale(start, factor):
        for p in range(start, len(out)):
            out[p][1] *= factor

    for m in RE_ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            out.append([piece[1:], 1.0])
        elif piece == "(":
            rounds.append(len(out))
        elif piece == "[":
            squares.append(len(out))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif piece == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(RE_BREAK.split(piece)):
                if i:
                    out.append(["BREAK", -1])
                out.append([part, 1.0])
    for p in rounds:
        scale(p, 1.1)
    for p in squares:
        scale(p, 1 / 1.1)
    if not out:
        out = [["", 1.0]]
    i = 0
    while i + 1 < len(out):
        if out[i][1] == out[i + 1][1]:
            out[i][0] += out[i + 1][0]
            out.pop(i + 1)
        else:
            i += 1
    return out


class Chunker:
    """tokenize_line: 75-token chunks, comma backtrack, BREAK, embeddings moved whole."""

    def __init__(self, tokenize, embeddings, backtrack=20, parse=True):
        self.tokenize = tokenize
        self.backtrack = backtrack
        self.parse = parse
        self.comma = tokenize([","])[0][0]
        self.lookup = {}
        for name, count in embeddings:
            ids = tokenize([name])[0]
            entries = self.lookup.get(ids[0], []) + [(ids, name, count)]
            self.lookup[ids[0]] = sorted(entries, key=lambda e: len(e[0]), reverse=True)

    def find(self, tokens, position):
        for ids, name, count in self.lookup.get(tokens[position], []):
            if tokens[position:position + len(ids)] == ids:
                return name, count, len(ids)
        return None

    def chunks(self, line):
        parsed = parse_attention(line) if self.parse else [[line, 1.0]]
        tokenized = self.tokenize([t for t, _ in parsed])
        chunks, state = [], {"tokens": [], "mults": [], "fixes": [], "comma": -1, "count": 0}

        def close(last=False):
            state["count"] += len(state["tokens"]) if last else 75
            missing = 75 - len(state["tokens"])
            if missing > 0:
                state["tokens"] += [49407] * missing
                state["mults"] += [1.0] * missing
            chunks.append({"tokens": [49406] + state["tokens"] + [49407],
                           "multipliers": [1.0] + state["mults"] + [1.0], "fixes": state["fixes"]})
            state.update(tokens=[], mults=[], fixes=[], comma=-1)

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == self.comma:
                    state["comma"] = len(state["tokens"])
                elif (self.backtrack and len(state["tokens"]) == 75 and state["comma"] != -1
                      and len(state["tokens"]) - state["comma"] <= self.backtrack):
                    cut = state["comma"] + 1
                    moved_t, moved_m = state["tokens"][cut:], state["mults"][cut:]
                    state["tokens"], state["mults"] = state["tokens"][:cut], state["mults"][:cut]
                    close()
                    state["tokens"], state["mults"] = moved_t, moved_m
                if len(state["tokens"]) == 75:
                    close()
                found = self.find(tokens, position)
                if found is None:
                    state["tokens"].append(token)
                    state["mults"].append(weight)
                    position += 1
                    continue
                name, count, length = found
                if len(state["tokens"]) + count > 75:
                    close()
                state["fixes"].append([len(state["tokens"]), name])
                state["tokens"] += [0] * count
                state["mults"] += [weight] * count
                position += length
        if state["tokens"] or not chunks:
            close(last=True)
        return chunks, state["count"]


def check_chunker_against_webui(tokenize):
    """Every chunking case of the webui-generated fixture must come out the same."""
    fixture = json.load(open(A1111_PROMPTS))
    for case in fixture["attention"]:
        assert parse_attention(case["text"]) == case["parsed"], case["text"]
    for case in fixture["chunking"]:
        embeddings = fixture["embeddings"] if case["embeddings"] else []
        chunker = Chunker(tokenize, embeddings, case["comma_padding_backtrack"], case["emphasis"] != "None")
        chunks, count = chunker.chunks(case["text"])
        assert count == case["token_count"], case["text"]
        assert len(chunks) == len(case["chunks"]), case["text"]
        for mine, theirs in zip(chunks, case["chunks"]):
            assert mine["tokens"] == theirs["tokens"] and mine["multipliers"] == theirs["multipliers"], case["text"]
            assert mine["fixes"] == theirs["fixes"], case["text"]
    print(f"chunker agrees with the webui fixture on {len(fixture['chunking'])} cases")


# ----------------------------------------------------------------------------------------------
# Prompt-level: tiny encoders over the real vocabulary
# ----------------------------------------------------------------------------------------------

VOCAB = 49408
# (A, B, C) of each encoder's formula token table (written to conditioning.json for the Swift test).
TABLES = {"sd1": (7919, 104729, 11), "sd2": (6007, 15485863, 23),
          "sdxl.0": (7927, 104723, 37), "sdxl.1": (6011, 15485867, 41)}


def formula_table(a, b, c, width):
    i = torch.arange(VOCAB, dtype=torch.int64)[:, None]
    j = torch.arange(width, dtype=torch.int64)[None, :]
    return (((i * a + j * b + c) % 2001) - 1000).to(torch.float32) / torch.tensor(2000, dtype=torch.float32)


def prompt_encoder(width, act, projection, seed, table):
    cfg = CLIPTextConfig(hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=VOCAB, max_position_embeddings=77, hidden_act=act, projection_dim=width,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("token_embedding.weight"):
                p.copy_(formula_table(*table, width))
            else:
                # F16-rounded: the stored file holds exactly these values.
                p.copy_((torch.randn(p.shape, generator=g) * 0.5).half().float())
    return model


def stored_state(model):
    """State dict in F16, HF names with `text_model.` (the token table is dropped when saving)."""
    out = {}
    for k, v in model.state_dict().items():
        if not k.startswith("text_model.") and not k.startswith("text_projection"):
            k = "text_model." + k
        out[k] = v.half().contiguous()
    return out


class Encoder:
    """One text encoder as A1111 wraps it: padding, the layer it reads, its TI width."""

    def __init__(self, model, pad_zero, layer):
        self.model, self.pad_zero, self.layer = model, pad_zero, layer
        self.width = model.config.hidden_size

    def encode(self, chunk, vectors, emphasis):
        ids = list(chunk["tokens"])
        if self.pad_zero:
            end = ids.index(49407)
            ids = ids[:end + 1] + [0] * (len(ids) - end - 1)
        injections = []
        for offset, name in chunk["fixes"]:
            vec = vectors.get(name, {}).get(self.width)
            if vec is not None:  # a width this encoder lacks is skipped (the Swift side warns)
                injections.append((0, offset + 1, vec))
        out = run(self.model, [ids], injections)
        hs = out.hidden_states
        with torch.no_grad():
            kind, n = self.layer
            if kind == "norm":  # hidden_states[-n] then final_layer_norm (n == 1: last_hidden_state)
                z = out.last_hidden_state if n == 1 else final_norm(self.model)(hs[-n])
            else:  # raw hidden_states[-n]
                z = hs[-n]
            z = f32(z)
            # As sd_emphasis: the multipliers are a float64 tensor (torch.asarray of Python
            # floats), so the weighted z and the rescale are float64; original_mean is float32.
            mult = torch.asarray([chunk["multipliers"]])
            mult = mult.reshape(mult.shape + (1,)).expand(z.shape)
            if emphasis == "Original":
                original = z.mean()
                z = z * mult
                z = z * (original / z.mean())
            elif emphasis == "No norm":
                z = z * mult
            z = z.to(torch.float32)
        pooled = f32(out.text_embeds) if hasattr(out, "text_embeds") and out.text_embeds is not None else None
        return z, pooled


def conditioning(encoders, chunker, prompt, vectors, emphasis, zero_if_empty=False):
    chunks, _ = chunker.chunks(prompt)
    zs, pooled = [], None
    for i, chunk in enumerate(chunks):
        parts = [enc.encode(chunk, vectors, emphasis) for enc in encoders]
        zs.append(torch.cat([p[0] for p in parts], dim=-1))
        if i == 0:
            pooled = parts[-1][1]
    cond = torch.cat(zs, dim=1)[0]
    if pooled is not None:
        pooled = pooled[0]
    if zero_if_empty and prompt == "":
        cond = torch.zeros_like(cond)
        pooled = torch.zeros_like(pooled)
    return cond, pooled, chunks


PROMPT_EMBEDDINGS = {"emb_one": {16: 2, 8: 2}, "emb_sd1": {16: 1}}

CASES = [
    # name, family, prompt, negative, clip_skip, emphasis
    ("sd1_basic", "sd1", "a (red:1.3) cat sitting on a [wooden] chair, emb_one style",
     "blurry, (worst quality:1.4)", 1, "Original"),
    ("sd1_long", "sd1", "first part of the prompt BREAK " + ", ".join(f"tag{i} (word:1.1)" for i in range(25)),
     "", 1, "Original"),
    ("sd1_skip2", "sd1", "(masterpiece:1.2), emb_sd1, a castle on a hill", "ugly, emb_sd1", 2, "Original"),
    ("sd1_nonorm", "sd1", "a (red:1.3) cat [on] a chair", "", 1, "No norm"),
    ("sd1_ignore", "sd1", "a (red:1.3) cat [on] a chair", "", 1, "Ignore"),
    ("sd1_none", "sd1", "a (red:1.3) cat [on] a chair", "", 1, "None"),
    ("sd2_basic", "sd2", "a (blue:1.2) house, emb_one", "emb_sd1 text, [blurry]", 1, "Original"),
    ("sdxl_basic", "sdxl", "photo of emb_one and emb_sd1, (sharp:1.2)", "", 1, "Original"),
    ("sdxl_long", "sdxl", ", ".join(f"(item{i}:1.05)" for i in range(40)), "bad", 1, "Original"),
]


def gen_conditioning():
    runtime = load_tool("gen_runtime_fixtures")
    models_tool = load_tool("gen_model_fixtures")
    hf = runtime.hf_clip_tokenizer(runtime.clip_merges_lines())

    def tokenize(texts):
        return hf(texts, truncation=False, add_special_tokens=False)["input_ids"]

    check_chunker_against_webui(tokenize)

    sd1 = prompt_encoder(16, "quick_gelu", False, 101, TABLES["sd1"])
    sd2 = prompt_encoder(8, "gelu", False, 102, TABLES["sd2"])
    xl0 = prompt_encoder(16, "quick_gelu", False, 103, TABLES["sdxl.0"])
    xl1 = prompt_encoder(8, "gelu", True, 104, TABLES["sdxl.1"])

    files = {
        "prompt_sd1": {"text_encoder." + k: v for k, v in stored_state(sd1).items()},
        "prompt_sd2": models_tool.open_clip_to_ldm(stored_state(sd2), "cond_stage_model.model.", None),
        "prompt_sdxl": {**models_tool.clip_to_ldm(stored_state(xl0), "conditioner.embedders.0.transformer."),
                        **models_tool.open_clip_to_ldm(stored_state(xl1), "conditioner.embedders.1.model.", None)},
    }
    for name, state in files.items():
        state = {k: v.contiguous() for k, v in state.items() if "token_embedding" not in k}
        save_file(state, os.path.join(OUT, name + ".safetensors"))

    g = torch.Generator().manual_seed(9)
    vectors = {name: {w: torch.randn(n, w, generator=g) for w, n in widths.items()}
               for name, widths in PROMPT_EMBEDDINGS.items()}
    tensors = {f"embedding.{name}.{w}": v for name, by in vectors.items() for w, v in by.items()}
    cases = []
    for name, family, prompt, negative, clip_skip, emphasis in CASES:
        if family == "sd1":
            encoders = [Encoder(sd1, False, ("norm", clip_skip))]
        elif family == "sd2":
            encoders = [Encoder(sd2, True, ("norm", 2))]
        else:
            encoders = [Encoder(xl0, False, ("raw", 2)), Encoder(xl1, True, ("raw", 2))]
        # A1111 registers an embedding only when its shape fits the model: on SD1/SD2 the width
        # must be the encoder's; on SDXL we keep one with a CLIP-L width (skipped on bigG).
        # Positions: the vector count of the last encoder it has vectors for (SDXL: clip_g).
        order = [e.width for e in encoders]
        usable = [(n, by[[w for w in order if w in by][-1]])
                  for n, by in PROMPT_EMBEDDINGS.items() if any(w in by for w in order)]
        chunker = Chunker(tokenize, usable, 20, emphasis != "None")
        xl = family == "sdxl"
        cond, pooled, cchunks = conditioning(encoders, chunker, prompt, vectors, emphasis)
        uncond, upooled, uchunks = conditioning(encoders, chunker, negative, vectors, emphasis, zero_if_empty=xl)
        empty, _, _ = conditioning(encoders, chunker, "", vectors, emphasis)
        # pad_cond_uncond: the shorter gets copies of the empty prompt's conditioning.
        while cond.shape[0] < uncond.shape[0]:
            cond = torch.cat([cond, empty], 0)
        while uncond.shape[0] < cond.shape[0]:
            uncond = torch.cat([uncond, empty], 0)
        tensors[f"{name}.cond"] = cond.contiguous()
        tensors[f"{name}.uncond"] = uncond.contiguous()
        if pooled is not None:
            tensors[f"{name}.pooled"] = pooled.contiguous()
            tensors[f"{name}.uncond_pooled"] = upooled.contiguous()
        cases.append({"name": name, "family": family, "prompt": prompt, "negative": negative,
                      "clip_skip": clip_skip, "emphasis": emphasis, "embeddings": [n for n, _ in usable],
                      "chunks": [{"tokens": c["tokens"], "multipliers": c["multipliers"], "fixes": c["fixes"]}
                                 for c in cchunks],
                      "negative_chunk_count": len(uchunks)})
    save_file(tensors, os.path.join(OUT, "conditioning.safetensors"))
    with open(os.path.join(OUT, "conditioning.json"), "w") as f:
        json.dump({"tables": TABLES, "embeddings": {n: {str(w): c for w, c in by.items()}
                                                   for n, by in PROMPT_EMBEDDINGS.items()},
                   "cases": cases}, f, indent=1)
    print("wrote conditioning:", len(cases), "cases")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    gen_encoder_ids()
    gen_conditioning()
    for name in os.listdir(OUT):
        os.chmod(os.path.join(OUT, name), 0o644)  # save_file creates files readable by the owner only
