#!/usr/bin/env python3
"""Fixtures for Tests/TorchPickleTests: PyTorch files written by the real `torch.save`, and
hostile or malformed files crafted here.

Run with the peers venv:  /work/venv/peers/bin/python tools/gen_pickle_fixtures.py
CI never runs this; it only reads the committed outputs (a few KB each).

Writes Tests/TorchPickleTests/Fixtures/:

  Valid files (torch.save unless noted), each described in expected.json:
    dtypes.pt              every dtype the reader supports (F64 … BOOL, float8 e4m3fn/e5m2 via
                           _rebuild_tensor_v3 + UntypedStorage)
    views.pt               non-contiguous views sharing one storage: transpose, row/column/block
                           slices with offsets, a stride-0 expand, a stepped view, a 0-rank and
                           an empty tensor
    nested.pt              nested dicts/lists/tuples, an nn.Module state_dict (OrderedDict with a
                           `_metadata` attribute, i.e. BUILD), an int key, scalars, a > 64-bit int,
                           bytes (`_codecs.encode` in protocol 2), a set (`__builtin__.set`), a
                           torch.Size
    nested_p4.pt           the same object with pickle_protocol=4 (FRAME, MEMOIZE, STACK_GLOBAL,
                           SHORT_BINUNICODE, EMPTY_SET/ADDITEMS, SHORT_BINBYTES)
    embedding_a1111.pt     an A1111 textual-inversion embedding (string_to_token, string_to_param,
                           name, step, sd_checkpoint, sd_checkpoint_name)
    embedding_paramdict.pt the original textual-inversion format (string_to_param is an
                           nn.ParameterDict, string_to_token holds 0-rank tensors)
    hypernetwork.pt        an A1111 hypernetwork (int keys 768/320/640/1280 → tuple of two state
                           dicts, layer_structure, activation_func, is_layer_norm, …); small layers
    hypernetwork.pt.optim  its optimizer file (optimizer_name, hash, AdamW optimizer_state_dict)
    checkpoint.ckpt        a PyTorch-Lightning style checkpoint whose `callbacks` dict is keyed by
                           the class pytorch_lightning…ModelCheckpoint (a stand-in class with that
                           module path, as in SD 1.x .ckpt files)
    legacy.pt              _use_new_zipfile_serialization=False (magic, protocol, sys_info, main
                           pickle, storage keys, raw storages)
    legacy_p4.pt           the same, pickle_protocol=4
    unaligned.pt           dtypes.pt's records rewritten by Python's zipfile (no 64-byte alignment,
                           root folder renamed) — torch.load reads it; our reader must copy
    zip64.pt               the same records in a hand-written ZIP64 archive (ZIP64 end record and
                           locator, ZIP64 extra fields in local and central headers), checked
                           with Python's zipfile and torch.load

  Files the reader must refuse (expected error in expected.json → "refusals"):
    deflate.pt             records compressed with deflate (torch never writes that)
    bigendian.pt           byteorder record says "big"
    torchscript.pt         a torch.jit.save archive
    numpy_scalar.pt        a numpy scalar (numpy._core.multiarray.scalar) inside a dict
    device.pt              a torch.device value
    evil_*.pt              payloads that create /tmp/torchpickle-pwned-<name> when loaded by
                           torch.load(weights_only=False) — each payload is CHECKED here to really
                           run under torch.load (in a subprocess), so the Swift test's "marker file
                           absent" assertion can fail. GLOBAL and STACK_GLOBAL references to
                           os.system, posix.system, builtins.eval/exec, __builtin__.exec,
                           subprocess.Popen; a malicious object nested inside a valid embedding
                           (zip and legacy containers); INST; REDUCE of an allowed non-callable.

expected.json: per valid fixture the container format, archive root, flattened tensors (key,
dtype, shape, strides, storage offset, storage group, and the values as float64 — or, above 64
elements, the CRC-32 of the row-major bytes and the float64 sum) and flattened values
(tagged JSON); per refused fixture the error rule and the global it names. The flattening rule
is implemented here independently of the Swift one: dicts recurse with "." joined keys, lists and
tuples recurse by index when they contain a tensor or a dict, everything else is a value.
"""
import collections
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import subprocess
import sys
import time
import types
import zipfile
import zlib

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "TorchPickleTests", "Fixtures")
MARKER_PREFIX = "/tmp/torchpickle-pwned-"

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}

