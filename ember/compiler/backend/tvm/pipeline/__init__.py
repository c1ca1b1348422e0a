"""The Relax -> TIR pipeline Ember compiles with, per target kind.

It is TVM's own default pipeline (library dispatch, legalization, fusion,
dataflow lowering, memory planning) with Ember's pieces put in. Each target
kind is one module exposing the same names (`cpu.py`, `cuda.py`: its TVM
pipeline, legalization overrides, layout passes, default schedule, how
run-time checks are made); `for_target` picks it, and nothing else branches
on the kind:

- CPU: convolutions are converted to NHWC (channels innermost: the vector
  dimension of Ember's kernels), conv2d / depthwise conv2d / matmul are
  legalized into Ember's GEMM kernels (`kernels.py`), and every PrimFunc
  that no tuning record covers gets Ember's default schedule
  (`schedule.py`);
- CUDA: 8-bit conv2d / matmul are legalized into dp4a kernels (`dp4a.py`),
  and TVM's dlight GPU rules schedule what no tuning record covers;
- all targets: Relu and Clip keep NaN, as ONNX specifies (TVM's lower to
  max/min, which drop it), and BitShift by out-of-range amounts gives what
  ONNX specifies (LLVM leaves it undefined).

`database` (a MetaSchedule database) applies tuned schedules first.
"""

from __future__ import annotations

from types import ModuleType

from ember.compiler.backend.tvm import parallel_guard
from ember.compiler.backend.tvm.broadcast_operands import isolate_broadcast_operands
from ember.compiler.backend.tvm.pipeline import cpu, cuda
from ember.compiler.backend.tvm.pipeline.common import _fold_integer_offsets
from ember.compiler.backend.tvm.schedule import default_schedule_pass

KINDS: dict[str, ModuleType] = {"llvm": cpu, "cuda": cuda}


def for_target(target) -> ModuleType:
    """The module of an ember Target's kind (None: a CPU)."""
    return cpu if target is None else KINDS[target.kind]


def relax_pipeline(target, database=None, counts: dict[str, int] | None = None,
                   flops: dict[str, float] | None = None, precision: str = "fp32"):
    """The module pass tvm.compile runs for an ember Target; `counts` receives
    how many kernels a tuning record scheduled ("tuned") and how many got the
    default schedule ("default"); `flops` each kernel's floating-point and
    integer operations per call, where its shapes are static (`ember profile`);
    `precision` bf16 computes the GEMMs on bfloat16 operands (`legalize_passes`)."""
    import tvm
    from tvm import relax

    kind = for_target(target)
    tvm_target = target.tvm_target()

    def scheduling() -> list:
        passes = []
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        passes.append(default_schedule_pass(counts, kind.schedule_func(tvm_target)))
        return passes + [parallel_guard.guard_pass()]

    @tvm.transform.module_pass(opt_level=0, name="EmberPipeline")
    def _pipeline(mod, _ctx):
        with tvm_target:
            seq = tvm.transform.Sequential(
                legalize_passes(target, precision)
                + ([_record_flops(flops)] if flops is not None else [])
                + scheduling()
                + kind.tvm_pipeline.dataflow_lower_passes(tvm_target)
                + kind.tvm_pipeline.finalize_passes(tvm_target)
                + [_noalias_shape_functions()])
            if database is not None:
                with database:
                    return seq(mod)
            return seq(mod)

    return _pipeline


def legalize_passes(target, precision: str = "fp32") -> list:
    """Everything up to (not including) scheduling: the module MetaSchedule extracts its tasks from
    (`precision`: what the GEMMs compute in, see `relax_pipeline`)."""
    from tvm import relax

    kind = for_target(target)
    tvm_target = target.tvm_target()
    return [_fold_integer_offsets(), *kind.layout_passes(),
            *kind.tvm_pipeline.library_dispatch_passes(tvm_target),
            relax.transform.LegalizeOps(kind.legalize_overrides(target, precision)),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            isolate_broadcast_operands(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            # reshapes become views before scheduling: a scheduled one no longer reads as a reshape, and
            # its index arithmetic over symbolic dims takes LLVM codegen's simplifier minutes
            relax.transform.RewriteDataflowReshape()]


def _record_flops(flops: dict[str, float]):
    """A pass that fills `flops` with TVM's operation count of each PrimFunc whose
    shapes are static (before scheduling: the loops as legalization wrote them, so
    the lanes a packed weight panel pads are counted too)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    @tvm.transform.module_pass(opt_level=0, name="EmberRecordFlops")
    def record(mod, _ctx):
        for gv, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc):
                try:
                    flops[gv.name_hint] = float(estimate_tir_flops(tvm.IRModule({"main": func})))
                except Exception:  # symbolic extents, opaque loops: no count
                    pass
        return mod

    return record


def _noalias_shape_functions():
    """A pass that marks the PrimFuncs VMShapeLower makes (one pointer parameter, the
    VM's shape heap) `tir.noalias`, as every kernel is. With such a function in the
    module, TVM's LLVM codegen gave every buffer of every kernel one TBAA alias class
    (seen in ResNet-50 over a symbolic batch; not in every small model): accumulators
    were stored and weights reloaded at every step of a reduction, 2.5x slower."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="EmberNoaliasShapeFunctions")
    def mark(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if (isinstance(func, tvm.tirx.PrimFunc) and not (func.attrs and func.attrs.get("tirx.noalias"))
                    and sum(1 for p in func.params if p.dtype == "handle") <= 1):
                mod[gv] = func.with_attr("tirx.noalias", True)
        return mod

    return mark
