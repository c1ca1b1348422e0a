"""Ember IR -> Relax IRModule -> built executable.

Standard operators go through TVM's own Relax ONNX frontend (one copy of the
conversion rules, not two). Before handing the graph over, Ember checks what
the frontend cannot take, so the user gets one clear message naming the node
instead of an error from deep inside TVM.
"""

from __future__ import annotations

import contextlib
import gc
import io
import warnings
from functools import lru_cache

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.backend.tvm import ember_ops, frontend_fixes, int8_lowering, missing_ops, narrow, recurrence, tir_pipeline
from ember.compiler.backend.tvm.intrinsics import available
from ember.compiler.backend.tvm.pipeline import for_target, relax_pipeline
from ember.compiler.backend.tvm.relax_util import same_dims
from ember.compiler.ir import custom_ops, onnx_io
from ember.compiler.runtime.native_stderr import quiet_native_stderr
from ember.errors import CompileError, UnsupportedError, first_line

STANDARD_DOMAINS = ("", "ai.onnx")
# TVM miscomputes or cannot hold these element types: refused, never silently wrong
SUB_BYTE_TYPES = frozenset(getattr(onnx.TensorProto, n) for n in (
    "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
    "FLOAT8E5M2FNUZ", "FLOAT8E8M0") if hasattr(onnx.TensorProto, n))


def _used(node: ir.Node, index: int) -> bool:
    if index >= len(node.outputs):
        return False
    v = node.outputs[index]
    return bool(v.uses) or (node.graph is not None and node.graph.is_output(v))


def _default_convtranspose_shape(node: ir.Node) -> bool:
    """Whether output_shape asks for the shape ConvTranspose gives anyway (TVM ignores the attribute)."""
    x, w = node.inputs[0], node.inputs[1]
    if x is None or w is None or x.shape is None or w.shape is None:
        return False
    spatial, kernel = list(x.shape[2:]), list(node.attrs.get("kernel_shape", w.shape[2:]))
    if not all(isinstance(d, int) for d in spatial + kernel):
        return False
    n = len(spatial)
    strides = node.attrs.get("strides", [1] * n)
    dil = node.attrs.get("dilations", [1] * n)
    outpad = node.attrs.get("output_padding", [0] * n)
    pads = node.attrs.get("pads", [0] * 2 * n)
    if node.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    default = [strides[i] * (spatial[i] - 1) + outpad[i] + (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + n]
               for i in range(n)]
    return list(node.attrs["output_shape"])[-n:] == default


def _training_dropout(node: ir.Node) -> bool:
    """Dropout whose training_mode may be true and whose ratio may be nonzero."""
    ins = list(node.inputs) + [None, None, None]
    mode, ratio = ins[2], ins[1]
    if mode is None or (mode.const is not None and not bool(mode.scalar())):
        return False
    return not (ratio is not None and ratio.const is not None and float(ratio.scalar()) == 0.0)


def _const_values(node: ir.Node, index: int) -> np.ndarray | None:
    v = node.inputs[index] if index < len(node.inputs) else None
    return None if v is None or v.const is None or v.const.numpy().size == 0 else v.const.numpy()


def _known_elements(v: ir.Value) -> list | None:
    """A 1-D integer vector's elements where known at compile time (None for the others),
    through Concat and Unsqueeze; None where not even its length is known."""
    if v.const is not None:
        a = v.const.numpy()
        return [int(x) for x in a.reshape(-1)] if a.ndim == 1 and a.dtype.kind in "iu" else None
    p = v.producer
    if p is not None and p.op_type == "Concat" and all(i is not None for i in p.inputs):
        parts = [_known_elements(i) for i in p.inputs]
        return None if any(part is None for part in parts) else [e for part in parts for e in part]
    if v.shape is not None and len(v.shape) == 1 and isinstance(v.shape[0], int):
        return [None] * v.shape[0]
    return None


