"""Cleanup family: passes that remove what a model does not need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.passes.manager import Pass, register_pass

from ember.passes.cleanup.cse import CommonSubexpressionElimination
from ember.passes.cleanup.dce import DeadCodeElimination
from ember.passes.cleanup.drop_identity import DropIdentity
from ember.passes.cleanup.drop_noops import DropNoops
from ember.passes.cleanup.fold_if import FoldIf
from ember.passes.cleanup.fold_constants import FoldConstants
from ember.passes.cleanup.fold_shapes import FoldShapes
from ember.passes.cleanup.prune_inputs import PruneInputs


@register_pass
@dataclass(frozen=True)
class Cleanup(Pass):
    """drop-identity, drop-noops, fold-shapes, fold-constants, fold-if, cse, dce until nothing changes."""

    name: ClassVar[str] = "cleanup"
    max_rounds: int = 8

    def run(self, graph: Graph) -> bool:
        members: list[Pass] = [DropIdentity(), DropNoops(), FoldShapes(), FoldConstants(), FoldIf(),
                               CommonSubexpressionElimination(), DeadCodeElimination()]
        changed = False
        for _ in range(self.max_rounds):
            round_changed = False
            for p in members:
                round_changed |= p.run(graph)
            changed |= round_changed
            if not round_changed:
                break
        return changed


__all__ = ["Cleanup", "CommonSubexpressionElimination", "DeadCodeElimination", "DropIdentity", "DropNoops",
           "FoldConstants", "FoldIf", "FoldShapes", "PruneInputs"]
