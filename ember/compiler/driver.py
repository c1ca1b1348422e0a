"""The compile driver: model -> IR -> passes -> Relax -> built CompiledModel.

`compile()` is the one entry point the CLI, the Python API and the ONNX
backend share.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.backend.tvm import lower
from ember.compiler.input import phase
from ember.compiler.ir.onnx_io import as_ir
from ember.compiler.runtime.artifact import FORMAT_VERSION, CompiledModel
from ember.errors import UnsupportedError
from ember.passes import optimize  # importing ember.passes registers the built-in passes
from ember.passes.manager import Instrument, Pass, PassContext, PassManager, format_pipeline


def _dtype_name(v: ir.Value) -> str:
    if not v.dtype:
        return ""
    return onnx.helper.tensor_dtype_to_np_dtype(v.dtype).name



def signature(graph: ir.Graph) -> tuple[list[dict], list[dict]]:
    def spec(v: ir.Value) -> dict[str, Any]:
        if lower.is_tensor_sequence(v):  # a list of tensors at run time
            elem = v.type_proto.sequence_type.elem_type.tensor_type.elem_type
            return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "",
                    "shape": None, "sequence": True}
        return {"name": v.name, "dtype": _dtype_name(v),
                "shape": None if v.shape is None else [d if isinstance(d, int) else (d or None) for d in v.shape]}

    return [spec(v) for v in graph.inputs if v.const is None], [spec(v) for v in graph.outputs]


def lower_model(model: Any, tgt, pipeline: str | Sequence[Pass] | None = None, *, opt_level: int | None = None,
                memory_budget: int | None = None, instruments: Sequence[Instrument] = (),
                disabled: Iterable[str] = (), verify_each: bool = True,
                say: Callable[[str], None] = lambda msg: None, bind: dict[str, Any] | None = None,
                input_shapes: dict[str, Sequence[int]] | None = None):
    """Import, validate, optimize and lower to Relax: (IR model, Relax module, passes run).
    `bind` gives values to graph inputs, which become constants; `input_shapes`
    fixes symbolic input dims."""
    m, passes = optimized_model(model, tgt, pipeline, opt_level=opt_level, memory_budget=memory_budget,
                                instruments=instruments, disabled=disabled, verify_each=verify_each, say=say,
                                bind=bind, input_shapes=input_shapes)
    say(f"lowering to Relax ({len(m.graph.nodes)} nodes)")
    m.extra["signature"] = signature(m.graph)  # lowering may store values in other types (narrow.py)
    _leave_out_empty_outputs(m)
    return m, lower.to_relax(m, tgt), passes


def optimized_model(model: Any, tgt, pipeline: str | Sequence[Pass] | None = None, *,
                    opt_level: int | None = None, memory_budget: int | None = None,
                    instruments: Sequence[Instrument] = (), disabled: Iterable[str] = (),
                    verify_each: bool = True, say: Callable[[str], None] = lambda msg: None,
                    bind: dict[str, Any] | None = None, input_shapes: dict[str, Sequence[int]] | None = None):
    """The graph half of `lower_model`: import, the input phase and the pipeline; returns
    (IR model, passes run). The graph it leaves is still one onnxruntime runs."""
    say("importing model")
    m = as_ir(model)
    # the input phase: its own steps (not a pipeline's: none can be disabled), errors as they are
    steps = PassContext(instruments=tuple(instruments), verify_each=False, name_failing_pass=False)
    PassManager(phase.input_passes(bind, memory_budget, lower.needs_body, input_shapes), steps).run(m)
    say(f"optimizing ({len(m.graph.nodes)} nodes)")
    passes = optimize(m, pipeline, opt_level=opt_level, instruments=instruments, disabled=disabled,
                      verify_each=verify_each)
    # folding can expose more inputs needed at compile time (an If's branch, once inlined), and
    # make shapes static that shape inference has not seen: infer again and fold what that allows
    folded = any(p.name in ("cleanup", "fold-shapes") for p in passes)
    after = [phase.RequireInputValues()] + ([phase.InferShapes()] if folded else [])
    if PassManager(after, steps).run(m):
        optimize(m, "cleanup", instruments=instruments, disabled=disabled, verify_each=verify_each)
    integer = sum(1 for n in m.graph.nodes if n.op_type in ("ConvInteger", "MatMulInteger"))
    if integer:
        from ember.compiler.backend.tvm.intrinsics import available, describe

        dots = available(tgt)
        say(f"int8 compute: {integer} layers on integer kernels "
            f"({describe(dots) + ' dot products' if dots else 'int32 arithmetic: this target has no int8 dot product'})")
    return m, passes


def _leave_out_empty_outputs(m: ir.Model) -> None:
    """Outputs with no elements need no computing (TVM cannot even load the
    empty constants they fold to): they leave the lowered graph, and the
    artifact returns them as empty arrays of their shape (spec "empty")."""
    empty = [v for v in m.graph.outputs if v.is_empty]
    if not empty:
        return
    _, specs = m.extra["signature"]
    for spec, v in zip(specs, m.graph.outputs):
        spec["empty"] = any(v is e for e in empty)
    kept = [v for v in m.graph.outputs if not any(v is e for e in empty)]
    if not kept:  # the function must return something: one byte, which the artifact ignores
        g = m.graph
        nothing = g.make_node("Identity", [g.make_const(np.zeros((), np.uint8), "nothing")]).outputs[0]
        nothing.dtype, nothing.shape = onnx.TensorProto.UINT8, ()
        kept = [nothing]
    m.graph.outputs = kept
    optimize(m, "dce")


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, tgt) -> None:
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and tgt.kind != "llvm":
        raise UnsupportedError(f"precision bf16 is for CPU targets; {tgt.describe()} computes in fp32")


def describe_precision(precision: str, tgt) -> str:
    """For people: what a precision computes on this target."""
    from ember.compiler.backend.tvm.intrinsics import bf16_available

    dots = bf16_available(tgt)
    how = (f"on {dots[0].label}" if dots else
           "converted to fp32 in the kernels (this target has no bf16 dot product: smaller weights, no faster)")
    return (f"precision {precision}: convolutions and matmuls by constant weights take bfloat16 operands, "
            f"sums in fp32, {how}; the rest stays fp32")


def compile(model: Any, target: str = "host", pipeline: str | Sequence[Pass] | None = None, *,
            opt_level: int | None = None, memory_budget: int | None = None, mcpu: str | None = None,
            features: str | Sequence[str] | None = None, db: str | os.PathLike | None = None,
            instruments: Sequence[Instrument] = (), disabled: Iterable[str] = (),
            verify_each: bool = True, progress: Callable[[str], None] | None = None,
            bind: dict[str, Any] | None = None,
            input_shapes: dict[str, Sequence[int]] | None = None, generic: bool = False,
            precision: str = "fp32") -> CompiledModel:
    """Compile an ONNX model (path, ModelProto or ember IR) for a target triple,
    with the tuned schedules of tuning database `db` where it has them. `bind`
    fixes graph inputs to values (needed where TVM must know them at compile
    time: a Reduce's axes, a Reshape's shape, ... given as graph inputs);
    `input_shapes` ({name: sizes}) specializes symbolic input dims, and the
    artifact then refuses other shapes. `generic` builds with TVM's own Relax
    pipeline instead of Ember's kernels and schedules (`ember debug` compares
    the two). `precision` "bf16" (CPU targets) runs convolutions and matmuls by
    constant weights on bfloat16 operands, weights stored in bfloat16 and sums
    in float32; everything else stays float32."""
    from ember import targets
    from ember.version import __version__

    from ember.autotune.database import TuningDatabase, model_key, tuned_slower

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    tgt = targets.parse(target, mcpu=mcpu, features=features)
    check_precision(precision, tgt)
    tgt.check_toolchain()
    database = TuningDatabase.open(db, tgt) if db is not None else None
    m, mod, passes = lower_model(model, tgt, pipeline, opt_level=opt_level, memory_budget=memory_budget,
                                 instruments=instruments, disabled=disabled, verify_each=verify_each, say=say,
                                 bind=bind, input_shapes=input_shapes)
    slower = database.end_to_end(model_key(mod, precision)) if database is not None else None
    if tuned_slower(slower):
        say(f"not using tuning database {db}: `ember tune` timed this model slower with its schedules "
            f"({slower['tuned_ms']:.3f} ms) than with the default ones ({slower['default_ms']:.3f} ms); "
            "tune longer to do better")
        database = None
    say(f"building for {tgt.describe()}")
    counts: dict[str, int] = {}
    # TVM counts a symbolic loop extent as 1: operation counts only where every input dim is static
    static = all(s["shape"] is not None and all(isinstance(d, int) for d in s["shape"])
                 for s in m.extra["signature"][0])
    flops: dict[str, float] | None = {} if static else None
    if precision != "fp32":
        say(describe_precision(precision, tgt))
    ex = lower.build(mod, tgt, database.ms_database() if database else None, counts, flops, generic=generic,
                     precision=precision)
    if database is not None:
        total = counts.get("tuned", 0) + counts.get("default", 0)
        say(f"schedules from tuning database {db} for {counts.get('tuned', 0)} of {total} kernels; "
            "default schedules for the rest")
    inputs, outputs = m.extra.pop("signature")
    meta = {
        "format_version": FORMAT_VERSION,
        "ember_version": __version__,
        "tvm_version": lower.tvm_version(),
        "target": tgt.to_json(),
        "pipeline": format_pipeline(passes),
        "inputs": inputs,
        "outputs": outputs,
        "source": str(model) if isinstance(model, (str, Path)) else "",
    }
    if flops:
        meta["kernel_flops"] = {k: flops[k] for k in sorted(flops)}
    if precision != "fp32":
        meta["precision"] = precision
    if input_shapes:
        meta["input_shapes"] = {k: [int(d) for d in v] for k, v in input_shapes.items()}
    if bind:
        meta["bound_inputs"] = {k: np.asarray(v).tolist() for k, v in bind.items()}
    if database is not None:
        meta["tuned_kernels"] = {"tuned": counts.get("tuned", 0), "default": counts.get("default", 0)}
    if tuned_slower(slower):
        meta["tuning_db_unused"] = {"default_ms": slower["default_ms"], "tuned_ms": slower["tuned_ms"]}
    cm = CompiledModel(ex, meta, executable=ex, target=tgt)
    cm.compile_seconds = time.perf_counter() - t0  # not in the metadata: artifacts stay byte-identical
    return cm
