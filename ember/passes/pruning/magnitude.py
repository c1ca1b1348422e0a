"""Unstructured magnitude pruning and N:M sparsity of Conv / Gemm / MatMul weights.

Zeros alone do not make dense kernels faster: what they buy is a smaller
compressed file (and N:M patterns that sparse tensor hardware can use).
`ember prune` reports the compressed size; no speed is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.errors import PassError
from ember.compiler.ir import Graph, Node
from ember.passes.manager import Pass, register_pass

from ember.passes.pruning.channels import set_const

LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def weight_layers(graph: Graph) -> list[Node]:
    """Layers with a constant floating-point weight of rank >= 2."""
    out = []
    for n in graph.nodes:
        w = n.inputs[1] if n.op_type in LAYERS and len(n.inputs) > 1 else None
        if w is not None and w.const is not None and len(w.const.shape) >= 2:
            if w.const.numpy().dtype.kind == "f":
                out.append(n)
    return out


def reduction_axis(node: Node) -> int:
    """The weight axis a layer sums over (where N:M groups run)."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "ConvTranspose":
        return 0
    if node.op_type == "Gemm":
        return 1 if node.attrs.get("transB", 0) else 0
    return 0  # MatMul [K, N]


def magnitude_mask(w: np.ndarray, sparsity: float, threshold: float | None = None) -> np.ndarray:
    """True where a weight survives: all but the `sparsity` fraction smallest in |w|
    (or those above a global `threshold`)."""
    a = np.abs(w)
    if threshold is None:
        k = int(round(sparsity * a.size))
        if k == 0:
            return np.ones(w.shape, dtype=bool)
        threshold = np.partition(a.reshape(-1), k - 1)[k - 1]
        mask = a > threshold
        # ties at the threshold: drop just enough of them
        ties = np.flatnonzero((a == threshold).reshape(-1))
        need = a.size - k - int(mask.sum())
        if need > 0:
            mask.reshape(-1)[ties[:need]] = True
        return mask
    return a > threshold


def nm_mask(w: np.ndarray, n: int, m: int, axis: int) -> np.ndarray | None:
    """N:M: in every group of M consecutive weights along `axis`, the N largest
    survive. None when the axis length is not a multiple of M."""
    if w.shape[axis] % m:
        return None
    moved = np.moveaxis(np.abs(w), axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (w.shape[axis] // m, m))
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


@register_pass
@dataclass(frozen=True)
class PruneMagnitude(Pass):
    """Zero the `sparsity` fraction of smallest-magnitude weights, per layer
    (scope=layer) or with one threshold over all layers (scope=global)."""

    name: ClassVar[str] = "prune-magnitude"
    sparsity: float = 0.5
    scope: str = "layer"

    def run(self, graph: Graph) -> bool:
        if not 0.0 <= self.sparsity < 1.0:
            raise PassError(f"prune-magnitude: sparsity must be in [0, 1), got {self.sparsity}")
        if self.scope not in ("layer", "global"):
            raise PassError(f"prune-magnitude: scope must be layer or global, got {self.scope!r}")
        layers = weight_layers(graph)
        threshold = None
        if self.scope == "global" and layers:
            allw = np.concatenate([np.abs(n.inputs[1].const.numpy()).reshape(-1) for n in layers])
            k = int(round(self.sparsity * allw.size))
            threshold = np.partition(allw, k - 1)[k - 1] if k else -1.0
        changed = False
        for n in layers:
            w = n.inputs[1].const.numpy()
            mask = magnitude_mask(w, self.sparsity, threshold)
            if not mask.all() and (w[~mask] != 0).any():
                set_const(graph, n, 1, np.where(mask, w, 0))
                changed = True
        if changed:
            graph.remove_unused_initializers()
        return changed


@register_pass
@dataclass(frozen=True)
class PruneNM(Pass):
    """N:M sparsity (2:4 by default): in every M consecutive weights along a
    layer's reduction axis, only the N largest stay. Layers whose reduction
    axis is not a multiple of M are left dense."""

    name: ClassVar[str] = "prune-nm"
    n: int = 2
    m: int = 4

    def run(self, graph: Graph) -> bool:
        if not 0 < self.n <= self.m:
            raise PassError(f"prune-nm: need 0 < n <= m, got {self.n}:{self.m}")
        changed = False
        for node in weight_layers(graph):
            w = node.inputs[1].const.numpy()
            mask = nm_mask(w, self.n, self.m, reduction_axis(node))
            if mask is not None and not mask.all() and (w[~mask] != 0).any():
                set_const(graph, node, 1, np.where(mask, w, 0))
                changed = True
        if changed:
            graph.remove_unused_initializers()
        return changed
