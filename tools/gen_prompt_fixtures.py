#!/usr/bin/env python3
"""Generates Tests/HostTests/Fixtures/prompt/a1111_extra_networks.json from A1111's own code.

    /work/venv/peers/bin/python tools/gen_prompt_fixtures.py --a1111 DIR

--a1111 DIR: a directory with AUTOMATIC1111/stable-diffusion-webui's modules/extra_networks.py,
modules/extra_networks_hypernet.py, modules/util.py, modules/hypernetworks/hypernetwork.py and
extensions-builtin/Lora/extra_networks_lora.py (a checkout, or just those files). They are
imported with stand-ins for the webui modules they import (shared.opts, errors, networks,
hypernetwork.load_hypernetworks); nothing of them is copied here. CI never runs this.

What is recorded:
- prompts: for each prompt, `extra_networks.parse_prompt`'s text, and for each tag alone, what
  `extra_networks.activate` hands to `networks.load_networks` / `load_hypernetworks` (names,
  te/unet multipliers, dyn) or that it raised; for the whole prompt, the order of the LoRA and
  hypernetwork names loaded.
- numbers: Python's float() and int() of argument texts (what the tags' numbers go through).
- tree: `util.walk_files` over a Lora + LyCORIS tree (A1111's listing order) and the name each
  LoRA name resolves to when `networks.list_available_networks` fills its dictionary in that
  order; `hypernetwork.list_hypernetworks` over a hypernetworks tree.
"""
import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "HostTests", "Fixtures", "prompt", "a1111_extra_networks.json")

PROMPTS = [
    "a cat <lora:catStyle:0.8> sitting",
    "a, <lora:x:1>, b",
    "<lora:x>",
    "<lora:x:0.6:0.3>",
    "<lora:x:0.6:0.3:8>",
    "<lora:x:0.6:0.3:8:extra>",
    "<lora:x:te=0.5>",
    "<lora:x:unet=0.4>",
    "<lora:x:te=0.5:unet=1.2:dyn=8>",
    "<lora:x:0.9:unet=0.2>",
    "<lora:x:0.9:te=0.3>",
    "<lora:x:dyn=4:0.7>",
    "<lora:x:0.7:0.7:dyn=16>",
    "<lora:x:te=1:te=0.25>",
    "<lora:x:1:foo=2>",
    "<lora:x=y=z:1>",
    "<lora:a=b:1>",
    "<lyco:locon_x:0.7>",
    "<lora:a:1><lyco:b:0.5><lora:c:0.25>",
    "<lyco:b:0.5> then <lora:a:1>",
    "<lora:x: 0.8 >",
    "<lora: spaced name :1>",
    "<lora:x:1_0>",
    "<lora:x:.5>",
    "<lora:x:5.>",
    "<lora:x:+.5e1>",
    "<lora:x:٠.٥>",
    "<lora:x:abc>",
    "<lora:x:1.2.3>",
    "<lora:x:>",
    "<lora:x:0.8:abc>",
    "<lora:x:abc:te=0.5>",
    "<lora:x:1:1:8.0>",
    "<lora:x:dyn=x>",
    "<lora:x:inf>",
    "<lora:x:nan>",
    "<lora:x:1e999>",
    "<hypernet:h>",
    "<hypernet:h:0.4>",
    "<hypernet:h:0.4:9>",
    "<hypernet:h:w=0.5>",
    "<hypernet:name=odd:0.5>",
    "<hypernet:h:bad>",
    "<hypernet:a:1><hypernet:b:0.5>",
    "<LORA:x:1> <foo:bar:1> <lora:ok:1>",
    "(masterpiece:1.2), (<lora:inParens:0.7>:1.1), [<lyco:sq:0.9>]",
    "<lora:multi\nline:1> end",
    "no tags <here> <:x> <a:> <a b:1> <ok_1:z>",
    "<lora:a<lora:b:1>",
    "<lora:unclosed",
    "<лора:юникод:1> and <lora:名前:0.5>",
    "tab\t<lora:t:1>\tand newline\n<hypernet:h:1>\n",
    "",
]

