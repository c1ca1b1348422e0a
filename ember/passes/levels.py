"""Optimization levels (-O0 .. -O3) as pipeline strings, and running a pipeline on a model."""

from __future__ import annotations

from typing import Iterable, Sequence

from ember.compiler import ir
from ember.errors import PassError
from ember.passes.manager import Instrument, Pass, PassContext, PassManager, parse_pipeline

LEVELS: dict[int, str] = {
    0: "",
    1: "cleanup",
    2: "cleanup,fold-pad,fold-batchnorm,fold-affine,merge-transposes,fuse-layernorm,fuse-gelu,fuse-silu,fuse-attention,hoist-quantize,drop-saturated-clips,int8-compute,"
       "cleanup",
}
LEVELS[3] = LEVELS[2]  # later issues (layout, quantization) extend -O3
DEFAULT_LEVEL = 2


def resolve_pipeline(pipeline: str | Sequence[Pass] | None = None, opt_level: int | None = None) -> list[Pass]:
    """An explicit pipeline wins; else the -O level's pipeline (default -O2)."""
    if pipeline is not None:
        return parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
    level = DEFAULT_LEVEL if opt_level is None else opt_level
    if level not in LEVELS:
        raise PassError(f"no optimization level -O{level}; levels are {', '.join(f'-O{k}' for k in LEVELS)}")
    return parse_pipeline(LEVELS[level])


def optimize(model: ir.Model, pipeline: str | Sequence[Pass] | None = None, *, opt_level: int | None = None,
             instruments: Sequence[Instrument] = (), disabled: Iterable[str] = (),
             verify_each: bool = True) -> list[Pass]:
    """Run a pipeline (or the -O level's) on the IR in place; returns the passes run."""
    passes = resolve_pipeline(pipeline, opt_level)
    model.verify()
    ctx = PassContext(disabled=frozenset(disabled), instruments=tuple(instruments), verify_each=verify_each)
    PassManager(passes, ctx).run(model)
    return passes
