"""Graph inputs whose values TVM needs at compile time, and binding them.

Some operands decide shapes, so TVM must know them when it compiles: a
Reduce's axes, Resize's scales and sizes, Reshape's shape, TopK's k, Pad's
pads, ... (CONST_OPERANDS: the ones TVM 0.27 refuses as run-time tensors).
Usually they are initializers, or computed from constants and shapes, and the
passes fold them. When one is computed from a graph input's *values*, the
model can only be compiled for given values of that input:

- `needed_inputs(model)` names those inputs and why;
- `bind(model, values)` folds given values in, as initializers;
- `Specializing` compiles one model per distinct value set at run time (the
  ONNX backend's prepare/run), and says so once; never a wrong shape.

`fix_shapes(model, shapes)` does the same for shapes: it writes fixed sizes
for symbolic input dims (`--input-shape`, `input_shapes=`), everywhere the
same symbol appears, and infers the graph's shapes again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.ir import onnx_io
from ember.errors import CompileError, RuntimeInputError

_REDUCE = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Squeeze", "Unsqueeze")
CONST_OPERANDS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in _REDUCE},
    "Reshape": (1,), "OneHot": (1, 2), "CumSum": (1,), "CumProd": (1,), "Split": (1,), "TopK": (1,), "Upsample": (1,),
    "AffineGrid": (1,), "Resize": (1, 2, 3), "Pad": (1, 2, 3), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "MaxUnpool": (2,), "NonMaxSuppression": (2, 3, 4), "DFT": (1, 2), "STFT": (1, 3),
    "Loop": (0, 1), "Col2Im": (1, 2), "SplitToSequence": (1,),
}
MAX_ELEMENTS = 4096  # inputs bigger than this are data, not parameters
MAX_VARIANTS = 16  # distinct value sets one Specializing model compiles before it refuses


class NeedsInputValues(CompileError):
    """The model can only be compiled with the values of some graph inputs."""

    def __init__(self, needed: dict[str, str]):
        self.needed = needed
        names = ", ".join(f"{name!r} ({why})" for name, why in needed.items())
        first = next(iter(needed))
        what = "input" if len(needed) == 1 else "inputs"
        super().__init__(f"{what} {names} must be known at compile time: give the value "
                         f"(--bind {first}=V[,V...] on the command line, or bind={{{first!r}: ...}})")


def _operand_name(op: str, index: int, opset: int) -> str:
    try:
        formal = onnx.defs.get_schema(op, opset, "").inputs
        return formal[min(index, len(formal) - 1)].name
    except (onnx.defs.SchemaError, IndexError):
        return f"input {index}"


def _small(v: ir.Value) -> bool:
    """A scalar or a short vector: a parameter, not data."""
    if v.shape is None or len(v.shape) > 1:
        return False
    return not v.shape or not isinstance(v.shape[0], int) or v.shape[0] <= MAX_ELEMENTS


def _sources(value: ir.Value, inputs: set[int]) -> list[ir.Value]:
    """The graph inputs whose values `value` is computed from (shapes do not count)."""
    found, stack, seen = [], [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen or v.const is not None:
            continue
        seen.add(id(v))
        if id(v) in inputs:
            found.append(v)
            continue
        p = v.producer
        if p is None or p.op_type in ("Shape", "Size"):
            continue
        stack.extend(x for x in p.inputs if x is not None)
    return found


def needed_inputs(model: ir.Model) -> dict[str, str]:
    """{input name: why} for the graph inputs whose values TVM needs at compile time."""
    g = model.graph
    inputs = {id(v) for v in g.inputs if v.const is None}
    needed: dict[str, str] = {}
    for node in g.all_nodes():
        if node.domain not in ("", "ai.onnx"):
            continue
        for i in CONST_OPERANDS.get(node.op_type, ()):
            operand = node.inputs[i] if i < len(node.inputs) else None
            if operand is None or operand.const is not None:
                continue
            for v in _sources(operand, inputs):
                if _small(v):
                    needed.setdefault(v.name, f"{node.op_type}'s {_operand_name(node.op_type, i, model.opset)}")
    return needed


def _as_value_of(v: ir.Value, value: Any) -> np.ndarray:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(v.dtype) if v.dtype else None
    raw = np.asarray(value)
    arr = raw.astype(dtype) if dtype is not None else raw
    if raw.dtype.kind in "fc" and arr.dtype.kind in "iub" and not np.array_equal(arr, raw):
        raise CompileError(f"input {v.name!r} is {arr.dtype}; cannot bind {raw.tolist()}")
    if v.shape is not None:
        if len(v.shape) == 0 and arr.size == 1:
            arr = arr.reshape(())
        elif len(v.shape) == 1 and arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != len(v.shape) or any(isinstance(d, int) and d != s for d, s in zip(v.shape, arr.shape)):
            want = "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in v.shape) + "]"
            raise CompileError(f"input {v.name!r} has shape {want}; cannot bind a value of shape {list(arr.shape)}")
    return arr


def _runtime_inputs(model: ir.Model, names, what: str) -> dict[str, ir.Value]:
    """The model's run-time inputs by name; a CompileError naming the first of `names` it lacks."""
    by_name = {v.name: v for v in model.graph.inputs if v.const is None}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise CompileError(f"cannot {what} {unknown[0]!r}: the model has no such input "
                           f"(inputs: {', '.join(by_name) or 'none'})")
    return by_name