NUMBERS = ["1", "0.8", " 0.8 ", "\t1\n", "1_0", "1__0", "_1", "1_", ".5", "5.", ".", "+.5e1", "-2", "1e3",
           "1E-2", "1e", "e1", "0x10", "1.2.3", "abc", "", " ", "inf", "-Infinity", "nan", "NaN", "1e999",
           "٣", "٠.٥", "８", "1 0", "+", "-", "--1", "007", "8.0", "1_000.000_1", "1._5", "1_.5", "5e1_0",
           "\u00a01\u00a0", "\u20031", "²"]

LORA_TREE = [
    "Lora/a.safetensors", "Lora/B.safetensors", "Lora/v10.safetensors", "Lora/v2.safetensors",
    "Lora/v02.pt", "Lora/dup.pt", "Lora/dup.safetensors", "Lora/Upper.SafeTensors", "Lora/notes.txt",
    "Lora/model.vae.safetensors", "Lora/sub10/deep.safetensors", "Lora/sub2/deep.ckpt",
    "Lora/Sub1/x.safetensors", "Lora/sub2/inner/dup.ckpt", "Lora/.hidden/h.safetensors",
    "Lora/.pt", "Lora/two.dots.pt", "Lora/a-b/c.pt", "Lora/a/b.pt",
    "LyCORIS/dup.safetensors", "LyCORIS/lyco_only.pt",
]

HYPERNET_TREE = ["hypernetworks/a.pt", "hypernetworks/B.pt", "hypernetworks/sub/c.pt",
                 "hypernetworks/.hid/d.pt", "hypernetworks/.e.pt", "hypernetworks/None.pt",
                 "hypernetworks/dup.pt", "hypernetworks/Sub2/dup.pt", "hypernetworks/x.safetensors",
                 "hypernetworks/Z/dup.pt"]

NATURAL = ["a10", "a2", "A1", "a01", "b", "B2", "a", "x 10 y", "x 9 z", "x9", "émile", "Zed", "zed2", "_u", "10", "9"]


def load_a1111(a1111_dir):
    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        return module

    class Opts:
        sd_lora = "None"
        sd_hypernetwork = "None"
        extra_networks_default_multiplier = 1.0
        list_hidden_files = True

    calls = {"lora": [], "hypernet": [], "errors": []}
    package = stub("modules")
    package.__path__ = [os.path.join(a1111_dir, "modules")]
    package.shared = stub("modules.shared", opts=Opts(), hypernetworks={})
    package.errors = stub("modules.errors", display=lambda e, message: calls["errors"].append((type(e).__name__, message)))
    hyper_package = stub("modules.hypernetworks")
    hyper_package.__path__ = [os.path.join(a1111_dir, "modules", "hypernetworks")]
    stub("networks", available_networks={},
         load_networks=lambda names, te, unet, dyn: calls["lora"].append((names, te, unet, dyn)))
    sys.path.insert(0, os.path.join(a1111_dir, "extensions-builtin", "Lora"))
    extra_networks = importlib.import_module("modules.extra_networks")
    hypernetwork = importlib.import_module("modules.hypernetworks.hypernetwork")
    hypernetwork.load_hypernetworks = lambda names, multipliers: calls["hypernet"].append((names, multipliers))
    hyper_package.hypernetwork = hypernetwork
    util = importlib.import_module("modules.util")
    hypernet_module = importlib.import_module("modules.extra_networks_hypernet")
    lora_module = importlib.import_module("extra_networks_lora")

    extra_networks.initialize()
    lora = lora_module.ExtraNetworkLora()
    extra_networks.register_extra_network(lora)
    extra_networks.register_extra_network_alias(lora, "lyco")   # as lora_script.before_ui does
    extra_networks.register_extra_network(hypernet_module.ExtraNetworkHypernet())
    return extra_networks, util, hypernetwork, calls