def _tile_as_expand(node: ir.Node) -> None:
    """Tile(x, repeats) where every repeat not known to be 1 meets a dim of 1 is Expand(x, repeats)
    (`query.unsqueeze(0).repeat(batch, 1, 1)`): TVM's Tile refuses repeats computed from shapes."""
    x, repeats = node.inputs[0], node.inputs[1]
    if x is None or repeats is None or repeats.const is not None or x.shape is None:
        return
    known = _known_elements(repeats)
    if known is None or len(known) != len(x.shape) or any(r != 1 and d != 1 for r, d in zip(known, x.shape)):
        return
    node.op_type = "Expand"


SAME_PADDED = frozenset({"Conv", "ConvInteger", "MaxPool", "AveragePool", "LpPool"})
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Clip"})


def _scalar_constants(node: ir.Node) -> None:
    """A constant operand of one element and rank 1..n (paddle2onnx writes `x + [3.0]`, a
    HardSwish's clip bounds as [0.0] and [6.0]) becomes a 0-d constant where another operand
    has at least its rank, so the result's shape stays the same: TVM's layout conversion
    gives up on operands of another rank, and each such chain after an NHWC convolution
    ran NCHW between two transposes of its map."""
    if node.graph is None:
        return
    for i in range(1 if node.op_type == "Clip" else 0, len(node.inputs)):
        v = node.inputs[i]
        if v is None or v.const is None:
            continue
        a = v.const.numpy()
        others = [node.inputs[0]] if node.op_type == "Clip" else [u for j, u in enumerate(node.inputs)
                                                                   if j != i and u is not None]
        if (a.ndim == 0 or a.size != 1 or not others or any(u.shape is None for u in others)
                or max(len(u.shape) for u in others) < a.ndim):
            continue
        node.graph.set_input(node, i, node.graph.make_const(a.reshape(()), v.name))


def _explicit_same_pads(node: ir.Node) -> None:
    """auto_pad SAME_UPPER/SAME_LOWER written out as `pads` wherever they are known: on
    static dims, and at stride 1 on symbolic ones, where the total is (k - 1) * dilation
    whatever the size (a DB text detector's 2x2 MaxPool over a run-time image). TVM's
    converters compute them from static dims only; other symbolic dims stay TVM's."""
    mode = node.attrs.get("auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x = node.inputs[0]
    if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None or x.shape is None or len(x.shape) < 3:
        return
    spatial = list(x.shape[2:])
    kernel = node.attrs.get("kernel_shape")
    if kernel is None and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].shape:
        kernel = list(node.inputs[1].shape[2:])
    if kernel is None or len(kernel) != len(spatial) or not all(isinstance(k, int) for k in kernel):
        return
    strides = list(node.attrs.get("strides", [1] * len(spatial)))
    dilations = list(node.attrs.get("dilations", [1] * len(spatial)))
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        if s == 1:
            total = (k - 1) * d
        elif isinstance(size, int):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        else:
            return
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    node.attrs["auto_pad"] = "NOTSET"
    node.attrs["pads"] = begins + ends


