"""Cleanup family: passes that remove what a model does not need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.compiler.ir import Graph
from ember.compiler.pass_manager import Pass, register_pass

from .dce import DeadCodeElimination
from .drop_identity import DropIdentity


@register_pass
@dataclass(frozen=True)
class Cleanup(Pass):
    """The cleanup family run together until nothing changes."""

    name: ClassVar[str] = "cleanup"
    max_rounds: int = 8

    def run(self, graph: Graph) -> bool:
        members: list[Pass] = [DropIdentity(), DeadCodeElimination()]
        changed = False
        for _ in range(self.max_rounds):
            round_changed = False
            for p in members:
                round_changed |= p.run(graph)
            changed |= round_changed
            if not round_changed:
                break
        return changed


__all__ = ["Cleanup", "DeadCodeElimination", "DropIdentity"]
