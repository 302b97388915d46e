#!/usr/bin/env python3
"""Writes the safetensors interop fixtures into Tests/SafeTensorsTests/Fixtures/.

Run with the peers venv:  /work/venv/peers/bin/python tools/gen_safetensors_fixtures.py
CI never runs this; it only reads the committed outputs (a few KB in all).

Outputs
  dtypes.safetensors / dtypes.json
      Written by safetensors.torch.save_file. Every dtype AdapterHost reads, including all 256
      bit patterns of F8_E4M3 and F8_E5M2, F16/BF16 specials (subnormals, inf, NaN, -0),
      integer extremes, a zero-size tensor of each kind, 0-rank scalars and metadata with
      several keys (escapes, non-ASCII, empty value). The sidecar has, per tensor: dtype,
      shape, data_offsets, the raw bytes (hex), the values as F32 bit patterns computed by
      torch's `.to(torch.float32)` (floats) or exact integers as decimal strings (integers,
      BOOL), plus the header order, header size, file size and metadata.
  order_torch.safetensors, order_numpy.safetensors / writer_specs.json
      Written by safetensors.torch.save_file and safetensors.numpy.save_file from a spec list
      (names chosen to exercise ordering and JSON escaping, mixed dtypes, zero-size and
      scalar tensors, at most one metadata key) with values from the shared formula in
      tools/safetensors_formula.py. The Swift tests rebuild the same tensors from the spec
      and must write byte-identical files.
"""
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_formula import formula_numpy, formula_torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "SafeTensorsTests", "Fixtures")

SAFETENSORS_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def bits16(patterns, dtype):
    return torch.from_numpy(np.array(patterns, dtype=np.uint16).view(np.int16)).view(dtype)


