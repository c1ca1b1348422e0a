"""Drop graph inputs nothing reads. This changes the model's signature, so it
is not part of any -O level; ask for it in a pipeline (`cleanup,prune-inputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class PruneInputs(Pass):
    """Remove unused graph inputs (and initializers that were also listed as inputs)."""

    name: ClassVar[str] = "prune-inputs"

    def run(self, graph: Graph) -> bool:
        dead = [v for v in graph.inputs if not v.uses and not graph.is_output(v)]
        if not dead:
            return False
        ids = {id(v) for v in dead}
        graph.inputs = [v for v in graph.inputs if id(v) not in ids]
        for v in dead:
            graph.initializers.pop(v.name, None)
        return True
