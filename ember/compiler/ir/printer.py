"""Human-readable text form of the IR, used for IR dumps and `print(graph)`.

The IR's classes print through this module (`Graph.__str__`), so it reads
them by their attributes and imports the IR for type annotations only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from ember.compiler import ir


def type_proto_str(tp: onnx.TypeProto) -> str:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        dt = onnx.TensorProto.DataType.Name(tp.tensor_type.elem_type).lower()
        return f"tensor({dt})"
    if kind == "sequence_type":
        return f"seq({type_proto_str(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_proto_str(tp.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(tp.map_type.key_type).lower()
        return f"map({key}, {type_proto_str(tp.map_type.value_type)})"
    return kind or "?"


def value_type_str(v: ir.Value) -> str:
    if not v.is_tensor:
        return type_proto_str(v.type_proto)
    dt = onnx.TensorProto.DataType.Name(v.dtype).lower() if v.dtype else "?"
    if v.shape is None:
        return f"{dt}[...]"
    return f"{dt}[{','.join('?' if d is None else str(d) for d in v.shape)}]"


def _attr(value) -> str:
    if hasattr(value, "nodes") and hasattr(value, "initializers"):  # a Graph
        return f"<graph {value.name}>"
    if hasattr(value, "numpy") and hasattr(value, "shape"):  # a Tensor
        return f"<tensor {list(value.shape)}>"
    if isinstance(value, list):
        return "[" + ", ".join(_attr(x) for x in value) + "]"
    if isinstance(value, bytes):
        return repr(value.decode("utf-8", "replace"))
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def format_graph(graph: ir.Graph, indent: str = "") -> str:
    lines = [f"{indent}graph {graph.name} ("
             + ", ".join(f"%{v.name}: {value_type_str(v)}" for v in graph.inputs if not v.is_const) + ") {"]
    for v in graph.initializers.values():
        t = v.const
        lines.append(f"{indent}  %{v.name}: {value_type_str(v)} = <const {np.prod(t.shape, dtype=np.int64)} elems>")
    for n in graph.nodes:
        attrs = ", ".join(f"{k}={_attr(a)}" for k, a in sorted(n.attrs.items()))
        lines.append(f"{indent}  {n!r}" + (f" {{{attrs}}}" if attrs else "") + (f"  # {n.name}" if n.name else ""))
        for g in n.subgraphs():
            lines.append(format_graph(g, indent + "    "))
    lines.append(f"{indent}  return " + ", ".join(f"%{v.name}: {value_type_str(v)}" for v in graph.outputs))
    lines.append(f"{indent}}}")
    return "\n".join(lines)
