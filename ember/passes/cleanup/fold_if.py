"""If with a constant condition -> the branch it takes, inlined.

Function bodies (the `_expanded` forms of ONNX's function ops, AffineGrid's
among them) choose between code paths with If on facts that folding makes
constant (the rank of an input, an attribute). TVM converts both branches
of an If and selects at run time, so a branch that only type-checks for
the other case fails the import; inlined, the dead branch is gone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class FoldIf(Pass):
    """If(constant condition) -> the taken branch's nodes in the enclosing graph."""

    name: ClassVar[str] = "fold-if"

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            for node in list(g.nodes):
                if node.op_type != "If" or node.domain not in ("", "ai.onnx") or node.graph is not g:
                    continue
                cond = node.inputs[0] if node.inputs else None
                if cond is None or cond.const is None or cond.const.numpy().size != 1:
                    continue
                branch = node.attrs["then_branch" if bool(cond.const.numpy().reshape(())) else "else_branch"]
                if any(True for n in branch.nodes for _ in n.subgraphs()):
                    continue  # nested subgraphs would be shared, not copied
                outs = g.inline_body(branch, [], before=node)
                if len(outs) != len(node.outputs) or any(o is None for o in outs):
                    continue
                for old, new in zip(node.outputs, outs):
                    g.substitute(old, new)
                g.remove(node)
                changed = True
        return changed