def _conv1d_as_2d(node: ir.Node, opset: int) -> None:
    """A Conv over one spatial axis (an STFT as a strided Conv1d, a TCN's layers) as a
    Conv over a height of 1, between an Unsqueeze and a Squeeze: Ember's convolution
    kernels are 2-D, and TVM's own 1-D one ran an audio front-end 30x slower than
    onnxruntime. Constant weights only (they are reshaped here)."""
    x, w = node.inputs[0], node.inputs[1]
    weights = ir.const_array(w)
    if x is None or x.shape is None or len(x.shape) != 3 or weights is None or weights.ndim != 3:
        return
    g, y = node.graph, node.outputs[0]
    one = lambda name, default: [default] + list(node.attrs.get(name, [default]))  # noqa: E731
    attrs = {k: v for k, v in node.attrs.items() if k not in ("kernel_shape", "strides", "dilations", "pads")}
    attrs.update(kernel_shape=[1, weights.shape[2]], strides=one("strides", 1), dilations=one("dilations", 1))
    if "pads" in node.attrs:
        begin, end = node.attrs["pads"]
        attrs["pads"] = [0, begin, 0, end]
    # axes are an input from opset 13, an attribute before
    axis, attr = ([g.make_const(np.array([2], np.int64), "axis")], {}) if opset >= 13 else ([], {"axes": [2]})
    x4 = g.make_node("Unsqueeze", [x, *axis], attrs=attr, before=node).outputs[0]
    x4.dtype, x4.shape = x.dtype, (x.shape[0], x.shape[1], 1, x.shape[2])
    conv = g.make_node("Conv", [x4, g.make_const(weights[:, :, None, :], "weight"), *node.inputs[2:]], attrs=attrs,
                       before=node).outputs[0]
    conv.dtype, conv.shape = y.dtype, None if y.shape is None else (y.shape[0], y.shape[1], 1, y.shape[2])
    out = g.make_node("Squeeze", [conv, *axis], attrs=dict(attr), before=node).outputs[0]
    out.dtype, out.shape = y.dtype, y.shape
    g.substitute(y, out)
    g.remove(node)


def _resize_without_axes(node: ir.Node) -> None:
    """Resize's `axes` (opset 18) spelled out as full-rank roi/scales/sizes, which TVM reads:
    ones, the whole range and the input's dims on the other axes."""
    x = node.inputs[0]
    if x is None or x.shape is None or not all(isinstance(d, int) for d in x.shape) or _resize_exact(node):
        return
    rank, g = len(x.shape), node.graph
    axes = [a % rank for a in node.attrs["axes"]]
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    if any(v is not None and v.const is None for v in ins[1:]):
        return
    fills = {1: None, 2: np.ones(rank, np.float32), 3: np.array(x.shape, np.int64)}
    for index in (1, 2, 3):
        v = ins[index]
        if v is None or v.const.numpy().size == 0:
            continue
        given = v.const.numpy()
        if index == 1:  # roi: starts then ends
            full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(given.dtype)
            full[axes], full[[rank + a for a in axes]] = given[: len(axes)], given[len(axes):]
        else:
            full = fills[index].astype(given.dtype)
            full[axes] = given
        g.set_input(node, index, g.make_const(full, v.name))
    del node.attrs["axes"]


def _resize_exact(node: ir.Node) -> bool:
    """Whether Ember computes this Resize itself, as the reference does (`resample.py`)."""
    from ember.compiler.backend.tvm import resample

    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    x = ins[0]
    if len(node.inputs) < 3 or x is None or x.shape is None or x.dtype is None:
        return False  # opset 10's (X, scales) form, or nothing to plan with
    if any(v is not None and v.const is None for v in ins[1:4]):
        return False
    consts = [None if v is None else v.const.numpy() for v in ins[1:4]]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(x.dtype).name
    return resample.plannable(list(x.shape), dtype, node.attrs, *consts)


def _resize_wrong(node: ir.Node) -> str | None:
    """TVM's resize takes only output sizes, and has no antialias (Ember's own
    path, taken where the parameters are constants, has neither limit)."""
    if _resize_exact(node):
        return None
    if node.attrs.get("antialias", 0):
        return "antialias is not supported"
    if node.attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        return "keep_aspect_ratio_policy other than stretch is not supported"
    if "axes" in node.attrs:
        return "axes with run-time or unknown-rank operands are not supported"
    x = node.inputs[0]
    dims = list(x.shape) if x is not None and x.shape is not None else []
    scales, sizes = _const_values(node, 2), _const_values(node, 3)
    if scales is not None and all(isinstance(d, int) for d in dims):
        if any(abs(d * float(s) - round(d * float(s))) > 1e-6 for d, s in zip(dims, scales)):
            return "scales that give a fractional output size are not supported (TVM resamples by the size ratio)"
    mode = node.attrs.get("mode", b"nearest")
    if sizes is not None and mode in (b"nearest", "nearest") and all(isinstance(d, int) and d for d in dims):
        if any(o > d and o % d for d, o in zip(dims, sizes.tolist())):
            return "nearest upsampling by a fractional ratio is not supported (TVM rounds ties differently)"
    return None


