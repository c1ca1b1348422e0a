"""Layer-wise reconstruction: refit a layer's remaining weights and bias by
least squares so that, on calibration data, its output matches what the
original model ("teacher") computed there. numpy only; the activations come
from the caller (`ember.passes.pruning.prune` runs both models with onnxruntime).

A layer y = W x + b becomes a linear regression over rows of inputs: for a
Conv the rows are the input patches (im2col), for Gemm/MatMul the input rows.
Ridge-regularised normal equations keep small calibration sets well posed.
Where weights were zeroed (unstructured or N:M pruning) each output channel
is solved on its own surviving inputs, so the zeros stay zeros.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.ir import Node


def im2col(x: np.ndarray, node: Node, kernel: tuple[int, ...]) -> np.ndarray:
    """Rows of input patches [N*Ho*Wo, C*kh*kw] for a 2-D Conv (NCHW)."""
    kh, kw = kernel
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def conv_supported(node: Node) -> bool:
    w = node.inputs[1].const
    return (node.op_type == "Conv" and node.attrs.get("group", 1) == 1 and len(w.shape) == 4
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET"))


def layer_rows(node: Node, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs A [R, K], targets Y [R, Cout]) of the layer as a linear map."""
    if node.op_type == "Conv":
        a = im2col(x, node, tuple(node.inputs[1].const.shape[2:]))
        return a, y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])


def weight_matrix(node: Node, w: np.ndarray) -> np.ndarray:
    """The weight as [Cout, K] (rows: output channels)."""
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    if node.op_type == "Gemm" and not node.attrs.get("transB", 0) or node.op_type == "MatMul":
        return w.T
    return w


def from_matrix(node: Node, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Conv":
        return m.reshape(shape)
    if node.op_type == "Gemm" and not node.attrs.get("transB", 0) or node.op_type == "MatMul":
        return m.T.reshape(shape)
    return m.reshape(shape)


def supported(node: Node) -> bool:
    if node.op_type == "Conv":
        return conv_supported(node)
    if node.op_type == "Gemm":
        return (not node.attrs.get("transA", 0) and node.attrs.get("alpha", 1.0) == 1.0
                and node.attrs.get("beta", 1.0) == 1.0)
    return node.op_type == "MatMul"


def refit(a: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, ridge: float = 1e-4,
          max_rows: int = 60000, max_masked: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Least-squares W [Cout, K] (and bias b [Cout], when given) with
    y ~ a @ W.T + b, regularised towards the current (w, b): a weight whose
    input the calibration data never exercises keeps its value. Zero entries
    of `w` stay zero. Returns (W, b or None); `w` itself when declined."""
    rng = np.random.default_rng(seed)
    if len(a) > max_rows:
        idx = rng.choice(len(a), max_rows, replace=False)
        a, y = a[idx], y[idx]
    a = a.astype(np.float64)
    y = y.astype(np.float64)
    bias = b is not None
    w0 = np.concatenate([w, b.reshape(-1, 1)], axis=1) if bias else w
    if bias:
        a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    g = a.T @ a
    lam = ridge * (np.trace(g) / len(g) or 1.0)
    g[np.diag_indices_from(g)] += lam
    rhs = a.T @ y + lam * w0.T.astype(np.float64)  # [K(+1), Cout]
    k = w.shape[1]
    mask = w != 0
    if mask.all():
        sol = np.linalg.solve(g, rhs).T
    else:
        sol = np.zeros((w.shape[0], g.shape[0]))
        for o in range(w.shape[0]):
            support = np.flatnonzero(np.concatenate([mask[o], [True] if bias else []]))
            if len(support) > max_masked:
                return w, None  # too large to solve per channel: leave it
            sol[o, support] = np.linalg.solve(g[np.ix_(support, support)], rhs[support, o])
    return sol[:, :k].astype(w.dtype), (sol[:, k].astype(w.dtype) if bias else None)