def bind(model: ir.Model, values: Mapping[str, Any]) -> ir.Model:
    """A new model with the given graph inputs replaced by constants of these values."""
    by_name = _runtime_inputs(model, values, "bind")
    arrays = {name: _as_value_of(by_name[name], value) for name, value in values.items()}
    proto = onnx_io.export_model(model)
    keep = [vi for vi in proto.graph.input if vi.name not in arrays]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(a, name) for name, a in arrays.items())
    return onnx_io.import_model(proto)


def _input_dims(v: ir.Value, dims: Any) -> tuple[int, ...]:
    try:
        fixed = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise CompileError(f"input shape for {v.name!r}: expected a list of sizes, got {dims!r}") from None
    shown = "[" + ", ".join("?" if d is None else str(d) for d in (v.shape or ())) + "]"
    if any(d < 0 for d in fixed):
        raise CompileError(f"input shape for {v.name!r}: sizes must not be negative, got {list(fixed)}")
    if v.shape is not None and len(v.shape) != len(fixed):
        raise CompileError(f"input {v.name!r} has {len(v.shape)} dims {shown}; the shape given has "
                           f"{len(fixed)}: {list(fixed)}")
    clash = next((i for i, (d, s) in enumerate(zip(v.shape or (), fixed)) if isinstance(d, int) and d != s), None)
    if clash is not None:
        raise CompileError(f"input {v.name!r} has shape {shown}: its dim {clash} is {v.shape[clash]}, "
                           f"not {fixed[clash]}")
    return fixed


def fix_shapes(model: ir.Model, shapes: Mapping[str, Any]) -> ir.Model:
    """A new model whose inputs have the given static shapes; every other value
    with one of their symbolic dims gets the same size, and shapes are inferred again."""
    by_name = _runtime_inputs(model, shapes, "set the shape of")
    fixed = {name: _input_dims(by_name[name], dims) for name, dims in shapes.items()}
    symbols: dict[str, tuple[int, str]] = {}  # symbol -> (size, the input that gave it)
    for name, dims in fixed.items():
        for d, size in zip(by_name[name].shape or (), dims):
            if isinstance(d, str) and d:
                seen = symbols.setdefault(d, (size, name))
                if seen[0] != size:
                    raise CompileError(f"dim {d!r} is {seen[0]} in input {seen[1]!r} but {size} in {name!r}")
    proto = onnx_io.export_model(model)
    for vi in proto.graph.input:
        if vi.name in fixed:
            del vi.type.tensor_type.shape.dim[:]
            for size in fixed[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = size
    for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ():
            if d.HasField("dim_param") and d.dim_param in symbols:
                d.dim_value = symbols[d.dim_param][0]
    onnx_io.keep_static_value_info(proto)  # intermediate shapes are inferred again from the new input shapes
    return onnx_io.import_model(proto)


class Specializing:
    """A model compiled at its first run, for the values its value-dependent
    inputs have then, and again for each new set of values (up to MAX_VARIANTS)."""

    def __init__(self, compile_fn: Callable[[dict[str, np.ndarray]], Any], needed: dict[str, str],
                 input_names: list[str], output_names: list[str]):
        self._compile, self.needed = compile_fn, needed
        self.input_names, self.output_names = input_names, output_names
        self.variants: dict[tuple, Any] = {}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.needed if n not in feeds]
        if missing:
            raise RuntimeInputError(f"missing input {missing[0]!r}")
        values = {n: np.asarray(feeds[n]) for n in self.needed}
        key = tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in values.items())
        compiled = self.variants.get(key)
        if compiled is None:
            if len(self.variants) >= MAX_VARIANTS:
                raise RuntimeInputError(f"{MAX_VARIANTS} sets of values for {', '.join(self.needed)} compiled "
                                        "already; compile for fixed values with bind= instead")
            shown = ", ".join(f"{n}={a.tolist()}" for n, a in values.items())
            warnings.warn(f"compiling for {shown} ({'; '.join(f'{n}: {w}' for n, w in self.needed.items())} "
                          "must be known at compile time); other values compile again", stacklevel=2)
            compiled = self.variants[key] = self._compile(values)
        return compiled.run({n: a for n, a in feeds.items() if n not in self.needed})