# The globals the Swift reader accepts (written independently of the Swift table; used here only
# to predict which global a refused file names first).
ALLOWED = {
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "collections.OrderedDict", "torch.Size", "_codecs.encode",
    "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset",
    "torch.nn.modules.container.ParameterDict",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.model_checkpoint",
    "torch.storage.UntypedStorage", "torch.UntypedStorage",
} | {f"torch.{n}Storage" for n in ["Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                    "Byte", "Bool", "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8",
                                    "QInt32", "QUInt4x2", "QUInt2x4"]} \
  | {f"torch.{n}" for n in ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                           "uint8", "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                           "float8_e5m2fnuz", "float8_e8m0fnu", "uint16", "uint32", "uint64",
                           "complex32", "complex64", "complex128"]}

expected = {"files": {}, "refusals": {}}


def path(name):
    return os.path.join(OUT, name)


# ---------------------------------------------------------------------------------------------
# Reference flattening and tagged JSON (what the Swift reader must report)

def render_key(k):
    if isinstance(k, bool):
        return "True" if k else "False"
    if isinstance(k, (int, str)):
        return str(k)
    if isinstance(k, type):
        return f"{k.__module__}.{k.__qualname__}"
    raise ValueError(f"key {k!r} not used in fixtures")


def tagged(v):
    if v is None:
        return {"none": None}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": v} if -(2 ** 63) <= v < 2 ** 63 else {"bigint": str(v)}
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": v.hex()}
    if isinstance(v, torch.Size):
        return {"tuple": [tagged(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [tagged(x) for x in v]}
    if isinstance(v, list):
        return {"list": [tagged(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"set": sorted((tagged(x) for x in v), key=json.dumps)}
    if isinstance(v, dict):
        return {"dict": [[tagged(k), tagged(x)] for k, x in v.items()]}
    if isinstance(v, type):
        return {"global": f"{v.__module__}.{v.__qualname__}"}
    raise ValueError(f"value {v!r} not used in fixtures")


def has_structure(v):
    if isinstance(v, (torch.Tensor, dict, torch.nn.ParameterDict)):
        return True
    if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
        return any(has_structure(x) for x in v)
    return False


def flatten(obj, prefix, tensors, values):
    join = (lambda c: c) if prefix == "" else (lambda c: prefix + "." + c)
    if isinstance(obj, torch.Tensor):
        tensors.append((prefix, obj))
    elif isinstance(obj, torch.nn.ParameterDict):
        flatten(obj._parameters, prefix, tensors, values)
    elif isinstance(obj, dict) and obj:
        for k, v in obj.items():
            flatten(v, join(render_key(k)), tensors, values)
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size) and has_structure(obj):
        for i, v in enumerate(obj):
            flatten(v, join(str(i)), tensors, values)
    else:
        values[prefix] = tagged(obj)


def describe(name, loaded, fmt, root):
    """Records what a correct reader reports for `loaded` (the object torch.load returned)."""
    tensors, values = [], {}
    flatten(loaded, "", tensors, values)
    groups = {}
    out = []
    for key, t in tensors:
        ptr = t.untyped_storage().data_ptr()
        group = groups.setdefault(ptr, len(groups))
        entry = {
            "key": key, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
            "strides": list(t.stride()), "offset": t.storage_offset(), "storageGroup": group,
        }
        t = t.detach()
        if t.numel() <= 64:
            entry["values"] = t.double().flatten().tolist()
        else:  # large tensors: CRC-32 of the row-major bytes in the tensor's own dtype, and the sum
            raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dim() > 0 else b""
            entry["crc32"] = zlib.crc32(raw)
            entry["sum"] = t.double().sum().item()
        out.append(entry)
    expected["files"][name] = {"format": fmt, "root": root, "tensors": out, "values": values}


def archive_root(file):
    with zipfile.ZipFile(file) as z:
        return z.namelist()[0].split("/")[0]


def save_and_describe(name, obj, protocol=2, legacy=False):
    torch.save(obj, path(name), pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    loaded = torch.load(path(name), weights_only=False)
    describe(name, loaded, "legacy" if legacy else "zip", None if legacy else archive_root(path(name)))
    return loaded


# ---------------------------------------------------------------------------------------------
# Valid files

def dtypes_object():
    return {
        "f64": torch.tensor([1.5, -2.25, 1e-300, 12345.678901234], dtype=torch.float64),
        "f32": torch.tensor([[1.5, -2.25, 3.0e-3], [65504.0, -0.0, 7.0]], dtype=torch.float32),
        "f16": torch.tensor([1.5, -2.25, 6.1e-5, 65504.0, 5.96e-8], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.25, 3.0e38, 1e-38], dtype=torch.bfloat16),
        "i64": torch.tensor([0, -1, 2 ** 40, -(2 ** 50)], dtype=torch.int64),
        "i32": torch.tensor([7, -2 ** 31, 2 ** 31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0, 3], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 128], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True], dtype=torch.bool),
        "f8e4m3": torch.tensor([1.5, -2.25, 448.0, 0.015625], dtype=torch.float8_e4m3fn),
        "f8e5m2": torch.tensor([1.5, -2.0, 57344.0, 0.0000152587890625], dtype=torch.float8_e5m2),
    }


def views_object():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "base": base,
        "transposed": base.t(),
        "row2": base[2],
        "column1": base[:, 1],
        "block": base[1:3, 2:5],
        "stepped": base.view(-1)[3::5],
        "expanded": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16).expand(4, 3),
        "scalar": torch.tensor(7.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
    }


