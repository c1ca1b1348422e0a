"""How values of the 8/4/2-bit types TVM cannot hold are stored, and converted
at the run-time boundary: float formats as their bit pattern in a uint8,
integers as their value in an int8/uint8 (`narrow.py` rewrites the graph to
these storage types before lowering)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx

T = onnx.TensorProto
FLOATS = {T.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn, T.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
          T.FLOAT8E5M2: ml_dtypes.float8_e5m2, T.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
          T.FLOAT4E2M1: ml_dtypes.float4_e2m1fn}
INTS = {T.INT4: (ml_dtypes.int4, 4, True), T.UINT4: (ml_dtypes.uint4, 4, False),
        T.INT2: (ml_dtypes.int2, 2, True), T.UINT2: (ml_dtypes.uint2, 2, False)}
NARROW = frozenset(FLOATS) | frozenset(INTS)


def storage(dtype: int) -> int:
    if dtype in INTS:
        return T.INT8 if INTS[dtype][2] else T.UINT8
    return T.UINT8


def numpy_type(dtype: int):
    return FLOATS[dtype] if dtype in FLOATS else INTS[dtype][0]


_BY_NAME = {np.dtype(numpy_type(t)).name: t for t in NARROW}


def by_name(name: str) -> int | None:
    """The ONNX type of an ml_dtypes name ('float8_e4m3fn', 'int4', ...), or None."""
    return _BY_NAME.get(name)


def to_storage(a: np.ndarray, dtype: int) -> np.ndarray:
    return a.view(np.uint8) if dtype in FLOATS else a.astype(onnx.helper.tensor_dtype_to_np_dtype(storage(dtype)))


def from_storage(a: np.ndarray, dtype: int) -> np.ndarray:
    return a.view(FLOATS[dtype]) if dtype in FLOATS else a.astype(INTS[dtype][0])
