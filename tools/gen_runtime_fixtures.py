#!/usr/bin/env python3
"""Generates the fixtures of Tests/RuntimeTests from the Python peers.

Peers: torch (CPU), transformers, open_clip, diffusers, k-diffusion, and A1111's
prompt-parsing functions. CI never runs this; it reads the committed JSON.

    /work/venv/peers/bin/python tools/gen_runtime_fixtures.py --a1111 DIR --kdiffusion DIR \
        [--only random,tokenizer,prompt,sampling]

random: torch.randn/torch.rand, run twice in subprocesses (ATEN_CPU_CAPABILITY=avx2 and
=default, the two Box-Muller kernels). tokenizer: also writes Sources/Runtime/Resources/
clip_bpe_merges.txt (the header and the 48894 merges CLIP uses, from open_clip's
bpe_simple_vocab_16e6.txt.gz) and builds transformers' CLIPTokenizer from it offline.

--a1111 DIR: a directory with AUTOMATIC1111/stable-diffusion-webui's modules/prompt_parser.py,
modules/sd_hijack_clip.py and modules/extra_networks.py (a checkout, or just those files); they
are imported with stand-ins for the webui modules they import, and nothing of them is copied
here. The fixtures were made from webui commits 28bd8e1 (prompt_parser) and 00e0938
(sd_hijack_clip).

k-diffusion: `pip install --no-deps --target DIR k-diffusion==0.1.1.post1`, then pass
--kdiffusion DIR (its package __init__ pulls heavy optional deps, so only
k_diffusion/sampling.py and k_diffusion/external.py are loaded, with stand-ins for the rest).
"""
import argparse
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "RuntimeTests", "Fixtures")
RESOURCES = os.path.join(ROOT, "Sources", "Runtime", "Resources")


def write_json(relpath, obj):
    path = os.path.join(FIXTURES, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {relpath} ({os.path.getsize(path)} bytes)")


def fnv1a64(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def f32_bits(values):
    return [int(x) for x in np.asarray(values, dtype=np.float32).view(np.uint32)]


def summarize_f32(t):
    """A tensor's F32 values as: count, FNV-1a 64 of the little-endian bytes, first/last bits."""
    a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32).reshape(-1))
    return {
        "count": int(a.size),
        "fnv1a64": fnv1a64(a.astype("<f4").tobytes()),
        "head": f32_bits(a[:8]),
        "tail": f32_bits(a[-8:]),
    }


# ---------------------------------------------------------------------------------------------
# Random: torch.randn / torch.rand on a CPU generator

RANDOM_CASES = [
    # (seed, [(op, shape), ...]) -- successive calls on one generator
    (0, [("randn", [1, 4, 64, 64])]),
    (42, [("randn", [2, 4, 8, 8]), ("randn", [2, 4, 8, 8])]),
    (1234, [("randn", [7]), ("randn", [15]), ("randn", [16]), ("randn", [17]), ("randn", [1000])]),
    (3, [("randn", [1]), ("randn", [3]), ("rand", [5]), ("randn", [2]), ("randn", [31])]),
    (4294967297, [("randn", [33]), ("rand", [4, 4])]),        # seed > 2^32: torch keeps the low 32 bits
    (987654321, [("rand", [1000]), ("randn", [4, 96, 64])]),
    (7, [("randn", [4, 4, 4]), ("randn", [5]), ("randn", [16, 16])]),
    (2**63 + 5, [("randn", [19])]),
]


def random_fixture_for_current_capability():
    import torch
    out = []
    for seed, calls in RANDOM_CASES:
        g = torch.Generator("cpu").manual_seed(seed)
        results = []
        for op, shape in calls:
            t = (torch.randn if op == "randn" else torch.rand)(shape, generator=g, dtype=torch.float32)
            results.append({"op": op, "shape": shape, **summarize_f32(t)})
        out.append({"seed": str(seed), "calls": results})
    # A few complete short sequences, readable in the test on failure.
    g = torch.Generator("cpu").manual_seed(2024)
    full = {"seed": "2024", "randn20": f32_bits(torch.randn(20, generator=g)),
            "randn5": f32_bits(torch.randn(5, generator=g)), "rand6": f32_bits(torch.rand(6, generator=g))}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "cases": out, "full": full}


