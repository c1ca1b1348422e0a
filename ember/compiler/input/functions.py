"""Operators that ONNX defines by a function body, expanded where TVM cannot take them.

Many ONNX operators (the losses, Attention, RotaryEmbedding, CenterCropPad,
the window functions, LayerNormalization with its statistics outputs, ...)
come with a body written in simpler ONNX operators, plain or built from the
node's attributes and input types ("context-dependent"). Where TVM has no
converter for such a node, or Ember knows its converter to be wrong for the
node's use, the node is replaced by that body before the passes run, so every
later stage (the passes, the supported-operator check, TVM) sees primitives.

Operators ONNX gives no body but TVM lacks, and whose meaning is a fixed
composition once their lengths are known, get one from Ember
(EMBER_BODIES: RNN/GRU/LSTM unrolled in recurrent.py, DFT/STFT as table
products in spectral.py).

The replacement goes through onnx's own inliner: each node to expand becomes a
call of a model-local function holding its body, and the inliner renames,
substitutes attributes and nests subgraphs as ONNX specifies.
"""

from __future__ import annotations

import onnx
from onnx import inliner

from ember.compiler import ir
from ember.compiler.ir import onnx_io
from ember.compiler.input import recurrent, spectral
from ember.errors import ModelLoadError

DOMAIN = "ember.expand"


def _dropout_body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    """Inference-mode Dropout with its mask output: the input, and a mask of all true."""
    mode = node.inputs[2] if len(node.inputs) > 2 else None
    if opset < 12 or (mode is not None and (mode.const is None or bool(mode.scalar()))):
        return None
    nodes = [onnx.helper.make_node("Identity", ["data"], ["output"]), onnx.helper.make_node("Shape", ["data"], ["s"]),
             onnx.helper.make_node("ConstantOfShape", ["s"], ["mask"],
                                   value=onnx.helper.make_tensor("one", onnx.TensorProto.BOOL, [1], [True]))]
    formals = ["data", "ratio", "training_mode"][: len(node.inputs)]
    return onnx.helper.make_function("", "Dropout", formals, ["output", "mask"], nodes,
                                     [onnx.helper.make_opsetid("", opset)])


# operators ONNX gives no body, for which Ember builds one from the node
EMBER_BODIES = {**{op: recurrent.body for op in recurrent.GATES}, **spectral.BUILDERS, "Dropout": _dropout_body}
MAX_ROUNDS = 4  # bodies may use operators that have bodies themselves


def _schema(node: ir.Node, opset: int):
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _node_proto(node: ir.Node, schema) -> onnx.NodeProto | None:
    """The node as the function builder sees it: its attributes plus the schema's defaults."""
    if node.attr_refs or any(v is not None and not v.name for v in node.inputs):
        return None
    proto = onnx_io.export_node(node)
    have = {a.name for a in proto.attribute}
    for name, attr in schema.attributes.items():
        if name not in have and attr.default_value.type:
            proto.attribute.append(attr.default_value)
    return proto


def body(node: ir.Node, opset: int) -> tuple[onnx.FunctionProto, onnx.NodeProto] | None:
    """The function body ONNX gives `node` at `opset` and the node as its call (with the
    schema's default attributes), or None if it has none or it cannot be built."""
    schema = _schema(node, opset)
    if schema is None:
        return None
    builder = EMBER_BODIES.get(node.op_type)
    if builder is not None:  # no body in ONNX: Ember's own
        fn, proto = builder(node, opset), _node_proto(node, schema)
        return None if fn is None or proto is None else (fn, proto)
    plain = [v for v in schema.function_opset_versions if v <= opset]
    context = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if not plain and not context:
        return None
    proto = _node_proto(node, schema)
    if proto is None:
        return None
    fn = onnx.FunctionProto()
    try:
        if context and (not plain or max(context) >= max(plain)):
            types = [onnx.TypeProto() if v is None else onnx_io.type_proto(v) for v in node.inputs]
            if any(t is None or not t.tensor_type.elem_type for v, t in zip(node.inputs, types) if v is not None):
                return None  # the builder needs every input's element type
            data = schema.get_context_dependent_function_with_opset_version(
                max(context), proto.SerializeToString(), [t.SerializeToString() for t in types])
        else:
            data = schema.get_function_with_opset_version(max(plain))
        fn.ParseFromString(data)
    except Exception:  # onnx's builders raise on inputs they do not handle
        return None
    if not fn.node:
        return None
    for imp in fn.opset_import:  # a body stays valid up to the next version that lists one
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    fn.ClearField("attribute_proto")
    for a in proto.attribute:  # defaults travel on the call, as the function's attribute list
        if a.name not in fn.attribute:
            fn.attribute.append(a.name)
    return fn, proto


def expand(model: ir.Model, wanted) -> ir.Model:
    """`model` with every node for which `wanted(node)` holds and ONNX gives a
    body replaced by that body, repeatedly (bodies can use such operators too).
    Returns `model` itself when nothing was expanded."""
    for _ in range(MAX_ROUNDS):
        calls = []
        for node in list(model.graph.all_nodes()):
            if not wanted(node):
                continue
            found = body(node, model.opset)
            if found is None:
                continue
            fn, proto = found
            name = f"{node.op_type}_{len(calls)}"
            fn.domain, fn.name = DOMAIN, name
            for a in proto.attribute:
                if a.name not in node.attrs:  # the schema's defaults
                    node.attrs[a.name] = onnx_io.import_attr(a, node.graph, {}, {})
                    node.attr_types[a.name] = a.type
            node.domain, node.op_type = DOMAIN, name
            model.functions.append(fn)
            calls.append((DOMAIN, name))
        if not calls:
            return model
        proto = onnx_io.export_model(model)
        proto.opset_import.add(domain=DOMAIN, version=1)
        try:
            proto = inliner.inline_selected_functions(proto, calls, exclude=False)
        except Exception as e:
            raise ModelLoadError(f"expanding ONNX function bodies failed: {e}") from None
        for i in reversed(range(len(proto.opset_import))):
            if proto.opset_import[i].domain == DOMAIN:
                del proto.opset_import[i]
        model = onnx_io.import_model(proto)
    return model