def nested_object():
    torch.manual_seed(1)
    linear = torch.nn.Linear(3, 2)
    return {
        "model": {
            "layer1": {"weight": torch.randn(2, 3), "bias": torch.randn(2)},
            "layers": [torch.ones(2), torch.full((1, 2), 3.0)],
            "pair": (torch.tensor([1, 2, 3], dtype=torch.int32), {"inner": torch.tensor([0.25])}),
        },
        "meta": {
            "lr": 0.5, "tags": ["a", "b", "ünï"], "flags": [True, False], "count": 3, "none": None,
            "big": 2 ** 70, "neg": -123456789012, "bytes": b"\x00\xff\x10", "set": {3, 1, 2},
            "ints": (1, 2, 3), "mixed": [1, 2.5, "x", True], "size": torch.Size([4, 5]),
            "empty_list": [], "empty_dict": {},
        },
        "sd": linear.state_dict(),
        7: "int key",
    }


def embedding_a1111():
    torch.manual_seed(2)
    vec = torch.randn(2, 768) * 0.01
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec.requires_grad_(True)},
        "name": "my-embedding",
        "step": 1234,
        "sd_checkpoint": "a9263745",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }


def embedding_paramdict():
    torch.manual_seed(3)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(1, 768) * 0.01)})
    return {"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}


class HypernetworkModule(torch.nn.Module):
    """The layout of A1111's HypernetworkModule (linear = Sequential of Linear/LayerNorm/act/dropout),
    with small widths (the real ones are dim → 2·dim → dim)."""

    def __init__(self, dim):
        super().__init__()
        w = dim // 160  # 768 → 4, 320 → 2, 640 → 4, 1280 → 8
        self.linear = torch.nn.Sequential(
            torch.nn.Linear(w, 2 * w), torch.nn.LayerNorm(2 * w), torch.nn.ReLU(), torch.nn.Dropout(0.3),
            torch.nn.Linear(2 * w, w))


def hypernetwork():
    torch.manual_seed(4)
    state = {}
    modules = {}
    for dim in (768, 320, 640, 1280):
        modules[dim] = (HypernetworkModule(dim), HypernetworkModule(dim))
        state[dim] = (modules[dim][0].state_dict(), modules[dim][1].state_dict())
    state.update({
        "step": 2000, "name": "my-hypernet", "layer_structure": [1.0, 2.0, 1.0],
        "activation_func": "relu", "is_layer_norm": True, "weight_initialization": "Normal",
        "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5-pruned-emaonly",
        "activate_output": False, "use_dropout": True, "dropout_structure": [0.0, 0.3, 0.0],
        "last_layer_dropout": False, "optional_info": None,
    })
    params = [p for m in modules[768] for p in m.parameters()]  # a subset keeps the file small
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss = sum((p * p).sum() for p in params)
    loss.backward()
    opt.step()
    optim = {"optimizer_name": "AdamW", "hash": "0123abcd", "optimizer_state_dict": opt.state_dict()}
    return state, optim


def checkpoint():
    # A stand-in for pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint (the class is the
    # key of `callbacks` in PL 1.4 checkpoints such as sd-v1-4.ckpt); only its name is pickled.
    pkg = types.ModuleType("pytorch_lightning")
    cb = types.ModuleType("pytorch_lightning.callbacks")
    mc = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = mc.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mc.ModelCheckpoint = ModelCheckpoint
    sys.modules.update({pkg.__name__: pkg, cb.__name__: cb, mc.__name__: mc})
    torch.manual_seed(5)
    return {
        "epoch": 5, "global_step": 470000, "pytorch-lightning_version": "1.4.2",
        "state_dict": {
            "model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 4, 3, 3).half(),
            "model.diffusion_model.input_blocks.0.0.bias": torch.randn(4).half(),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(5).unsqueeze(0),
        },
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                        "save_top_k": -1, "dirpath": "/fsx/logs/checkpoints"}},
    }


