"""Dead-code elimination: nodes none of whose outputs are used, and
initializers nothing reads. Graph inputs stay (they are the signature)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove nodes whose outputs nobody uses, then unused initializers."""

    name: ClassVar[str] = "dce"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in reversed(graph.nodes):
            for sub in node.subgraphs():
                changed |= self.run(sub)
            if not any(v.uses or graph.is_output(v) for v in node.outputs):
                graph.remove(node)
                changed = True
        return graph.remove_unused_initializers() or changed
