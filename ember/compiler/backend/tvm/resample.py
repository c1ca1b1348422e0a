"""ONNX Resize (opset 11+) computed as the specification's reference does.

Resize is separable: each resized axis maps its input to its output with a
fixed linear map, a few input taps per output position. For constant
roi/scales/sizes and a static shape, Ember builds each axis's map at
compile time by running onnx's reference 1-D interpolation on the identity
matrix, so every mode (nearest with each rounding, linear, cubic with its
coefficient and exclude_outside, antialias), coordinate transformation,
keep_aspect_ratio_policy and axes attribute means exactly what the
reference means. Lowered, an axis is a sum of `take`s (one per tap) times
per-position coefficients; nearest is a single `take`. Positions that
tf_crop_and_resize puts outside the input get extrapolation_value.

TVM's own resize takes output sizes only (it resamples by the size ratio,
not by the given scale), rounds nearest-neighbour ties its own way and has
no antialias; this path replaces it wherever the parameters are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOATS = ("float16", "float32", "float64")


@dataclass(frozen=True)
class AxisMap:
    axis: int
    taps: np.ndarray  # int64 [out, n]: input index of each tap
    weights: np.ndarray  # float64 [out, n]
    outside: np.ndarray  # bool [out]: extrapolated (tf_crop_and_resize)

    @property
    def is_gather(self) -> bool:
        return self.taps.shape[1] == 1 and bool(np.all((self.weights == 1) | self.outside[:, None]))


def _text(v, default: str) -> str:
    if v is None:
        return default
    return v.decode() if isinstance(v, bytes) else str(v)


def _reference():
    """onnx's reference helpers, or None (an onnx without the vectorized 1-D step)."""
    try:
        from onnx.reference.ops import op_resize as r

        r._interpolate_1d_along_axis  # noqa: B018
        return r
    except (ImportError, AttributeError):
        return None


def _coefficients(r, attrs: dict):
    """The reference's coefficient function for these attributes (as its Resize._run picks it)."""
    mode = _text(attrs.get("mode"), "nearest")
    antialias = bool(attrs.get("antialias", 0))
    if mode == "nearest":
        if antialias:
            return None
        nearest_mode = _text(attrs.get("nearest_mode"), "round_prefer_floor")
        return lambda x, scale: r._nearest_coeffs(x, mode=nearest_mode)
    if mode == "cubic":
        a = float(attrs.get("cubic_coeff_a", -0.75))
        f = r._cubic_coeffs_antialias if antialias else r._cubic_coeffs
        return lambda x, scale: f(x, scale, A=a)
    if mode == "linear":
        return r._linear_coeffs_antialias if antialias else r._linear_coeffs
    return None


def _sizes_and_scales(shape, axes, scales, sizes, policy: str):
    """Per-axis (output size, scale) for the resized axes, as the reference computes them."""
    rank = len(shape)
    if sizes is not None:
        full = list(shape)
        for i, a in enumerate(axes):
            full[a] = int(sizes[i])
        factors = [full[i] / shape[i] for i in range(rank)]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            scale = pick(factors[a] for a in axes)
            factors = [scale if i in axes else 1.0 for i in range(rank)]
            full = [int(scale * shape[i] + 0.5) if i in axes else shape[i] for i in range(rank)]
        return {a: (full[a], float(factors[a])) for a in axes}
    factors = [1.0] * rank
    for i, a in enumerate(axes):
        factors[a] = float(scales[i])
    out = (np.array(factors) * np.array(shape)).astype(int)
    return {a: (int(out[a]), factors[a]) for a in axes}


def _resized_axes(shape, dtype: str, attrs: dict, roi, scales, sizes):
    """The checks and per-axis parameters of a plan, without its matrices:
    (reference module, coefficient function, coordinate mode,
    [(axis, output size, scale, axis roi)]), or None."""
    r = _reference()
    if r is None or shape is None or not all(isinstance(d, int) and d > 0 for d in shape) or dtype not in FLOATS:
        return None
    fct = _coefficients(r, attrs)
    if fct is None:
        return None
    rank = len(shape)
    scales = None if scales is None or np.size(scales) == 0 else np.asarray(scales, np.float64).reshape(-1)
    sizes = None if sizes is None or np.size(sizes) == 0 else np.asarray(sizes, np.int64).reshape(-1)
    if (scales is None) == (sizes is None):
        return None
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    given = scales if scales is not None else sizes
    if len(given) != len(axes) or (scales is not None and not np.all(scales > 0)):
        return None
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, np.float64).reshape(-1)
    if roi is not None and len(roi) != 2 * len(axes):
        return None
    policy = _text(attrs.get("keep_aspect_ratio_policy"), "stretch")
    resized = []
    for a, (out, scale) in sorted(_sizes_and_scales(shape, axes, scales, sizes, policy).items()):
        axis_roi = None if roi is None else [roi[axes.index(a)], roi[len(axes) + axes.index(a)]]
        identity = (out == shape[a] and np.isclose(scale, 1.0)
                    and (axis_roi is None or (np.isclose(axis_roi[0], 0) and np.isclose(axis_roi[1], 1))))
        if identity:
            continue
        if out <= 0:
            return None
        resized.append((a, out, scale, axis_roi))
    return r, fct, _text(attrs.get("coordinate_transformation_mode"), "half_pixel"), resized


def plannable(shape, dtype: str, attrs: dict, roi, scales, sizes) -> bool:
    """Whether `plan` would build maps for these (cheap: no matrices)."""
    return _resized_axes(shape, dtype, attrs, roi, scales, sizes) is not None


def plan(shape, dtype: str, attrs: dict, roi, scales, sizes) -> list[AxisMap] | None:
    """The per-axis maps of a Resize (opset 11+) with constant roi/scales/sizes
    (numpy arrays or None) on a static `shape`, or None when Ember cannot
    build them (then TVM's converter gets the node)."""
    parsed = _resized_axes(shape, dtype, attrs, roi, scales, sizes)
    if parsed is None:
        return None
    r, fct, coordinates, resized = parsed
    maps = []
    for a, out, scale, axis_roi in resized:
        kw = dict(roi=axis_roi, coordinate_transformation_mode=coordinates,
                  exclude_outside=bool(attrs.get("exclude_outside", 0)))
        matrix = r._interpolate_1d_along_axis(np.eye(shape[a]), 1, scale, out, fct, extrapolation_value=0.0, **kw).T
        outside = r._interpolate_1d_along_axis(np.zeros((1, shape[a])), 1, scale, out, fct,
                                               extrapolation_value=1.0, **kw)[0] == 1.0
        n = max(1, int((matrix != 0).sum(axis=1).max()))
        taps = np.zeros((out, n), np.int64)
        weights = np.zeros((out, n), np.float64)
        for row in range(out):
            nz = np.flatnonzero(matrix[row])
            taps[row, :len(nz)], weights[row, :len(nz)] = nz, matrix[row, nz]
        maps.append(AxisMap(a, taps, weights, outside))
    return maps


def extrapolated(maps: list[AxisMap], rank: int) -> np.ndarray | None:
    """bool mask (broadcastable to the output) of positions outside the input along any axis, or None."""
    mask = None
    for m in maps:
        if not m.outside.any():
            continue
        shape = [1] * rank
        shape[m.axis] = len(m.outside)
        part = m.outside.reshape(shape)
        mask = part if mask is None else (mask | part)
    return mask