def known_wrong(node: ir.Node) -> str | None:
    """Why TVM's converter would give wrong results for this node (measured on
    the ONNX conformance suite), or None."""
    op = node.op_type
    if op in recurrence.OPS and node.domain in STANDARD_DOMAINS:
        return recurrence.unsupported(node)
    if op == "Attention" and node.domain in STANDARD_DOMAINS:
        return "TVM converts com.microsoft's Attention under this name, not ONNX's"
    if op == "LayerNormalization" and (_used(node, 1) or _used(node, 2)):
        return "its Mean/InvStdDev outputs are not supported"
    if op == "BatchNormalization" and (node.attrs.get("training_mode", 0) or any(_used(node, i) for i in (1, 2))):
        return "training mode (running statistics outputs) is not supported"
    if op == "Dropout" and _training_dropout(node):
        return "training mode (random masks) is not an inference op"
    if op == "Dropout" and _used(node, 1):
        return "its mask output is not supported"
    if op == "RoiAlign" and node.attrs.get("mode", b"avg") in (b"max", "max"):
        return "mode=max (TVM's max pooling of samples differs from ONNX's)"
    if op == "Resize":
        return _resize_wrong(node)
    if op == "RMSNormalization" and node.inputs[0].shape is not None and node.attrs.get("axis", -1) in (
            0, -len(node.inputs[0].shape)):
        return "normalizing over every axis (TVM's kernel fails to build)"
    if op == "ConvTranspose" and "output_shape" in node.attrs and not _default_convtranspose_shape(node):
        return "an output_shape other than the default one is not supported"
    if op == "NonMaxSuppression" and any(v is not None and v.const is None for v in node.inputs[2:5]):
        return "run-time limits (max_output_boxes_per_class, thresholds) are not supported"
    return None


@lru_cache(maxsize=1)
def supported_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return frozenset(onnx_frontend._get_convert_map()) | {"If", "Constant"} | int8_lowering.OPS | missing_ops.OPS | recurrence.OPS


def needs_body(node: ir.Node) -> bool:
    """Whether a standard node must be replaced by its ONNX function body (see
    functions.py): TVM has no converter for it, or a wrong one for this use."""
    return node.domain in STANDARD_DOMAINS and (node.op_type not in supported_ops()
                                                or known_wrong(node) is not None)


def is_tensor_sequence(v: ir.Value) -> bool:
    tp = v.type_proto
    return tp is not None and tp.HasField("sequence_type") and tp.sequence_type.elem_type.HasField("tensor_type")


