"""CUDA: 8-bit conv2d / matmul are legalized into dp4a kernels (`dp4a.py`),
and TVM's dlight GPU rules schedule what no tuning record covers."""

from __future__ import annotations

from typing import Any

from tvm.relax.backend.cuda import pipeline as tvm_pipeline  # noqa: F401  (the kind's TVM pipeline)

from ember.compiler.backend.tvm import dp4a
from ember.compiler.backend.tvm.pipeline.common import CONV2D, MATMUL, _default, _int8_operands, nan_safe_overrides

# run-time checks use Relax's assert_op: its flag sits in GPU memory, which only the VM reads
KERNEL_ASSERTS = False
DEVICE = "cuda"


def legalize_overrides(target, precision: str = "fp32") -> dict[str, Any]:
    return {**nan_safe_overrides(), CONV2D: _dp4a(CONV2D, target.int8_dot), MATMUL: _dp4a(MATMUL, target.int8_dot)}


def layout_passes() -> list:
    return []


def default_schedule(func, tvm_target):
    """The schedule (with its trace) dlight's rules give one PrimFunc, or None."""
    return gpu_default_schedule(func, tvm_target)


def schedule_func(tvm_target):
    return _gpu_schedule(tvm_target)


def _dp4a(op: str, native: bool):
    """An 8-bit conv2d / matmul on CUDA's dp4a kernels (dp4a.py); TVM's legalization otherwise."""
    def legalize(bb, call):
        x, w = call.args
        out = None
        if _int8_operands(x, w, call.attrs.out_dtype):
            out = (dp4a.legalize_conv2d(bb, call, x, w, native) if op == CONV2D
                   else dp4a.legalize_matmul(bb, x, w, native))
        return out if out is not None else _default(op)(bb, call)

    return legalize


def _gpu_rules() -> list:
    """dlight's GPU rules, each declining (instead of failing the build) a
    function its analysis asserts on: GEMV's does on a block that reads
    several elements of a buffer per iteration, as dp4a's word packing does."""
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.base import ScheduleRule

    class Declining(ScheduleRule):
        def __init__(self, rule):
            self.rule = rule

        def apply(self, func, target, tunable):
            try:
                return self.rule.apply(func, target, tunable)
            except Exception:  # the rule's analysis failed on this function: the next rule gets it
                return None

    rules = (dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction())
    return [*(Declining(r) for r in rules), dl.gpu.Fallback()]


def gpu_default_schedule(func, tvm_target):
    """The schedule (with its trace) dlight's rules give one PrimFunc, or None."""
    from tvm.s_tir.dlight.base.transform import _apply_rules

    with tvm_target:
        space = _apply_rules(func, tvm_target, _gpu_rules(), tunable=False)
    return space[0] if space else None


def _gpu_schedule(tvm_target):
    def schedule(func):
        sch = gpu_default_schedule(func, tvm_target)
        return func if sch is None else sch.mod["main"].with_attr("tirx.is_scheduled", True)

    return schedule