def a1111_image_noise_fixture():
    """A1111 ImageRNG with randn_source=CPU: per image a generator seeded with its seed; the
    first call draws the start noise, later calls (ancestral noise) draw from the same
    generators, or from generators seeded with seed + ENSD when eta_noise_seed_delta is set."""
    import torch
    cases = []
    for seeds, ensd, shape, calls in [([1000, 1001], 0, [4, 8, 8], 3), ([77], 31337, [4, 6, 5], 3)]:
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        results = []
        for call in range(calls):
            if call == 1 and ensd:
                gens = [torch.Generator("cpu").manual_seed(s + ensd) for s in seeds]
            x = torch.stack([torch.randn(shape, generator=g) for g in gens])
            results.append(summarize_f32(x))
        cases.append({"seeds": seeds, "eta_noise_seed_delta": ensd, "shape": shape, "calls": results})
    return cases


def gen_random():
    import torch
    fixtures = {}
    for capability, kernel in [("avx2", "avx2"), ("default", "scalar")]:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        code = ("import json,sys; sys.path.insert(0, %r); import gen_runtime_fixtures as g; "
                "print(json.dumps(g.random_fixture_for_current_capability()))" % os.path.dirname(os.path.abspath(__file__)))
        res = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        data = json.loads(res.stdout)
        want = "AVX2" if capability == "avx2" else "DEFAULT"
        assert data["capability"] == want, f"torch ran at {data['capability']}, wanted {want}"
        fixtures[kernel] = data
    fixtures["a1111_image_noise"] = a1111_image_noise_fixture()
    write_json("random/torch_randn.json", fixtures)


# ---------------------------------------------------------------------------------------------
# Tokenizer: transformers' CLIPTokenizer built offline from open_clip's BPE file

BPE_GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2

TOKENIZER_PROMPTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT, Highly Detailed, 8K, trending on ArtStation",
    "masterpiece, best quality, (ultra-detailed:1.2), [blurry], 1girl, solo, looking at viewer",
    "(((masterpiece))), ((best quality)), (extremely detailed CG unity 8k wallpaper:1.1)",
    "portrait of a woman, <lora:add_detail:0.8>, sharp focus",
    "it's a dog's life; we're here, you've seen, I'm sure, they'll go, he'd say",
    "IT'S LOUD'S 'S 'sup ''s  ' s",
    "numbers: 12345, 3.14159, -42, 1e10, 100%, $99.99, #1, 2024-01-01",
    "emoji 😀🎨🔥 and 👩‍🎨 woman artist, 🇫🇷 flag",
    "café naïve résumé crème brûlée Ångström Øresund Łódź",
    "decomposed: cafe\u0301 nai\u0308ve",
    "日本語のプロンプト、美しい風景、桜の木",
    "中文提示词：一只可爱的猫，高清，8K",
    "한국어 프롬프트 아름다운 풍경",
    "Ελληνικά ΣΟΦΙΑ σοφία ΟΔΟΣ",
    "Русский текст: красивая девушка",
    "عربي: منظر جميل",
    "mixed\tTABS\nand\r\nnewlines\u00a0nbsp\u3000ideographic  space",
    "punctuation!!! ??? ... --- *** ~~~ ^^^ @@@ ||| \\\\ /// ((( ))) [[[ ]]] {{{ }}}",
    "quotes \"double\" 'single' `backtick` \u201ccurly\u201d \u2018curly\u2019",
    "fullwidth ＡＢＣ１２３ and ligature \ufb01ne \ufb02ow",
    "html &amp; &lt;entities&gt; &#39;",
    "<|startoftext|>explicit special<|endoftext|>tokens <|ENDOFTEXT|> and <| endoftext |>",
    "snake_case and kebab-case and CamelCase and dotted.name and a/b/c",
    "http://example.com/path?query=1&b=2",
    "unicode digits: ٣ ٤ ⅷ ² ½ ①",
    "İstanbul DİYARBAKIR ǅ ǈ ß ẞ ﬀ",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "combining over digits 1\u0301 and letters a\u0332b",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "score_9, score_8_up, score_7_up, source_anime, rating_safe",
    "a" * 300,
    ", ".join(["long prompt with many words"] * 20),
    "BREAK and break and Break",
    "\u0000control\u0007chars\u001b[0m",
    "  leading and trailing spaces   ",
    "tab\tseparated\tvalues",
    "emoticons :) :( :D ;) <3 </3 :-P",
    "math: a+b=c, x^2, √2, ∑, ∞, π≈3.14, ±5",
    "currency: €100 £50 ¥1000 ₹500",
    "hyphen—em–en dashes… and ellipsis",
    "(masterpiece:1.2) (best quality:1.1) [[worst quality]] \\(escaped\\) \\[also\\]",
    "a cat\\ndog",
    "Ǆ titlecase ǅ and Ⅻ roman and ℃ degrees",
    "🏳️‍🌈 rainbow flag and 👍🏽 skin tone",
    "ｶﾀｶﾅ halfwidth katakana",
    "\u0130\u0049\u0131 dotted and dotless i",
]