def check_supported(model: ir.Model) -> None:
    """Refuse what TVM's frontend would reject or, worse, misread: operators
    it has no converter for, and standard op names in foreign domains."""
    ops = supported_ops()
    local_functions = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.all_nodes():
        where = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
        if (node.domain, node.op_type) in local_functions:
            continue  # inlined before lowering
        if node.domain == custom_ops.DOMAIN and (node.op_type in custom_ops.OPS
                                                 or node.op_type in custom_ops.LOWERING_ONLY):
            continue  # ember's own converters
        if (node.domain, node.op_type) in recurrence.CONTRIB:
            reason = recurrence.unsupported(node)
            if reason:
                raise UnsupportedError(f"unsupported use of {node.domain}::{node.op_type} ({where}): {reason}")
            continue
        if node.domain not in STANDARD_DOMAINS:
            raise UnsupportedError(f"unsupported operator {node.domain}::{node.op_type} ({where}): "
                                   f"domain {node.domain!r} is not supported")
        if node.op_type not in ops:
            raise UnsupportedError(f"unsupported operator {node.op_type} ({where})")
        reason = known_wrong(node)
        if reason:
            raise UnsupportedError(f"unsupported use of {node.op_type} ({where}): {reason}")
        to = node.attrs.get("to") if node.op_type in ("Cast", "CastLike") else None
        if to in SUB_BYTE_TYPES:
            raise UnsupportedError(f"{where}: casts to {onnx.TensorProto.DataType.Name(to)} are not supported")
        if node.op_type == "CastLike" and node.inputs[1] is not None and node.inputs[1].dtype in SUB_BYTE_TYPES:
            raise UnsupportedError(f"{where}: casts to {onnx.TensorProto.DataType.Name(node.inputs[1].dtype)} "
                                   "are not supported")
    from ember.compiler.ir.printer import type_proto_str

    g = model.graph
    for kind, values in (("input", [v for v in g.inputs if v.const is None]), ("output", g.outputs)):
        for v in values:
            if not v.is_tensor and not (kind == "output" and is_tensor_sequence(v)):
                allowed = "tensors" if kind == "input" else "tensors and sequences of tensors"
                raise UnsupportedError(f"{kind} {v.name!r} has type {type_proto_str(v.type_proto)}; "
                                       f"only {allowed} are supported")
    for v in g.values():
        if v.dtype == onnx.TensorProto.STRING:
            raise UnsupportedError(f"value {v.name!r} is a string tensor; string tensors are not supported")
        if v.dtype in SUB_BYTE_TYPES:
            raise UnsupportedError(f"value {v.name!r} has type {onnx.TensorProto.DataType.Name(v.dtype)}, "
                                   "which is not supported")


def to_relax(model: ir.Model, target=None):
    """Lower the (optimised) IR to a Relax IRModule for an ember Target (None: a CPU)."""
    from tvm.relax.frontend.onnx import from_onnx

    from ember.compiler.backend.tvm.guards import insert_guards

    narrow.rewrite(model)
    for node in list(model.graph.all_nodes()):
        if node.op_type == "Resize" and node.domain in STANDARD_DOMAINS and "axes" in node.attrs:
            _resize_without_axes(node)
        if node.op_type == "Tile" and node.domain in STANDARD_DOMAINS:
            _tile_as_expand(node)
        if node.op_type in SAME_PADDED and node.domain in STANDARD_DOMAINS:
            _explicit_same_pads(node)
        if node.op_type == "Conv" and node.domain in STANDARD_DOMAINS:
            _conv1d_as_2d(node, model.opset)
        if node.op_type in BROADCASTING and node.domain in STANDARD_DOMAINS:
            _scalar_constants(node)
    check_supported(model)
    if insert_guards(model):
        model.verify()
    shapes = _known_shapes(model)
    proto = onnx_io.export_model(model)
    if proto.functions:
        from onnx import inliner

        keep = [(custom_ops.DOMAIN, name) for name in custom_ops.OPS]
        proto = inliner.inline_selected_functions(proto, keep, exclude=True)
    # TVM's importer prints the failing node's operands (many lines, on stdout) before raising, and
    # the failed import's block builder warns from its destructor (on native stderr): the error says
    # what failed in one line, so both are dropped
    with quiet_native_stderr():
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    _ember_converters(model.opset, for_target(target).KERNEL_ASSERTS, shapes,
                                      available(target) if target is not None else ()):
                warnings.simplefilter("ignore")
                return from_onnx(proto, opset=model.opset, keep_params_in_input=False)
        except Exception as e:  # TVM raises many types; all mean "could not import"
            error = first_line(e)
        gc.collect()
    raise CompileError(f"TVM's ONNX importer failed: {error}") from None


def _known_shapes(model: ir.Model) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """({node name: its one output's dims}, {graph input name: its dims}) as Ember's shape
    inference knows them (an int, a symbol's name, or None); gives unnamed and same-named
    nodes unique names to key them."""
    known, names = {}, set()
    for i, node in enumerate(model.graph.all_nodes()):
        if not node.name or node.name in names:
            node.name = f"{node.op_type}_{i}"
        names.add(node.name)
        out = node.outputs[0] if len(node.outputs) == 1 else None
        if out is not None and out.shape is not None and out.type_proto is None:
            known[node.name] = tuple(out.shape)
    inputs = {v.name: tuple(v.shape) for v in model.graph.inputs if v.shape is not None and v.const is None}
    return known, inputs


