"""Helpers shared by the fusion rules."""

from __future__ import annotations

import numpy as np

from ember.compiler.ir import Value


def channel_vector(c: np.ndarray, rank: int, channels: int, axis: int = 1) -> np.ndarray | None:
    """If constant `c`, broadcast against a rank-`rank` tensor, varies only
    along `axis` (or not at all), return it as a vector of `channels`."""
    if c.ndim > rank:
        return None
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis):
        return None
    vec = full.reshape(-1)
    if vec.size == 1:
        return np.full(channels, vec[0], dtype=c.dtype)
    return vec if vec.size == channels else None


def rank(v: Value | None) -> int | None:
    return None if v is None or v.shape is None else len(v.shape)


def is_float(v: Value | None) -> bool:
    return v is not None and v.dtype in (1, 10, 11, 16)  # float, float16, double, bfloat16


def scalar(c: np.ndarray | None) -> float | None:
    if c is None or c.size != 1:
        return None
    return float(c.reshape(-1)[0])