def legacy_object():
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4
    return {
        "weight": w, "row": w[1], "transposed": w.t(),
        "half": torch.tensor([1.0, -0.5, 2.0], dtype=torch.float16),
        "bf16": torch.tensor([3.0, 0.125], dtype=torch.bfloat16),
        "long": torch.tensor([1, -2, 3], dtype=torch.int64),
        "flags": torch.tensor([True, False]),
        "step": 5, "name": "legacy",
    }


# ---------------------------------------------------------------------------------------------
# Zip containers written by hand

def torch_records(file):
    """(name without root, bytes) of every record of a torch zip, in archive order."""
    with zipfile.ZipFile(file) as z:
        return [(i.filename.split("/", 1)[1], z.read(i.filename)) for i in z.infolist()]


def write_python_zip(file, root, records, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(file, "w", compression=compression) as z:
        for name, data in records:
            z.writestr(f"{root}/{name}", data)


def write_zip64(file, root, records, align=64):
    """A ZIP64 archive: every size/offset in the classic fields is 0xFFFFFFFF and the real value is
    in a ZIP64 extra field; ZIP64 end-of-central-directory record + locator; stored entries whose
    data start on `align`-byte boundaries (padded with an 'FB' extra field as PyTorch does)."""
    out, central = bytearray(), bytearray()
    for name, data in records:
        nb = f"{root}/{name}".encode()
        offset = len(out)
        extra = struct.pack("<HHQQ", 0x0001, 16, len(data), len(data))
        pad = (-(offset + 30 + len(nb) + len(extra))) % align
        if pad:
            if pad < 4:
                pad += align
            extra += struct.pack("<HH", 0x4246, pad - 4) + b"Z" * (pad - 4)
        crc = zlib.crc32(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 33, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(nb), len(extra)) + nb + extra + data
        cextra = struct.pack("<HHQQQ", 0x0001, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 33, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + cextra
    cd_offset, n = len(out), len(records)
    out += central
    eocd64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(file, "wb") as f:
        f.write(out)


def torch_zip_with_pickle(file, data_pkl):
    """A torch zip archive (PyTorch's own writer) whose data.pkl is `data_pkl`."""
    w = torch._C.PyTorchFileWriter(file)
    w.write_record("data.pkl", data_pkl, len(data_pkl))
    w.write_end_of_file()
    del w


# ---------------------------------------------------------------------------------------------
# Hostile pickles (hand-assembled opcodes)

def uni(s):  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def short_uni(s):  # SHORT_BINUNICODE (protocol 4)
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def glob(module, name):  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def shell(marker):
    return f"touch {marker}"


def evil_global_call(module, name, arg, protocol=2):
    get = glob(module, name) if protocol < 4 else short_uni(module) + short_uni(name) + b"\x93"
    return b"\x80" + bytes([protocol]) + get + arg + b"\x85R."  # TUPLE1 REDUCE STOP


def first_refused_global(data):
    """The first GLOBAL/STACK_GLOBAL/INST the Swift reader must refuse (pickletools' view)."""
    strings = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            module, name = arg.split(" ", 1)
            if f"{module}.{name}" not in ALLOWED:
                return f"{module}.{name}"
        elif op.name == "STACK_GLOBAL":
            module, name = strings[-2], strings[-1]
            if f"{module}.{name}" not in ALLOWED:
                return f"{module}.{name}"
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
    return None


def pickle_of(file):
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as z:
            return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
    with open(file, "rb") as f:  # legacy: the 4th pickle
        for _ in range(3):
            pickle.load(f)
        start = f.tell()
        rest = f.read()
    # Parse just the main pickle's opcodes (genops stops at STOP).
    end = max(pos for _, _, pos in pickletools.genops(rest)) + 1
    return rest[:end]


def check_payload_runs(file, marker):
    """Loads `file` with torch.load(weights_only=False) in a subprocess and requires the marker file
    to appear: proof that the fixture really is hostile (else the Swift test could not fail)."""
    if os.path.exists(marker):
        os.remove(marker)
    code = f"import torch\ntry:\n torch.load({file!r}, weights_only=False)\nexcept Exception as e:\n print('load raised', e)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    for _ in range(50):  # subprocess.Popen payloads finish after the loader returns
        if os.path.exists(marker):
            break
        time.sleep(0.1)
    if not os.path.exists(marker):
        raise SystemExit(f"payload of {file} did not run under torch.load")
    os.remove(marker)


class Evil:
    """Runs a shell command when unpickled by a permissive loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (shell(self.marker),))


def refusal(file, rule, **fields):
    expected["refusals"][file] = {"rule": rule, **fields}


def make_hostile():
    cases = {
        # name: (data.pkl bytes)
        "evil_global_os_system": lambda m: evil_global_call("os", "system", uni(shell(m))),
        "evil_global_posix_system": lambda m: evil_global_call("posix", "system", uni(shell(m))),
        "evil_global_builtins_eval": lambda m: evil_global_call(
            "builtins", "eval", uni(f"__import__('os').system({shell(m)!r})")),
        "evil_global_builtins_exec": lambda m: evil_global_call(
            "builtins", "exec", uni(f"import os; os.system({shell(m)!r})")),
        "evil_global_builtin_exec_py2": lambda m: evil_global_call(
            "__builtin__", "exec", uni(f"import os; os.system({shell(m)!r})")),
        "evil_global_subprocess_popen": lambda m: b"\x80\x02" + glob("subprocess", "Popen")
            + b"(" + uni("touch") + uni(m) + b"l\x85R.",  # MARK … LIST TUPLE1 REDUCE
        "evil_stack_global_builtins_eval": lambda m: evil_global_call(
            "builtins", "eval", short_uni(f"__import__('os').system({shell(m)!r})"), protocol=4),
        "evil_stack_global_os_system": lambda m: evil_global_call("os", "system", short_uni(shell(m)), protocol=4),
        # INST: module/name inline, arguments after MARK (protocol 0 style class instantiation).
        "evil_inst_os_system": lambda m: b"(" + uni(shell(m)) + b"ios\nsystem\n.",
    }
    for name, build in cases.items():
        marker = MARKER_PREFIX + name
        data = build(marker)
        file = path(name + ".pt")
        torch_zip_with_pickle(file, data)
        check_payload_runs(file, marker)
        module, gname = first_refused_global(data).rsplit(".", 1)
        refusal(name + ".pt", "refusedGlobal", module=module, name=gname, marker=marker)

    # A valid embedding with a malicious value nested inside, written by torch.save itself
    # (os.system pickles as posix.system on Linux), in the zip and the legacy container.
    for name, legacy in (("evil_embedding_zip", False), ("evil_embedding_legacy", True)):
        marker = MARKER_PREFIX + name
        obj = embedding_a1111()
        obj["sd_checkpoint_name"] = {"nested": [1, Evil(marker)]}
        file = path(name + ".pt")
        torch.save(obj, file, _use_new_zipfile_serialization=not legacy)
        check_payload_runs(file, marker)
        module, gname = first_refused_global(pickle_of(file)).rsplit(".", 1)
        refusal(name + ".pt", "refusedGlobal", module=module, name=gname, marker=marker)

    # REDUCE of an allowed global that is not a callable here (a storage type).
    data = b"\x80\x02" + glob("torch", "FloatStorage") + b"K\x10\x85R."
    torch_zip_with_pickle(path("evil_reduce_storage_type.pt"), data)
    refusal("evil_reduce_storage_type.pt", "notCallable", callee="torch.FloatStorage")


def make_refused():
    # deflate: torch writes stored records only.
    write_python_zip(path("deflate.pt"), "archive", torch_records(path("dtypes.pt")), zipfile.ZIP_DEFLATED)
    refusal("deflate.pt", "zipCompressedEntry", entry="archive/data.pkl", method=8)

    # big-endian byte order record.
    recs = [(n, b"big" if n == "byteorder" else d) for n, d in torch_records(path("views.pt"))]
    write_python_zip(path("bigendian.pt"), "archive", recs)
    refusal("bigendian.pt", "bigEndian")

    # A TorchScript archive.
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x + 1

    torch.jit.save(torch.jit.script(Tiny()), path("torchscript.pt"))
    refusal("torchscript.pt", "torchScriptArchive")

    # A numpy scalar: a global the reader does not allow (named exactly as the file spells it).
    torch.save({"value": np.float64(1.5)}, path("numpy_scalar.pt"))
    module, name = first_refused_global(pickle_of(path("numpy_scalar.pt"))).rsplit(".", 1)
    refusal("numpy_scalar.pt", "refusedGlobal", module=module, name=name)

    torch.save({"device": torch.device("cpu")}, path("device.pt"))
    refusal("device.pt", "refusedGlobal", module="torch", name="device")


def main():
    if os.path.isdir(OUT):
        for f in os.listdir(OUT):
            if f != ".keep":
                os.remove(os.path.join(OUT, f))
    os.makedirs(OUT, exist_ok=True)

    save_and_describe("dtypes.pt", dtypes_object())
    save_and_describe("views.pt", views_object())
    save_and_describe("nested.pt", nested_object())
    save_and_describe("nested_p4.pt", nested_object(), protocol=4)
    save_and_describe("embedding_a1111.pt", embedding_a1111())
    save_and_describe("embedding_paramdict.pt", embedding_paramdict())
    state, optim = hypernetwork()
    save_and_describe("hypernetwork.pt", state)
    save_and_describe("hypernetwork.pt.optim", optim)
    save_and_describe("checkpoint.ckpt", checkpoint())
    save_and_describe("legacy.pt", legacy_object(), legacy=True)
    save_and_describe("legacy_p4.pt", legacy_object(), protocol=4, legacy=True)

    # dtypes.pt re-containered: Python's zipfile (unaligned) and a hand-written ZIP64 archive.
    records = torch_records(path("dtypes.pt"))
    write_python_zip(path("unaligned.pt"), "renamed_root", records)
    write_zip64(path("zip64.pt"), "zip64root", records)
    for name, root in (("unaligned.pt", "renamed_root"), ("zip64.pt", "zip64root")):
        with zipfile.ZipFile(path(name)) as z:  # Python's reader agrees on names and contents
            assert z.testzip() is None
            assert [(n.split("/", 1)[1], z.read(n)) for n in z.namelist()] == records
        describe(name, torch.load(path(name), weights_only=False), "zip", root)

    make_refused()
    make_hostile()

    with open(path("expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, into {OUT}")


if __name__ == "__main__":
    main()