class _Symbols:
    """ONNX dim symbols as TIR variables: the graph inputs' own (TVM names them by
    symbol), then one new variable per other symbol, shared by every value it sizes."""

    def __init__(self, inputs: dict[str, tuple]):
        self.inputs, self.vars, self.ready = inputs, {}, False
        self.input_vars: set = set()  # the inputs' own: expressions in these TVM knows exactly

    def start(self, nodes) -> None:
        from tvm import relax, tirx

        if self.ready:
            return
        self.ready = True
        for input_name, dims in self.inputs.items():
            ty = getattr(nodes.get(input_name), "ty", None)
            if isinstance(ty, relax.TensorType) and ty.shape is not None and len(ty.shape.values) == len(dims):
                for d, v in zip(dims, ty.shape.values):
                    if isinstance(v, tirx.Var):
                        self.input_vars.add(v)
                        if isinstance(d, str) and d:
                            self.vars.setdefault(d, v)

    def exact(self, expr) -> bool:
        """Whether a TVM dim is an expression in the inputs' dims only (not a value
        known only at run time, which TVM cannot relate to anything)."""
        from tvm import tirx

        return all(v in self.input_vars for v in tirx.analysis.undefined_vars(expr, []))

    def var(self, name: str):
        from tvm import tirx

        if name not in self.vars:
            self.vars[name] = tirx.Var(name, "int64")
        return self.vars[name]


BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Where", "Max", "Min", "Sum", "Mean", "Equal",
                          "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift"})


def _typed(converter: type, known: dict[str, tuple], symbols: _Symbols) -> type:
    """`converter` whose result takes the shape Ember's shape inference knows where TVM's
    says less: a lost rank or dim (a Reshape or Resize to a computed shape, a Range to a
    run-time limit), a dim TVM cannot relate to its symbol (then broadcasting the two
    fails), or an expression where Ember knows a constant (a slice's one last row). The
    result is match-cast to Ember's dims, symbols as shared TIR variables and unknown dims
    as new ones: checked when the model runs, never assumed."""
    import tvm
    from tvm import relax, tirx

    opaque = (relax.Tuple, tvm.ir.expr.Constant, relax.ShapeExpr)

    def wanted(ty, dims, nodes):
        if ty.ndim not in (-1, len(dims)):
            return None
        symbols.start(nodes)
        have = list(ty.shape.values) if ty.shape is not None else [None] * len(dims)
        shape, changed = [], ty.shape is None
        for i, (d, v) in enumerate(zip(dims, have)):
            if v is not None and (isinstance(v, tirx.IntImm) or (symbols.exact(v) and not isinstance(d, int))):
                shape.append(v)  # TVM's constant or expression in the inputs' dims: exact
            elif isinstance(d, int):
                shape.append(d)
                changed = True
            elif isinstance(d, str) and d:
                var = symbols.var(d)
                changed = changed or v is None or not v.same_as(var)
                shape.append(var)
            else:
                shape.append(v if v is not None else tirx.Var(f"d{i}", "int64"))
        return shape if changed else None

    class Typed(converter):
        @classmethod
        def get_converter(cls, opset):
            impl = converter.get_converter(opset)

            def convert(bb, inputs, attr, params):
                out = impl(bb, inputs, attr, params)
                if converter.__name__ in BROADCASTING and isinstance(out, relax.Expr) and not isinstance(out, opaque):
                    out = bb.normalize(out)
                    if isinstance(out.ty, relax.TensorType) and out.ty.shape is None:  # TVM could not relate dims
                        out = impl(bb, same_dims(bb, inputs), attr, params)
                dims = known.get(attr.get("tvm_custom", {}).get("name"))
                if dims is None or not isinstance(out, relax.Expr) or isinstance(out, opaque):
                    return out
                out = bb.normalize(out)
                ty = out.ty
                if not isinstance(ty, relax.TensorType):
                    return out
                shape = wanted(ty, dims, params[0])
                if shape is None:
                    return out
                if not isinstance(out, relax.Var):
                    out = bb.emit(out)
                return bb.match_cast(out, relax.TensorType(shape, ty.dtype))

            return convert

    Typed.__name__ = converter.__name__
    return Typed


