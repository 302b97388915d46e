"""The value formula shared by the safetensors interop fixtures and checks.

The Swift tests (Tests/SafeTensorsTests/Formula.swift) implement the same formula
independently; both sides build the same logical tensors from a spec list
[{name, dtype, shape}], where k is the entry's position in that list and i the
row-major element index:

    float dtypes (F64 F32 F16 BF16 F8_E4M3 F8_E5M2): ((i*7 + k*3) % 9 - 4) * 0.5
        (values -2.0 ... 2.0 in steps of 0.5: exact in every float dtype, incl. both F8s)
    signed integers (I8 I16 I32 I64):                 (i*7 + k*3) % 23 - 11
    U8:                                               (i*7 + k*3) % 256
    BOOL:                                             (i*7 + k*3) % 3 == 0
"""
import numpy as np
import torch

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def formula_values(dtype: str, k: int, count: int) -> np.ndarray:
    """The logical values (float64 / int64 / bool) of spec entry k."""
    base = np.arange(count, dtype=np.int64) * 7 + k * 3
    if dtype in FLOATS:
        return ((base % 9) - 4).astype(np.float64) * 0.5
    if dtype == "U8":
        return base % 256
    if dtype == "BOOL":
        return base % 3 == 0
    return base % 23 - 11


def formula_torch(dtype: str, k: int, shape) -> torch.Tensor:
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    values = torch.from_numpy(np.ascontiguousarray(formula_values(dtype, k, count)))
    if dtype in FLOATS:
        # float64 -> float32 -> target: every formula value is exact in every float dtype.
        values = values.to(torch.float32)
    return values.to(TORCH_DTYPES[dtype]).reshape(list(shape))


def formula_numpy(dtype: str, k: int, shape) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    return formula_values(dtype, k, count).astype(NUMPY_DTYPES[dtype]).reshape(tuple(shape))