def dtype_fixture():
    t = {}
    t["f64"] = torch.tensor([[1.5, -2.25, 1e300], [math.pi, -0.0, 5e-324]], dtype=torch.float64)
    t["f32"] = torch.tensor(
        [0.0, -0.0, 1.0, -1.0, 3.4028234663852886e38, 1e-45, 1.1754943508222875e-38,
         math.inf, -math.inf, math.nan, 0.1, 123456.789], dtype=torch.float32).reshape(3, 4)
    # F16: zero, -0, smallest subnormal, largest subnormal, smallest normal, 1, -1, max,
    # +inf, -inf, NaN, 1/3, a random pattern, -2, 100, negative subnormal.
    t["f16"] = bits16([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF,
                       0x7C00, 0xFC00, 0x7E00, 0x3555, 0x1234, 0xC000, 0x5640, 0x8001], torch.float16).reshape(4, 4)
    t["bf16"] = bits16([0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x7F7F,
                        0x7F80, 0xFF80, 0x7FC0, 0x3EAB, 0x1234, 0xC000, 0x42C8, 0x8001], torch.bfloat16).reshape(2, 8)
    t["f8_e4m3"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).reshape(16, 16)
    t["f8_e5m2"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e5m2).reshape(16, 16)
    t["i64"] = torch.tensor([-2**63, 2**63 - 1, 0, -1, 2**53 + 1, 12345678901234], dtype=torch.int64).reshape(2, 3)
    t["i32"] = torch.tensor([-2**31, 2**31 - 1, 0, -1, 7], dtype=torch.int32)
    t["i16"] = torch.tensor([-2**15, 2**15 - 1, 0, -1], dtype=torch.int16).reshape(2, 2)
    t["i8"] = torch.tensor([-128, 127, 0, -1, 42], dtype=torch.int8)
    t["u8"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(2, 128)
    t["bool"] = torch.tensor([True, False, True, True, False], dtype=torch.bool)
    t["empty_f32"] = torch.zeros((0, 3), dtype=torch.float32)
    t["empty_i32"] = torch.zeros((4, 0), dtype=torch.int32)
    t["empty_bf16"] = torch.zeros((0,), dtype=torch.bfloat16)
    t["scalar_f32"] = torch.tensor(3.5, dtype=torch.float32)
    t["scalar_i64"] = torch.tensor(-7, dtype=torch.int64)
    t["scalar_f16"] = torch.tensor(-0.5, dtype=torch.float16)
    metadata = {"format": "pt", "note": "fixture \u2713 \"quoted\" \\ back\nnew line\ttab", "empty": ""}

    path = os.path.join(OUT, "dtypes.safetensors")
    torch_save_file(t, path, metadata=metadata)

    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    tensors = {}
    for name, tensor in t.items():
        entry = {
            "dtype": SAFETENSORS_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": header[name]["data_offsets"],
            "bytes_hex": tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes().hex()
            if tensor.numel() else "",
        }
        if tensor.dtype.is_floating_point:
            entry["f32_bits"] = [int(b) for b in tensor.to(torch.float32).reshape(-1).numpy().view(np.uint32)]
        else:
            entry["ints"] = [str(int(v)) for v in tensor.reshape(-1).tolist()]
        tensors[name] = entry
    sidecar = {
        "file_size": len(raw),
        "header_size": n,
        "header_order": [k for k in header if k != "__metadata__"],
        "metadata": metadata,
        "tensors": tensors,
    }
    with open(os.path.join(OUT, "dtypes.json"), "w") as f:
        json.dump(sidecar, f, indent=1, ensure_ascii=True)
        f.write("\n")


# Deliberately not sorted; names exercise byte-order sorting (A < Z < a, multi-byte UTF-8)
# and serde_json escaping (quote, backslash, \t, \u0001, DEL which is not escaped, '/').
ORDER_SPEC = [
    ("unet.down.0.weight", "F16", [4, 3]),
    ("b", "F32", [2, 2]),
    ("a", "F32", [3]),
    ("A", "F32", []),
    ("Z.empty", "F32", [0, 5]),
    ("\u00e9t\u00e9", "BF16", [5]),
    ("quote\"name", "I64", [2]),
    ("back\\slash", "I32", [3, 1]),
    ("tab\tname", "I16", [2, 2]),
    ("ctrl\u0001name", "I8", [7]),
    ("del\u007fname", "U8", [9]),
    ("slash/ok", "BOOL", [2, 3]),
    ("\u65e5\u672c\u8a9e", "F64", [2]),
    ("emoji\U0001F600", "F8_E4M3", [6]),
    ("e5m2", "F8_E5M2", [2, 3]),
    ("alpha", "F16", []),
    ("lora_up.weight", "BF16", [4, 2]),
    ("lora_down.weight", "BF16", [2, 4]),
    ("zero_i64", "I64", [0]),
]
ORDER_METADATA = {"note": "one key only: \"q\" \\ \u00e9\nline"}

NUMPY_SPEC = [(n, d, s) for (n, d, s) in ORDER_SPEC if d not in ("BF16", "F8_E4M3", "F8_E5M2")]


def writer_fixtures():
    torch_tensors = {name: formula_torch(d, k, s) for k, (name, d, s) in enumerate(ORDER_SPEC)}
    torch_save_file(torch_tensors, os.path.join(OUT, "order_torch.safetensors"), metadata=ORDER_METADATA)
    numpy_tensors = {name: formula_numpy(d, k, s) for k, (name, d, s) in enumerate(NUMPY_SPEC)}
    np_save_file(numpy_tensors, os.path.join(OUT, "order_numpy.safetensors"))
    specs = {
        "order_torch.safetensors": {
            "metadata": ORDER_METADATA,
            "tensors": [{"name": n, "dtype": d, "shape": s} for (n, d, s) in ORDER_SPEC],
        },
        "order_numpy.safetensors": {
            "metadata": {},
            "tensors": [{"name": n, "dtype": d, "shape": s} for (n, d, s) in NUMPY_SPEC],
        },
    }
    with open(os.path.join(OUT, "writer_specs.json"), "w") as f:
        json.dump(specs, f, indent=1, ensure_ascii=True)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    dtype_fixture()
    writer_fixtures()
    for name in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, name)):8d}  {name}")