def clip_merges_lines():
    import open_clip
    path = os.path.join(os.path.dirname(open_clip.__file__), BPE_GZ_NAME)
    text = gzip.open(path).read().decode("utf-8")
    lines = text.split("\n")
    return lines[:1 + MERGE_COUNT]


def hf_clip_tokenizer(lines):
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer
    merges = [tuple(m.split()) for m in lines[1:1 + MERGE_COUNT]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def gen_tokenizer():
    import open_clip
    import transformers
    from open_clip.tokenizer import SimpleTokenizer
    lines = clip_merges_lines()
    resource = os.path.join(RESOURCES, "clip_bpe_merges.txt")
    os.makedirs(RESOURCES, exist_ok=True)
    with open(resource, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(resource, ROOT)} ({os.path.getsize(resource)} bytes)")
    hf = hf_clip_tokenizer(lines)
    oc = SimpleTokenizer()
    cases = []
    for prompt in TOKENIZER_PROMPTS:
        ids = hf(prompt, add_special_tokens=False)["input_ids"]
        with_special = hf(prompt)["input_ids"]
        assert with_special == [49406] + ids + [49407]
        oc_ids = oc.encode(prompt)
        cases.append({"text": prompt, "ids": ids, "open_clip_ids": oc_ids,
                      "open_clip_agrees": oc_ids == ids,
                      "decoded": hf.decode(ids)})
    # Spot checks of the vocabulary order.
    vocab_checks = {t: hf.convert_tokens_to_ids(t) for t in
                    ["!", "a", "a</w>", ",</w>", "\u0100", "\u0120", "in", "th", "the</w>", "<|startoftext|>", "<|endoftext|>"]}
    write_json("tokenizer/clip_tokenizer.json", {
        "transformers": transformers.__version__, "open_clip": open_clip.__version__,
        "cases": cases, "vocab_checks": vocab_checks})

# ---------------------------------------------------------------------------------------------
# Prompt: A1111's emphasis parser, chunker and extra-network tags (from a webui checkout)

ATTENTION_PROMPTS = [
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "(masterpiece:1.2), best quality, [[blurry]], (detailed eyes: 1.15 ), ((smile))",
    "a:1.2) stray weight and closers ) ] and colons : here",
    "(a:+1.5) (b:-0.5) (c:.5) (d:2.) (e:  3  )",
    "nested ([[(deep:1.3)]]) and [[[unclosed",
    "\\\\ backslash \\ alone \\x and \\( \\) \\[ \\]",
    "first part BREAK second part BREAK third",
    "BREAK at start and at end BREAK",
    "lowercase break and BREAKING and xBREAK and BREAK_x and BREAK, comma",
    "(emphasis BREAK inside) [and BREAK here]",
    "a\n BREAK \n\tb",
    "",
    "(((",
    "]]]",
    "(a)(b)(c)",
    "[a:b:0.5] prompt editing text stays (x:1.1)",
    "unicode weight (cat:١.٥) and (dog:1.5)",
    "emoji (🐱:1.3) and CJK (猫:0.8)",
]

CHUNK_PROMPTS = [
    "a photo of a cat",
    "",
    ", ".join(f"tag{i} word" for i in range(40)),
    ", ".join(["masterpiece", "best quality", "ultra detailed"] * 12),
    " ".join(["word"] * 80),
    " ".join(["word"] * 74) + ", comma at the end of the first chunk and more words after",
    " ".join(["word"] * 60) + ", " + " ".join(["more"] * 30),
    " ".join(["word"] * 50) + ", " + " ".join(["more"] * 30),
    "first BREAK second BREAK third",
    "BREAK",
    "BREAK BREAK",
    "(masterpiece:1.2), (best quality:1.1), " + ", ".join(f"(detail {i}:1.{i % 10})" for i in range(30)),
    "a portrait of emb_face wearing emb_style clothes, emb_face again",
    " ".join(["word"] * 73) + " emb_style tail words",
    "(emb_face:1.3) and [emb_style] " + ", ".join(["filler"] * 70),
    "long long long " * 60,
    "1girl, solo, long hair, looking at viewer, smile, open mouth, bangs, blue eyes, skirt, blonde hair, shirt, "
    "long sleeves, dress, ribbon, holding, hair between eyes, very long hair, school uniform, standing, "
    "jacket, white shirt, hair ribbon, braid, thighhighs, outdoors, sky, day, cloud, BREAK blue sky, "
    "pleated skirt, (masterpiece:1.2), best quality, absurdres, highres, ultra-detailed, illustration, "
    "extremely detailed CG unity 8k wallpaper, beautiful detailed eyes, depth of field, cinematic lighting",
]

EXTRA_NETWORK_PROMPTS = [
    "a cat <lora:catStyle:0.8> sitting",
    "<lora:a:1><lyco:b:0.5:0.3><hypernet:c:1.0> text",
    "<lora:detail:te=0.5:unet=1.2:dyn=8>",
    "<lora:x=y=z:1>",
    "no tags <here> <:x> <a:> <a b:1> <ok_1:z>",
    "<lora:a<lora:b:1>",
    "<lora:multi\nline:1> end",
    "<lora:unclosed",
    "<лора:юникод:1> and <lora:名前:0.5>",
]

EMBEDDINGS = [("emb_face", 3), ("emb_style", 8), ("emb", 1)]


def load_a1111(a1111_dir):
    """Imports modules.prompt_parser, modules.extra_networks and modules.sd_hijack_clip from a
    webui checkout, with stand-ins for the webui modules they import (shared.opts, devices,
    errors, sd_hijack, sd_emphasis) and for lark (only the prompt-editing parser, unused here,
    needs it)."""
    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        return module

    try:
        importlib.import_module("lark")
    except ImportError:
        stub("lark", Lark=lambda *a, **k: None, Visitor=object, Transformer=object,
             exceptions=types.SimpleNamespace(LarkError=Exception))

    class Opts:
        emphasis = "Original"
        comma_padding_backtrack = 20

    class NoEmphasis:
        def after_transformers(self):
            pass

    package = stub("modules")
    package.__path__ = [os.path.join(a1111_dir, "modules")]
    for name, attrs in {"shared": {"opts": Opts()}, "devices": {"device": "cpu"}, "errors": {},
                        "sd_hijack": {"StableDiffusionModelHijack": object},
                        "sd_emphasis": {"get_current_option": lambda name: NoEmphasis}}.items():
        setattr(package, name, stub(f"modules.{name}", **attrs))
    loaded = []
    for name in ["prompt_parser", "extra_networks", "sd_hijack_clip"]:
        module = importlib.import_module(f"modules.{name}")
        setattr(package, name, module)
        loaded.append(module)
    return loaded


def gen_prompt(a1111_dir):
    if not a1111_dir:
        raise SystemExit("prompt fixtures need --a1111 DIR (a stable-diffusion-webui checkout)")
    import torch
    prompt_parser, extra_networks, hijack = load_a1111(a1111_dir)
    opts = sys.modules["modules.shared"].opts
    hf = hf_clip_tokenizer(clip_merges_lines())

    def tokenize(texts):
        return hf(texts, truncation=False, add_special_tokens=False)["input_ids"]

    class Chunker(hijack.FrozenCLIPEmbedderWithCustomWordsBase):
        """The webui's prompt-to-chunks code over transformers' tokenizer; `encode_with_transformers`
        returns the ids it is given, so process_tokens shows the padded ids (SD2: id_pad 0)."""
        def __init__(self, hijack_object, id_pad):
            super().__init__(wrapped=None, hijack=hijack_object)
            self.id_start, self.id_end, self.id_pad = 49406, 49407, id_pad
            self.comma_token = hf.convert_tokens_to_ids(",</w>")

        def tokenize(self, texts):
            return tokenize(texts)

        def encode_with_transformers(self, tokens):
            return tokens

    class Embedding:
        def __init__(self, name, vectors):
            self.name, self.vectors = name, vectors

    class EmbeddingDB:
        """find_embedding_at_position as A1111's EmbeddingDatabase: candidates by first token,
        longest first, token-for-token comparison."""
        def __init__(self):
            self.ids_lookup = {}

        def register(self, name, vectors):
            ids = tokenize([name])[0]
            first = ids[0]
            self.ids_lookup[first] = sorted(self.ids_lookup.get(first, []) + [(ids, Embedding(name, vectors))],
                                            key=lambda x: len(x[0]), reverse=True)

        def find_embedding_at_position(self, tokens, offset):
            for ids, emb in self.ids_lookup.get(tokens[offset], []):
                if tokens[offset:offset + len(ids)] == ids:
                    return emb, len(ids)
            return None, None

    with_embeddings = types.SimpleNamespace(embedding_db=EmbeddingDB())
    without_embeddings = types.SimpleNamespace(embedding_db=types.SimpleNamespace(
        find_embedding_at_position=lambda tokens, offset: (None, None)))
    for name, vectors in EMBEDDINGS:
        with_embeddings.embedding_db.register(name, vectors)

    def first_pad(ids):
        """Index from which SD2's ids are all 0 (len(ids) when none are)."""
        i = len(ids)
        while i > 0 and ids[i - 1] == 0:
            i -= 1
        return i

    attention = []
    for text in ATTENTION_PROMPTS:
        attention.append({"text": text, "parsed": prompt_parser.parse_prompt_attention(text)})
    try:
        prompt_parser.parse_prompt_attention("(x:1.2.3)")
        raise AssertionError("A1111 accepted a malformed weight")
    except ValueError:
        pass

    chunking = []
    for backtrack in [20, 0, 5]:
        for emphasis in ["Original", "None"]:
            for use_embeddings in [False, True]:
                opts.comma_padding_backtrack = backtrack
                opts.emphasis = emphasis
                chunker = Chunker(with_embeddings if use_embeddings else without_embeddings, id_pad=49407)
                sd2 = Chunker(with_embeddings if use_embeddings else without_embeddings, id_pad=0)
                for text in CHUNK_PROMPTS:
                    if (backtrack != 20 or emphasis != "Original") and not (text.count(",") > 3 or "BREAK" in text):
                        continue
                    if use_embeddings and "emb" not in text:
                        continue
                    chunks, token_count = chunker.tokenize_line(text)
                    records = []
                    for c in chunks:
                        sd1_ids = chunker.process_tokens([c.tokens], [c.multipliers])[0].tolist()
                        assert sd1_ids == c.tokens
                        sd2_ids = sd2.process_tokens([c.tokens], [c.multipliers])[0].tolist()
                        records.append({"tokens": c.tokens, "multipliers": c.multipliers,
                                        "fixes": [[fix.offset, fix.embedding.name] for fix in c.fixes],
                                        "sd2_pad_from": first_pad(sd2_ids)})
                    chunking.append({
                        "text": text, "comma_padding_backtrack": backtrack, "emphasis": emphasis,
                        "embeddings": use_embeddings, "token_count": token_count, "chunks": records})
    opts.comma_padding_backtrack = 20
    opts.emphasis = "Original"

    networks = []
    for text in EXTRA_NETWORK_PROMPTS:
        stripped, found = extra_networks.parse_prompt(text)
        # parse_prompt groups by name; keep the order of appearance by re-scanning names.
        tags = []
        order = [m.group(1) for m in extra_networks.re_extra_net.finditer(text)]
        counters = {}
        for name in order:
            params = found[name][counters.get(name, 0)]
            counters[name] = counters.get(name, 0) + 1
            tags.append({"name": name, "items": params.items, "positional": params.positional, "named": params.named})
        networks.append({"text": text, "stripped": stripped, "tags": tags})

    write_json("tokenizer/a1111_prompts.json", {
        "attention": attention, "chunking": chunking, "extra_networks": networks,
        "embeddings": [[n, v] for n, v in EMBEDDINGS]})

# ---------------------------------------------------------------------------------------------
# Sampling: schedules and sampler loops vs k-diffusion (as A1111 calls it) and diffusers

def load_kdiffusion(directory):
    """k_diffusion.sampling and k_diffusion.external from a `pip install --no-deps --target DIR
    k-diffusion==0.1.1.post1`, with stand-ins for imports those two modules do not need here
    (scipy, torchdiffeq, torchsde, tqdm, PIL, torchvision)."""
    if not directory:
        raise SystemExit("sampling fixtures need --kdiffusion DIR")
    for name in ["scipy", "scipy.integrate", "torchdiffeq", "torchsde", "tqdm", "tqdm.auto", "PIL", "PIL.Image",
                 "torchvision", "torchvision.transforms", "torchvision.transforms.functional"]:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
    sys.modules["scipy"].integrate = sys.modules["scipy.integrate"]
    sys.modules["torchdiffeq"].odeint = None
    sys.modules["tqdm.auto"].trange = lambda n, disable=None: range(n)
    sys.modules["tqdm.auto"].tqdm = lambda *a, **k: None
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
    return modules["sampling"], modules["external"]


def ldm_alphas_cumprod(linear_start=0.00085, linear_end=0.012, timesteps=1000):
    """LDM's register_schedule for the "linear" (scaled linear) schedule: F64, stored as F32."""
    import torch
    betas = (torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2).numpy()
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    return alphas_cumprod


def gen_sampling(kdiffusion_dir):
    import torch
    import diffusers
    sampling, external = load_kdiffusion(kdiffusion_dir)
    ac64 = ldm_alphas_cumprod()
    ac = torch.tensor(ac64, dtype=torch.float32)
    sqrt_ac = torch.tensor(np.sqrt(ac64), dtype=torch.float32)
    sqrt_1mac = torch.tensor(np.sqrt(1.0 - ac64), dtype=torch.float32)
    latent_shape = [1, 4, 4, 4]

    def mean_image():
        return torch.randn(latent_shape, generator=torch.Generator().manual_seed(7)) * 0.5

    m = mean_image()

    class ToyUNet:
        """Stands in for LDM's LatentDiffusion: alphas_cumprod plus an apply_model whose output
        (eps or v) is x·(t/1000) + m/4, F32 elementwise."""
        alphas_cumprod = ac

        def apply_model(self, x, t, cond=None):
            return x * (t / 1000)[:, None, None, None] + m * 0.25

    eps_wrap = external.CompVisDenoiser(ToyUNet())
    v_wrap = external.CompVisVDenoiser(ToyUNet())

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "latent_shape": latent_shape}
    out["alphas_cumprod"] = f32_bits(ac)
    out["sqrt_alphas_cumprod"] = summarize_f32(sqrt_ac)
    out["sqrt_one_minus_alphas_cumprod"] = summarize_f32(sqrt_1mac)
    out["sigmas"] = f32_bits(eps_wrap.sigmas)
    out["log_sigmas"] = f32_bits(eps_wrap.log_sigmas)
    out["uniform_sigmas"] = {str(n): f32_bits(eps_wrap.get_sigmas(n)) for n in [1, 2, 10, 20, 30, 50]}
    sigma_min, sigma_max = eps_wrap.sigmas[0].item(), eps_wrap.sigmas[-1].item()
    out["karras_sigmas"] = {str(n): f32_bits(sampling.get_sigmas_karras(n, sigma_min, sigma_max)) for n in [1, 10, 20, 30]}
    probe = torch.tensor([0.01, 0.0292, 0.5, 1.0, 3.7, 14.6, 20.0], dtype=torch.float32)
    out["sigma_to_t"] = {"sigmas": f32_bits(probe), "t": f32_bits(eps_wrap.sigma_to_t(probe))}
    probe_t = torch.tensor([0.0, 0.5, 1.0, 250.25, 998.9, 999.0], dtype=torch.float32)
    out["t_to_sigma"] = {"t": f32_bits(probe_t), "sigmas": f32_bits(eps_wrap.t_to_sigma(probe_t))}
    out["linspace"] = {f"{a},{b},{n}": f32_bits(torch.linspace(a, b, n)) for a, b, n in
                       [(999, 0, 20), (999, 0, 37), (0, 1, 10), (0, 1, 33), (0.25, -3.5, 7)]}

    # A1111 DDIM timesteps (sd_samplers_timesteps.py get_timesteps) and diffusers' equivalents.
    def a1111_ddim_timesteps(steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999).tolist()

    out["ddim_timesteps"] = {str(n): a1111_ddim_timesteps(n) for n in [1, 7, 10, 20, 30, 50, 1000]}

    # diffusers cross-checks (their betas are F32, so values differ in the last bits).
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    euler = diffusers.EulerDiscreteScheduler(timestep_spacing="linspace", interpolation_type="linear", **common)
    euler.set_timesteps(20)
    dpm = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True, **common)
    dpm.set_timesteps(20)
    ddim = diffusers.DDIMScheduler(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False, **common)
    ddim.set_timesteps(20)
    out["diffusers"] = {"euler_linspace_20": [float(s) for s in euler.sigmas],
                        "dpmpp_karras_20": [float(s) for s in dpm.sigmas],
                        "ddim_leading_20": [int(t) for t in ddim.timesteps]}

    # Sampler loops. Start noise: seed 1000; ancestral noise: the same generator continued
    # (A1111's CPU noise source for one image).
    def start_noise():
        g = torch.Generator().manual_seed(1000)
        return torch.randn(latent_shape, generator=g), g

    def toy_denoiser(x, sigma, **kwargs):
        c = 1 / (1 + sigma * sigma)
        return x * c[:, None, None, None] + m

    loops = []
    for schedule_name, steps in [("uniform", 10), ("karras", 12), ("uniform", 20)]:
        sigmas = eps_wrap.get_sigmas(steps) if schedule_name == "uniform" else sampling.get_sigmas_karras(steps, sigma_min, sigma_max)
        for model_name, model in [("toy", toy_denoiser), ("eps", eps_wrap), ("v", v_wrap)]:
            for sampler in ["euler", "euler_ancestral", "dpmpp_2m"]:
                if schedule_name == "uniform" and steps == 20 and model_name != "toy":
                    continue
                noise, g = start_noise()
                x = noise * sigmas[0]
                extra = {"extra_args": {"cond": None} if model_name != "toy" else {}, "disable": True}
                if sampler == "euler":
                    result = sampling.sample_euler(model, x, sigmas, **extra)
                elif sampler == "euler_ancestral":
                    result = sampling.sample_euler_ancestral(
                        model, x, sigmas, noise_sampler=lambda s, sn: torch.randn(latent_shape, generator=g), **extra)
                else:
                    result = sampling.sample_dpmpp_2m(model, x, sigmas, **extra)
                loops.append({"schedule": schedule_name, "steps": steps, "model": model_name, "sampler": sampler,
                              "sigmas": f32_bits(sigmas), "result": f32_bits(result.reshape(-1))})

    # A1111's DDIM loop on an eps toy model (written out from sd_samplers_timesteps_impl.ddim,
    # eta 0; the model is called with the float timestep).
    def a1111_ddim(model, x, timesteps, eta=0.0, noise=None):
        timesteps = torch.asarray(timesteps)
        alphas = ac[timesteps]
        alphas_prev = ac[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
        sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
        sigmas = eta * np.sqrt((1 - alphas_prev.numpy()) / (1 - alphas.numpy()) * (1 - alphas.numpy() / alphas_prev.numpy()))
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(timesteps) - 1):
            index = len(timesteps) - 1 - i
            e_t = model(x, timesteps[index].item() * s_in)
            a_t = alphas[index].item() * s_in
            a_prev = alphas_prev[index].item() * s_in
            sigma_t = sigmas[index].item() * s_in
            sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_in
            pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
            dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
            x = a_prev.sqrt() * pred_x0 + dir_xt
            if eta:
                x = x + sigma_t * noise()
        return x

    def toy_eps(x, t):
        return ToyUNet().apply_model(x, t)

    ddim_loops = []
    for steps, eta in [(10, 0.0), (20, 0.0), (8, 1.0)]:
        noise, g = start_noise()
        timesteps = a1111_ddim_timesteps(steps)
        result = a1111_ddim(toy_eps, noise, timesteps, eta=eta, noise=lambda: torch.randn(latent_shape, generator=g))
        ddim_loops.append({"steps": steps, "eta": eta, "result": f32_bits(result.reshape(-1))})

    # Classifier-free guidance with AND weights, A1111's combine_denoised order.
    g = torch.Generator().manual_seed(11)
    uncond, c1, c2 = (torch.randn(latent_shape, generator=g) for _ in range(3))
    cfg = uncond.clone()
    for cond, weight in [(c1, 1.0), (c2, 0.35)]:
        cfg += (cond - uncond) * (weight * 7.5)
    out["cfg"] = {"seed": 11, "weights": [1.0, 0.35], "scale": 7.5, "result": f32_bits(cfg.reshape(-1))}
    out["loops"] = loops
    out["ddim_loops"] = ddim_loops
    write_json("sampling/schedules_and_samplers.json", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a1111")
    ap.add_argument("--kdiffusion")
    ap.add_argument("--only", default="random,tokenizer,prompt,sampling")
    args = ap.parse_args()
    parts = args.only.split(",")
    if "random" in parts:
        gen_random()
    if "tokenizer" in parts:
        gen_tokenizer()
    if "prompt" in parts:
        gen_prompt(args.a1111)
    if "sampling" in parts:
        gen_sampling(args.kdiffusion)


if __name__ == "__main__":
    main()
