"""The input phase as passes, run by a PassManager with the compile's
instruments, so `--dump-ir-after` and `--print-pass-times` show it too.

These steps are not in the pass registry: they are the driver's, not options
of a pipeline (a pipeline must not be able to leave out validation), and some
take values no pipeline string can hold (the bound inputs, the backend's
choice of which nodes to expand)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from ember.compiler import ir
from ember.compiler.input import functions, specialize, symbols, unroll
from ember.compiler.input.validate import Limits, validate
from ember.compiler.ir import onnx_io
from ember.passes.manager import Pass


@dataclass(frozen=True)
class BindInputs(Pass):
    """Graph inputs given values become constants (`bind=` / `--bind`)."""

    name: ClassVar[str] = "bind-inputs"
    values: Mapping[str, Any] = field(default_factory=dict)

    def run_model(self, model: ir.Model) -> bool:
        if not self.values:
            return False
        model.assign(specialize.bind(model, self.values))
        return True

    def __str__(self) -> str:  # the names, not the arrays
        return self.name + ("{" + ";".join(self.values) + "}" if self.values else "")


@dataclass(frozen=True)
class SetInputShapes(Pass):
    """Symbolic input dims fixed to the sizes given (`input_shapes=` / `--input-shape`)."""

    name: ClassVar[str] = "set-input-shapes"
    shapes: Mapping[str, Any] = field(default_factory=dict)

    def run_model(self, model: ir.Model) -> bool:
        if not self.shapes:
            return False
        model.assign(specialize.fix_shapes(model, self.shapes))
        return True

    def __str__(self) -> str:
        return self.name + ("{" + ";".join(f"{k}={list(v)}" for k, v in self.shapes.items()) + "}"
                            if self.shapes else "")


@dataclass(frozen=True)
class Validate(Pass):
    """Refuse hostile or broken models before anything is allocated (`validate.py`)."""

    name: ClassVar[str] = "validate"
    memory_budget: int = 0

    def run_model(self, model: ir.Model) -> bool:
        validate(model, Limits(memory_budget=self.memory_budget) if self.memory_budget else Limits())
        return False


@dataclass(frozen=True)
class ExpandFunctions(Pass):
    """Nodes the backend wants expanded (`wanted(node)`) replaced by their ONNX function bodies."""

    name: ClassVar[str] = "expand-functions"
    wanted: Callable[[ir.Node], bool] = lambda node: False

    def run_model(self, model: ir.Model) -> bool:
        expanded = functions.expand(model, self.wanted)
        if expanded is model:
            return False
        model.assign(expanded)
        return True

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class UnrollLoops(Pass):
    """Scan and Loop unrolled where their trip counts are known (`unroll.py`)."""

    name: ClassVar[str] = "unroll-loops"

    def run_model(self, model: ir.Model) -> bool:
        unrolled = unroll.unroll(model)
        if unrolled is model:
            return False
        model.assign(unrolled)
        return True


@dataclass(frozen=True)
class TieRangeLengths(Pass):
    """Range(0, x.shape[i], 1) is as long as x's dim i: said, and shapes inferred again (`symbols.py`)."""

    name: ClassVar[str] = "tie-range-lengths"

    def run_model(self, model: ir.Model) -> bool:
        return symbols.tie_range_lengths(model)


@dataclass(frozen=True)
class RequireInputValues(Pass):
    """Refuse, naming them, graph inputs whose values TVM needs at compile time."""

    name: ClassVar[str] = "require-input-values"

    def run_model(self, model: ir.Model) -> bool:
        needed = specialize.needed_inputs(model)
        if needed:
            raise specialize.NeedsInputValues(needed)
        return False


@dataclass(frozen=True)
class InferShapes(Pass):
    """Shape inference again where folding may have made shapes known that inference has
    not seen (a Pad whose pads became constants; `_shapes_left`)."""

    name: ClassVar[str] = "infer-shapes"

    def run_model(self, model: ir.Model) -> bool:
        if not _shapes_left(model):
            return False
        proto = onnx_io.export_model(model)
        onnx_io.keep_static_value_info(proto)
        model.assign(onnx_io.import_model(proto))
        symbols.tie_range_lengths(model)  # inference named their lengths anew
        return True


def _shapes_left(m: ir.Model) -> bool:
    """Whether a Shape or Size node reads a value whose shape is not known, or a value's shape
    holds a dim no input has (onnx named it while an operand, now folded, was unknown: the
    channels after a Pad whose pads were computed)."""
    named = {d for v in m.graph.inputs if v.shape is not None for d in v.shape if isinstance(d, (int, str))}
    for n in m.graph.nodes:
        if n.op_type in ("Shape", "Size") and n.inputs[0] is not None and ir.static_shape(n.inputs[0]) is None:
            return True
        for v in n.outputs:
            if v.shape is not None and any(not isinstance(d, int) and d not in named for d in v.shape):
                return True
    return False


def input_passes(bind: Mapping[str, Any] | None, memory_budget: int | None,
                 wanted: Callable[[ir.Node], bool], input_shapes: Mapping[str, Any] | None = None) -> list[Pass]:
    """The steps between import and the pass pipeline, in order."""
    return [BindInputs(dict(bind or {})), SetInputShapes(dict(input_shapes or {})), Validate(memory_budget or 0),
            ExpandFunctions(wanted), UnrollLoops(), TieRangeLengths(), RequireInputValues()]
