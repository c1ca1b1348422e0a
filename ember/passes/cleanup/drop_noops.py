"""Remove operators that do nothing on the shapes and values they get:
Reshape/Expand to the same shape, identity Transpose, Cast to the same type,
Pad by zero, full Slice (steps of 1), single-input Concat, Add/Sub of zero, Mul/Div by one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph, Node, const_array, static_shape
from ember.passes.manager import Pass, register_pass




def _same_shape(node: Node) -> bool:
    a, b = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    return a is not None and a == b


def _forward_steps(node: Node) -> bool:
    """Whether a Slice's steps are known to be all 1 (none given means 1)."""
    if len(node.inputs) < 5 or node.inputs[4] is None:
        return True
    steps = const_array(node.inputs[4])
    return steps is not None and bool(np.all(steps == 1))


def _noop_input(node: Node) -> int | None:
    """Index of the input a no-op node passes through unchanged, or None."""
    op, ins = node.op_type, node.inputs
    if not ins or ins[0] is None:
        return None
    x, y = ins[0], node.outputs[0]
    if op == "Slice" and not _forward_steps(node):
        return None  # a reversed slice keeps the shape and reorders the values (torch.flip)
    if op in ("Reshape", "Expand", "Flatten", "Squeeze", "Unsqueeze", "Slice"):
        return 0 if _same_shape(node) and x.dtype == y.dtype else None
    if op == "Transpose":
        perm = node.attrs.get("perm")
        return 0 if perm is not None and list(perm) == sorted(perm) else None
    if op == "Cast":
        return 0 if x.dtype and x.dtype == node.attrs.get("to") else None
    if op == "Pad":
        pads = const_array(ins[1]) if len(ins) > 1 else np.asarray(node.attrs.get("pads", [1]))
        return 0 if pads is not None and not np.any(pads) else None
    if op == "Concat":
        return 0 if len(ins) == 1 else None
    if op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
        neutral = 0 if op in ("Add", "Sub") else 1
        for keep in ((0, 1) if op in ("Add", "Mul") else (0,)):
            c, kept = const_array(ins[1 - keep]), ins[keep]
            if (c is not None and c.size > 0 and np.all(c == neutral) and kept.dtype == y.dtype
                    and static_shape(kept) is not None and static_shape(kept) == static_shape(y)):
                return keep
    return None


@register_pass
@dataclass(frozen=True)
class DropNoops(Pass):
    """Remove Reshape/Transpose/Cast/Pad/Slice/Concat/arithmetic that change nothing."""

    name: ClassVar[str] = "drop-noops"

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            for node in list(g.nodes):
                if node.domain not in ("", "ai.onnx") or node.graph is not g:
                    continue
                keep = _noop_input(node)
                if keep is not None:
                    changed |= g.forward(node, in_index=keep)
        return changed