@contextlib.contextmanager
def _ember_converters(opset: int, kernel_asserts: bool, shapes: tuple[dict, dict] | None = None, dots=()):
    """TVM's frontend looks converters up by op type through a module-level
    function; extend its table with ember's own ops for this one import."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    extra = {**ember_ops.relax_converters(kernel_asserts), **frontend_fixes.converters(), **int8_lowering.converters(opset),
             **narrow.converters(), **missing_ops.converters(), **recurrence.converters(dots)}
    table = {**original(), **extra}
    if shapes:
        symbols = _Symbols(shapes[1])
        table = {op: _typed(c, shapes[0], symbols) for op, c in table.items()}
    onnx_frontend._get_convert_map = lambda: table
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def tvm_version() -> str:
    """The version of TVM that builds (recorded in artifacts, checked when they load)."""
    import tvm

    return tvm.__version__


def build(mod, target, database=None, counts: dict[str, int] | None = None,
          flops: dict[str, float] | None = None, generic: bool = False, precision: str = "fp32"):
    """Compile a Relax module for an ember Target (with tuned schedules from
    a MetaSchedule `database`, if given); returns a relax Executable. `counts`
    and `flops` are filled as `relax_pipeline` says. `generic`: TVM's own default
    pipeline instead, its legalizations without schedules and none of Ember's
    kernels: slow code, but a second opinion on what they compute (`ember debug`)."""
    import tvm

    from ember.compiler.runtime.isolate import mark_pool_started
    from ember.compiler.backend.tvm.target import prepare

    mark_pool_started()  # FoldConstant runs kernels in this process
    prepare(target)
    tvm_target = target.tvm_target()
    pipeline = None if generic else relax_pipeline(target, database, counts, flops, precision)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # in the target's scope: TVM's CUDA compile callback reads the sm_XX to build for from it
            with tvm.transform.PassContext(opt_level=3), tvm_target, quiet_native_stderr():
                ex = (tvm.compile(mod, target=tvm_target) if generic
                      else tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline,
                                       tir_pipeline=tir_pipeline.register()))
    except Exception as e:
        what = "TVM's generic pipeline" if generic else "TVM build"
        raise CompileError(f"{what} failed for {target.describe()}: {first_line(e)}") from None
    if target.runtime_only:
        _check_runtime_only(ex, target)
    return ex


# what TVM's VM calls from its compiler library (libtvm), with the ONNX ops that lower to them
COMPILER_LIBRARY_CALLS = {"relax.run.nonzero": "NonZero, or Compress with a run-time condition",
                          "relax.run.unique": "Unique", "relax.run.print": "a debug print",
                          "relax.run.shape_to_tensor": "a shape turned into a tensor at run time"}


def _check_runtime_only(ex, target) -> None:
    """An artifact for another device runs on the TVM runtime alone (a board,
    the emulator, an RPC server), which lacks functions of TVM's compiler
    library: refuse at compile time what would fail there at run time."""
    text = ex.as_text()
    used = [f"{what} ({name})" for name, what in COMPILER_LIBRARY_CALLS.items() if name in text]
    if used:
        raise UnsupportedError(f"{', '.join(used)}: computed by a function of TVM's compiler library, which "
                               f"the TVM runtime alone (on the {target.triple} device) lacks; this model "
                               "compiles for this machine or a GPU here")