def number_record(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"nonfinite": True}
    return {"value": value}


def gen_prompts(extra_networks, calls):
    p = types.SimpleNamespace(scripts=None, all_prompts=[])

    def run(text):
        for key in calls:
            calls[key].clear()
        stripped, data = extra_networks.parse_prompt(text)
        extra_networks.activate(p, data)
        loras = [c for c in calls["lora"] if c[0]]
        hypernets = [c for c in calls["hypernet"] if c[0]]
        return stripped, data, loras, hypernets, list(calls["errors"])

    records = []
    for text in PROMPTS:
        stripped, data, loras, hypernets, errors = run(text)
        tags = []
        for m in extra_networks.re_extra_net.finditer(text):
            tag_type, items = m.group(1), m.group(2).split(":")
            _, _, tag_loras, tag_hypernets, tag_errors = run(m.group(0))
            record = {"type": tag_type, "items": items}
            if tag_errors:
                record["error"] = tag_errors[0][0]
            elif tag_loras:
                names, te, unet, dyn = tag_loras[0]
                if not all(math.isfinite(x) for x in te + unet):
                    record["nonfinite"] = True
                else:
                    record["lora"] = {"name": names[0], "te": te[0], "unet": unet[0], "dyn": dyn[0]}
            elif tag_hypernets:
                names, multipliers = tag_hypernets[0]
                if not math.isfinite(multipliers[0]):
                    record["nonfinite"] = True
                else:
                    record["hypernet"] = {"name": names[0], "strength": multipliers[0]}
            else:
                record["skipped"] = True
            tags.append(record)
        entry = {"text": text, "stripped": stripped, "tags": tags}
        if not errors:
            entry["lora_order"] = loras[0][0] if loras else []
            entry["hypernet_order"] = hypernets[0][0] if hypernets else []
        records.append(entry)
    return records


def gen_numbers():
    records = []
    for text in NUMBERS:
        entry = {"text": text}
        for name, function in [("float", float), ("int", int)]:
            try:
                value = function(text)
                entry[name] = "nonfinite" if isinstance(value, float) and not math.isfinite(value) else value
            except ValueError:
                entry[name] = None
        records.append(entry)
    return records


def gen_tree(util, hypernetwork):
    with tempfile.TemporaryDirectory() as root:
        for rel in LORA_TREE + HYPERNET_TREE:
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"x")
        rel = lambda path: os.path.relpath(path, root)
        extensions = [".pt", ".ckpt", ".safetensors"]
        # networks.list_available_networks: Lora, then LyCORIS, into a dict by file stem.
        files = list(util.walk_files(os.path.join(root, "Lora"), allowed_extensions=extensions))
        files += list(util.walk_files(os.path.join(root, "LyCORIS"), allowed_extensions=extensions))
        winners = {}
        for path in files:
            winners[os.path.splitext(os.path.basename(path))[0]] = rel(path)
        hypernets = hypernetwork.list_hypernetworks(os.path.join(root, "hypernetworks"))
        hypernet_files = sorted(__import__("glob").iglob(os.path.join(root, "hypernetworks", "**/*.pt"), recursive=True), key=str.lower)
        return {"files": LORA_TREE + HYPERNET_TREE, "lora_listing": [rel(f) for f in files], "lora_names": winners,
                "hypernet_listing": [rel(f) for f in hypernet_files if os.path.splitext(os.path.basename(f))[0] != "None"],
                "hypernet_names": {k: rel(v) for k, v in hypernets.items()}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--a1111", required=True)
    args = parser.parse_args()
    extra_networks, util, hypernetwork, calls = load_a1111(args.a1111)
    fixture = {
        "prompts": gen_prompts(extra_networks, calls),
        "numbers": gen_numbers(),
        "tree": gen_tree(util, hypernetwork),
        "natural_sort": sorted(NATURAL, key=util.natural_sort_key),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
