"""Identity(x) -> x and inference-mode Dropout(x) -> x."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph, Node
from ember.passes.manager import Pass, register_pass


def _dropout_is_noop(n: Node) -> bool:
    training = n.inputs[2] if len(n.inputs) > 2 else None
    if training is None:  # inference semantics, whatever the old is_test attribute says
        return True
    return training.const is not None and not bool(np.asarray(training.const.numpy()).item())


@register_pass
@dataclass(frozen=True)
class DropIdentity(Pass):
    """Forward Identity nodes and Dropouts that are no-ops at inference
    (no training_mode, or a constant false one); a used Dropout mask stays."""

    name: ClassVar[str] = "drop-identity"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            for sub in node.subgraphs():
                changed |= self.run(sub)
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Identity" or (node.op_type == "Dropout" and _dropout_is_noop(node)):
                changed |= graph.forward(node)
        return changed
