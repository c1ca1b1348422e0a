"""Common-subexpression elimination: identical nodes on identical inputs
compute once; identical small constants are stored once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph, Node
from ember.passes.manager import Pass, register_pass

from ember.passes.cleanup.fold_constants import NONDETERMINISTIC


def _attr_key(value) -> object:
    if isinstance(value, list):
        return tuple(_attr_key(v) for v in value)
    if hasattr(value, "to_proto"):
        return ("tensor", hashlib.sha256(value.to_proto("").SerializeToString()).hexdigest())
    if hasattr(value, "SerializeToString"):
        return ("proto", value.SerializeToString())
    return value


def _key(node: Node):
    return (node.domain, node.op_type, tuple(id(v) if v is not None else None for v in node.inputs),
            len(node.outputs), tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))


@register_pass
@dataclass(frozen=True)
class CommonSubexpressionElimination(Pass):
    """Merge identical nodes and identical constants (up to `max_const_bytes`)."""

    name: ClassVar[str] = "cse"
    max_const_bytes: int = 1 << 16

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            changed |= self._dedupe_constants(g)
            seen: dict = {}
            for node in list(g.nodes):
                if node.op_type in NONDETERMINISTIC or any(True for _ in node.subgraphs()):
                    continue
                key = _key(node)
                first = seen.setdefault(key, node)
                if first is node:
                    continue
                if any(g.is_output(o) for o in node.outputs):
                    continue
                for dup, keep in zip(node.outputs, first.outputs):
                    g.replace_all_uses(dup, keep)
                g.remove(node)
                changed = True
        return changed

    def _dedupe_constants(self, g: Graph) -> bool:
        seen: dict = {}
        changed = False
        input_ids = {id(v) for v in g.inputs}
        for v in list(g.initializers.values()):
            if id(v) in input_ids or g.is_output(v) or v.const.nbytes > self.max_const_bytes:
                continue
            t = v.const
            key = (t.dtype, t.shape, t.numpy().tobytes())
            first = seen.setdefault(key, v)
            if first is not v:
                g.replace_all_uses(v, first)
                changed = True
        return changed
