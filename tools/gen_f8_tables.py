#!/usr/bin/env python3
"""Writes Tests/TensorTests/Fixtures/f8_tables.json: PyTorch's F32 value of every F8 byte.

For each of torch.float8_e4m3fn and torch.float8_e5m2, the 256 bytes 0x00..0xFF are
reinterpreted as F8 and widened with `.float()`; the fixture stores the resulting F32
*bit patterns* (integers), so NaN payloads, signs and -0 survive JSON exactly.

Run with the peers venv:  /work/venv/peers/bin/python tools/gen_f8_tables.py
CI never runs this; it only reads the committed fixture.
"""
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests/TensorTests/Fixtures/f8_tables.json"


def f32_bits(dtype: torch.dtype) -> list[int]:
    raw = torch.arange(256, dtype=torch.uint8)
    widened = raw.view(dtype).float()
    return [int(b) & 0xFFFFFFFF for b in widened.view(torch.int32).tolist()]


def main() -> None:
    table = {
        "generator": "tools/gen_f8_tables.py",
        "torch_version": torch.__version__,
        "note": "index = F8 byte; value = F32 bit pattern of torch's .float() of that byte",
        "F8_E4M3": f32_bits(torch.float8_e4m3fn),
        "F8_E5M2": f32_bits(torch.float8_e5m2),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
