#!/usr/bin/env python3
"""Checks that Python's safetensors reads what AdapterHost's writer writes, value by value.

Usage (peers venv):
    /work/venv/peers/bin/python tools/check_safetensors_interop.py            # runs the Swift export
    /work/venv/peers/bin/python tools/check_safetensors_interop.py --dir DIR  # checks files already there

Without --dir, it runs the Swift test InteropExportTests with ADAPTERHOST_INTEROP_DIR set to a
temporary directory (`swift test --filter InteropExportTests`), which leaves there the files
our writer produced plus one JSON spec per file ([{name, dtype, shape}] and metadata; values
follow the formula in tools/safetensors_formula.py). Then, for each file:
  - safetensors.torch.load_file: names, dtypes, shapes and every value equal the formula;
  - safe_open(framework="numpy"): the same for dtypes numpy has;
  - the metadata equals the spec's;
  - bytes: safetensors.torch.save of the same tensors and metadata gives a byte-identical
    file when there is at most one metadata key (the reference's metadata order is random
    otherwise); with more keys, the parsed headers and the data sections must be equal.
Exit status 0 when everything matches, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_formula import NUMPY_DTYPES, TORCH_DTYPES, formula_numpy, formula_torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(directory: str, package_path: str, scratch_path: str) -> None:
    env = dict(os.environ, ADAPTERHOST_INTEROP_DIR=directory)
    cmd = ["swift", "test", "--package-path", package_path, "--scratch-path", scratch_path,
           "--filter", "InteropExportTests"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


def raw_bytes(t: torch.Tensor) -> bytes:
    """The tensor's bytes (0-rank tensors are flattened first: torch cannot view them as bytes)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def split(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def check_file(path: str, spec: dict) -> list:
    problems = []
    metadata = spec["metadata"]
    entries = spec["tensors"]

    loaded = load_file(path)
    if set(loaded) != {e["name"] for e in entries}:
        problems.append(f"names differ: {sorted(loaded)}")
    expected = {}
    for k, e in enumerate(entries):
        want = formula_torch(e["dtype"], k, e["shape"])
        expected[e["name"]] = want
        got = loaded.get(e["name"])
        if got is None:
            continue
        if got.dtype != TORCH_DTYPES[e["dtype"]] or list(got.shape) != e["shape"]:
            problems.append(f"{e['name']!r}: {got.dtype} {list(got.shape)} != {e['dtype']} {e['shape']}")
            continue
        # Compare the raw bytes (exact for every dtype, incl. F8 which torch cannot compare).
        if raw_bytes(got) != raw_bytes(want):
            problems.append(f"{e['name']!r}: values differ: {got.reshape(-1)[:8].tolist()}...")

    with safe_open(path, framework="numpy") as f:
        if (f.metadata() or {}) != metadata:
            problems.append(f"metadata differs: {f.metadata()!r} != {metadata!r}")
        for k, e in enumerate(entries):
            if e["dtype"] not in NUMPY_DTYPES:
                continue
            got = f.get_tensor(e["name"])
            want = formula_numpy(e["dtype"], k, e["shape"])
            if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
                problems.append(f"{e['name']!r}: numpy read differs")

    ours = open(path, "rb").read()
    theirs = save(expected, metadata=metadata or None)
    if len(metadata) <= 1:
        if ours != theirs:
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            problems.append(f"bytes differ from safetensors.torch.save at byte {first} "
                            f"(ours {len(ours)} bytes, theirs {len(theirs)})")
    else:
        n1, h1, d1 = split(ours)
        n2, h2, d2 = split(theirs)
        if (n1, h1, d1) != (n2, h2, d2):
            problems.append("header or data differ from safetensors.torch.save (metadata order aside)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="check the files already in DIR instead of running the Swift export")
    parser.add_argument("--package-path", default=ROOT)
    parser.add_argument("--scratch-path", default=".build-st")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or tmp
        if not args.dir:
            scratch = args.scratch_path if os.path.isabs(args.scratch_path) else os.path.join(args.package_path, args.scratch_path)
            export(directory, args.package_path, scratch)
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
        if not files:
            print(f"no .safetensors files in {directory}", file=sys.stderr)
            return 1
        failed = False
        for name in files:
            path = os.path.join(directory, name)
            with open(path + ".json") as f:
                spec = json.load(f)
            problems = check_file(path, spec)
            status = "ok" if not problems else "FAILED"
            print(f"{status:6s} {name}: {len(spec['tensors'])} tensors, {len(spec['metadata'])} metadata keys")
            for p in problems:
                print(f"       {p}")
            failed = failed or bool(problems)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
