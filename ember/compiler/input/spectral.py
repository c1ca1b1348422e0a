"""DFT and STFT as ONNX function bodies: a transform of known length is a
matrix product with constant cosine and sine tables (TVM has no FFT), so
functions.py expands them like any operator ONNX defines by a body.

For the signal axis moved last, X[k] = sum_j x[j] e^(-+2 pi i jk/n):
Re = a C + s b S and Im = b C - s a S, with s = 1 forward, -1 inverse (and
1/n), C/S the cos/sin tables of size n x bins. Onesided forward transforms
keep the n/2 + 1 first bins; an inverse onesided transform rebuilds the
real signal from half a Hermitian spectrum. The axis, dft_length, frame_step
and frame_length must be constants (a graph input is specialised first).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper as h

from ember.compiler import ir
from ember.compiler.ir.body_builder import Body

MAX_LENGTH = 2048  # cos and sin tables of n x n doubles: 32 MiB each at most


def _const(v: ir.Value | None) -> int | None:
    value = None if v is None else v.scalar()
    return None if value is None else int(value)


def _tables(n: int, bins: int, inverse: bool, hermitian: bool, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [n_in, n_out] for Re/Im products (inverse scaled by 1/n)."""
    if hermitian:  # rows: the bins of half a spectrum; columns: the n real samples
        k, j = np.arange(bins)[:, None], np.arange(n)[None, :]
        weight = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0)
    else:
        k, j = np.arange(bins)[None, :], np.arange(n)[:, None]
        weight = 1.0
    angle = 2 * np.pi * ((j * k) % n) / n
    scale = weight / n if inverse else weight
    return (np.cos(angle) * scale).astype(dtype), (np.sin(angle) * scale).astype(dtype)


def _transform(b: Body, re: str, im: str | None, n: int, inverse: bool, onesided: bool) -> tuple[str, str | None]:
    """Re and Im (None: real output) of the transform of the last axis of re (+ i im)."""
    dtype = b.dtype
    if inverse and onesided:  # half spectrum in, n real samples out
        bins = n // 2 + 1
        cos, sin = _tables(n, bins, True, True, dtype)
        out = b.op("MatMul", re, b.const(cos))
        if im is not None:
            out = b.op("Sub", out, b.op("MatMul", im, b.const(sin)))
        return out, None
    bins = n // 2 + 1 if onesided else n
    cos, sin = _tables(n, bins, inverse, False, dtype)
    s = -1.0 if inverse else 1.0
    out_re = b.op("MatMul", re, b.const(cos))
    out_im = b.op("MatMul", re, b.const(-s * sin))
    if im is not None:
        out_re = b.op("Add", out_re, b.op("MatMul", im, b.const(s * sin)))
        out_im = b.op("Add", out_im, b.op("MatMul", im, b.const(cos)))
    return out_re, out_im


def _join(b: Body, re: str, im: str | None, perm: list[int] | None) -> str:
    parts = [re] + ([im] if im is not None else [])
    if perm is not None:
        back = list(np.argsort(perm))
        parts = [b.op("Transpose", p, perm=back) for p in parts]
    return b.op("Concat", *[b.unsqueeze(p, -1) for p in parts], axis=-1) if len(parts) > 1 else b.unsqueeze(parts[0], -1)


def dft_body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    x = node.inputs[0]
    ins = list(node.inputs) + [None, None]
    if x is None or x.shape is None or not x.dtype or not all(isinstance(d, int) for d in x.shape):
        return None
    rank = len(x.shape)
    axis = node.attrs.get("axis", 1) if opset < 20 else (_const(ins[2]) if ins[2] is not None else -2)
    if axis is None:
        return None
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank - 2:
        return None
    inverse, onesided = bool(node.attrs.get("inverse", 0)), bool(node.attrs.get("onesided", 0))
    given = ins[1] is not None
    length = _const(ins[1]) if given else None
    if given and length is None:
        return None
    size = x.shape[axis]
    n = length if length is not None else (2 * (size - 1) if inverse and onesided else size)
    if n > MAX_LENGTH or n < 1 or (inverse and onesided and size != n // 2 + 1) or (not (inverse and onesided)
                                                                                     and n != size):
        return None  # dft_length padding/truncation of the signal: not supported
    b = Body(opset, np.float64)  # sums in double: values that cancel to 0 come out as 0, as in numpy's FFT
    wide = b.op("Cast", "x", to=onnx.TensorProto.DOUBLE)
    perm = [d for d in range(rank - 1) if d != axis] + [axis]
    re = b.op("Transpose", b.index_last(wide, 0), perm=perm)
    im = b.op("Transpose", b.index_last(wide, 1), perm=perm) if x.shape[-1] == 2 else None
    out_re, out_im = _transform(b, re, im, n, inverse, onesided)
    y = b.op("Cast", _join(b, out_re, out_im, perm), to=x.dtype)
    inputs = ["input", "dft_length", "axis"][: len(node.inputs)]
    fn = h.make_function("", "DFT", ["x", *inputs[1:]], ["y"], b.nodes + [h.make_node("Identity", [y], ["y"])],
                         [h.make_opsetid("", opset)])
    return fn


def stft_body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    ins = list(node.inputs) + [None] * 4
    signal, window = ins[0], ins[2]
    step, frame = _const(ins[1]), _const(ins[3]) if ins[3] is not None else None
    if frame is None and window is not None and window.shape is not None and isinstance(window.shape[0], int):
        frame = window.shape[0]
    if (signal is None or signal.shape is None or not signal.dtype or len(signal.shape) != 3
            or not all(isinstance(d, int) for d in signal.shape) or step is None or frame is None
            or frame > MAX_LENGTH):
        return None
    length = signal.shape[1]
    frames = 1 + (length - frame) // step
    if frames < 1:
        return None
    b = Body(opset, np.float64)
    wide = b.op("Cast", "signal", to=onnx.TensorProto.DOUBLE)
    index = b.const(np.arange(frame)[None, :] + step * np.arange(frames)[:, None], np.int64)  # [frames, frame]
    parts = []
    for c in range(signal.shape[2]):
        part = b.op("Gather", b.index_last(wide, c), index, axis=1)  # [batch, frames, frame]
        if window is not None:
            part = b.op("Mul", part, b.op("Cast", "window", to=onnx.TensorProto.DOUBLE))
        parts.append(part)
    onesided = bool(node.attrs.get("onesided", 1))
    out_re, out_im = _transform(b, parts[0], parts[1] if len(parts) > 1 else None, frame, False, onesided)
    y = b.op("Cast", _join(b, out_re, out_im, None), to=signal.dtype)
    formals = ["signal", "frame_step", "window", "frame_length"][: len(node.inputs)]
    return h.make_function("", "STFT", formals, ["output"], b.nodes + [h.make_node("Identity", [y], ["output"])],
                           [h.make_opsetid("", opset)])


BUILDERS = {"DFT": dft_body, "STFT": stft_body}
