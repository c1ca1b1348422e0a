"""ONNX ModelProto <-> Ember IR.

`load(path)` reads a file (external data only from inside the model's own
directory), `import_model(proto)` builds the IR, `export_model(model)` gives a
ModelProto back. The round trip keeps initializers (as their original
TensorProtos), doc strings, value_info, metadata, opsets and local functions;
onnxruntime gives identical outputs on the exported model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, external_data_helper

from ember.compiler import ir
from ember.errors import ModelLoadError

A = AttributeProto


# ---------------------------------------------------------------- loading
def load(path: str | os.PathLike, *, infer_shapes: bool = True) -> ir.Model:
    return import_model(load_proto(path), infer_shapes=infer_shapes)


def as_ir(model: Any) -> ir.Model:
    """Path, ModelProto or ir.Model -> a fresh ir.Model (the caller's object is never changed)."""
    if isinstance(model, ir.Model):
        copy = import_model(export_model(model), infer_shapes=False)
        _copy_aliases(model.graph, copy.graph)
        return copy
    if isinstance(model, onnx.ModelProto):
        # re-parse: the same checks as a file, and an in-memory proto may be deeper than protobuf allows
        return import_model(parse_proto(_serialize(model), "model"))
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    raise TypeError(f"expected a path, onnx.ModelProto or ember IR Model, got {type(model).__name__}")


def _serialize(model: onnx.ModelProto) -> bytes:
    try:
        return model.SerializeToString()
    except Exception as e:
        raise ModelLoadError(f"model cannot be serialized: {e}") from None


def load_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file; external data is accepted only from files inside the
    model's directory (no absolute paths, no '..', no symlinks leading out)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file")
    data = path.read_bytes()
    proto = parse_proto(data, str(path))
    load_external_data(proto, path.parent)
    return proto


def parse_proto(data: bytes, what: str = "model") -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{what}: not a valid ONNX model (protobuf decode failed: {e})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelLoadError(f"{what}: not an ONNX model (no graph or no ir_version)")
    return proto


def _external_tensors(proto: onnx.ModelProto):
    return [t for t in external_data_helper._get_all_tensors(proto)
            if external_data_helper.uses_external_data(t)]


def load_external_data(proto: onnx.ModelProto, base_dir: Path) -> None:
    tensors = _external_tensors(proto)
    if not tensors:
        return
    base = base_dir.resolve()
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        where = f"tensor {t.name!r}: external data location {loc!r}"
        if not loc or os.path.isabs(loc) or ".." in Path(loc).parts or loc.startswith(("/", "\\")):
            raise ModelLoadError(f"{where} must be a relative path inside the model's directory")
        target = (base / loc).resolve()
        if base not in target.parents:
            raise ModelLoadError(f"{where} leads outside the model's directory")
        if not target.is_file():
            raise ModelLoadError(f"{where}: file not found next to the model")
        size = target.stat().st_size
        offset = int(info.get("offset", 0) or 0)
        length = int(info.get("length", size - offset) or 0)
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelLoadError(f"{where}: offset/length outside the file ({size} bytes)")
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except Exception as e:  # onnx raises several types here
        raise ModelLoadError(f"loading external data failed: {e}") from None


# ---------------------------------------------------------------- import
def _dims(shape_proto: onnx.TensorShapeProto) -> tuple[ir.Dim, ...]:
    out: list[ir.Dim] = []
    for d in shape_proto.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _apply_type(v: ir.Value, tp: onnx.TypeProto) -> None:
    if tp.HasField("tensor_type"):
        v.dtype = tp.tensor_type.elem_type
        v.shape = _dims(tp.tensor_type.shape) if tp.tensor_type.HasField("shape") else None
        v.type_proto = None
    elif tp.WhichOneof("value") is not None:
        v.type_proto = onnx.TypeProto()
        v.type_proto.CopyFrom(tp)


def _value_from_info(vi: onnx.ValueInfoProto) -> ir.Value:
    v = ir.Value(vi.name, doc_string=vi.doc_string)
    if vi.HasField("type"):
        _apply_type(v, vi.type)
    return v


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> onnx.TensorProto:
    values = onnx.numpy_helper.to_array(sp.values)
    idx = onnx.numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if idx.ndim == 2:
        dense[tuple(idx.T)] = values
    else:
        dense.reshape(-1)[idx] = values
    t = onnx.numpy_helper.from_array(dense, sp.values.name)
    return t


def _copy_aliases(src: ir.Graph, dst: ir.Graph) -> None:
    """The provenance (`Value.aliases`) ONNX has no field for, carried over by value name."""
    known = {v.name: v.aliases for v in src.inputs if v.aliases}
    known.update({v.name: v.aliases for n in src.nodes for v in n.outputs if v.aliases})
    if not known:
        return
    for v in list(dst.inputs) + [v for n in dst.nodes for v in n.outputs]:
        if v.name in known:
            v.aliases = set(known[v.name])


def import_model(proto: onnx.ModelProto, *, infer_shapes: bool = True) -> ir.Model:
    """The IR of `proto` (which this may change: callers pass a fresh one)."""
    negative = _unknown_negative_dims(proto.graph)
    if negative:
        more = f" and {len(negative) - 3} more" if len(negative) > 3 else ""
        warnings.warn(f"dimensions written as negative numbers read as unknown (values "
                      f"{', '.join(repr(n) for n in negative[:3])}{more}), as onnxruntime does", stacklevel=2)
    types: dict[str, onnx.TypeProto] = {}
    if infer_shapes:
        types = _inferred_types(proto)
    try:
        graph = _import_graph(proto.graph, None, {}, types)
    except ModelLoadError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ModelLoadError(f"malformed ONNX model: {e}") from None
    model = ir.Model(
        graph=graph,
        opset_imports={o.domain: o.version for o in proto.opset_import},
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version,
        doc_string=proto.doc_string,
        metadata_props={p.key: p.value for p in proto.metadata_props},
        functions=[_copy(f) for f in proto.functions],
    )
    if proto.training_info:
        model.extra["training_info"] = [_copy(t) for t in proto.training_info]
    return model


def _unknown_negative_dims(gp: onnx.GraphProto) -> list[str]:
    """Clear the dims some exporters (paddle2onnx) write as -1 in value types, so
    they read as unknown; the names of the values that had one. Initializers
    are data: a negative dim there stays an error (validate.py)."""
    names = []
    for vi in [*gp.input, *gp.output, *gp.value_info]:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        dims = [d for d in tt.shape.dim if d.HasField("dim_value") and d.dim_value < 0] if tt else []
        for d in dims:
            d.ClearField("dim_value")
        if dims:
            names.append(vi.name)
    for node in gp.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                names += _unknown_negative_dims(sub)
    return names


def keep_static_value_info(proto: onnx.ModelProto) -> None:
    """Drop the value_info entries with unknown or symbolic dims, so a re-import infers them
    again (from new input shapes, tied symbols or folded constants); static ones stay."""
    static = [vi for vi in proto.graph.value_info if vi.type.HasField("tensor_type")
              and vi.type.tensor_type.HasField("shape")
              and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(static)


def _copy(msg):
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _inferred_types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of top-level values from onnx's shape inference (best effort:
    a model inference cannot handle simply keeps the types it declares)."""
    try:
        # infer on a copy without initializer payloads: fast, and never over 2 GB
        light = onnx.ModelProto()
        light.CopyFrom(proto)
        for t in light.graph.initializer:
            if t.ByteSize() > 1024:
                _strip_payload(t)
        # old models list initializers as inputs too; inference then treats
        # them as unknown runtime values. For inference, they are constants.
        inits = {t.name for t in light.graph.initializer}
        runtime = [i for i in light.graph.input if i.name not in inits]
        del light.graph.input[:]
        light.graph.input.extend(runtime)
        light.ir_version = max(light.ir_version, 4)
        # graph outputs' declared shapes are checked, not trusted: exporters write the dims they
        # saw at export, also where they depend on a symbolic input (onnxruntime only warns)
        declared = {o.name: _copy(o.type) for o in light.graph.output if o.type.HasField("tensor_type")}
        for o in light.graph.output:
            o.type.tensor_type.ClearField("shape")
        dynamic = any(not d.HasField("dim_value") for i in runtime for d in i.type.tensor_type.shape.dim)
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=False)
        while _contrib_types(light, inferred):  # once per chained contrib node at most
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=False)
        # data propagation (Shape -> Concat -> Reshape chains) materialises tensors,
        # so it only runs when no value of the model is huge (a ConstantOfShape bomb
        # would make onnx allocate terabytes)
        if _max_elements(inferred) <= DATA_PROP_MAX_ELEMENTS:
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    types = {vi.name: vi.type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for name, t in declared.items():
        types[name] = _checked_output_type(name, t, types.get(name), dynamic)
    return types


def _checked_output_type(name: str, declared: onnx.TypeProto, inferred: onnx.TypeProto | None,
                         dynamic: bool) -> onnx.TypeProto:
    """A graph output's type: the inferred dims, and a declared dim where inference knows
    none, except that a model with symbolic inputs keeps only symbolic ones there (a fixed
    dim may hold just for the sizes the exporter saw). Where both are fixed and differ, the
    declared dim stays (onnx's inference has bugs too) and a warning says so."""
    out = _copy(declared)
    if not declared.tensor_type.HasField("shape"):
        return inferred if inferred is not None else out
    dims = declared.tensor_type.shape.dim
    known = inferred.tensor_type.shape.dim if inferred is not None and inferred.tensor_type.HasField("shape") else None
    if known is not None and len(known) != len(dims):
        warnings.warn(f"output {name!r} is declared with rank {len(dims)} but computes rank {len(known)}",
                      stacklevel=3)
        return out
    for i, d in enumerate(out.tensor_type.shape.dim):
        k = known[i] if known is not None else None
        if k is not None and (k.HasField("dim_value") or k.HasField("dim_param")
                              and not k.dim_param.startswith("unk__")):  # not one inference made up
            if d.HasField("dim_value") and k.HasField("dim_value") and d.dim_value != k.dim_value:
                warnings.warn(f"output {name!r} is declared with dim {i} = {d.dim_value} but computes "
                              f"{k.dim_value}", stacklevel=3)
            else:
                d.CopyFrom(k)
        elif dynamic and d.HasField("dim_value"):
            if k is not None:
                d.CopyFrom(k)
            else:
                d.ClearField("dim_value")
    return out


DATA_PROP_MAX_ELEMENTS = 1 << 26


def _contrib_types(light: onnx.ModelProto, inferred: onnx.ModelProto) -> bool:
    """Declare the output types of the contrib operators Ember runs (onnx's inference
    knows none) in `light`, where their inputs' types are inferred; whether any was new."""
    known = {vi.name: vi.type for vi in [*inferred.graph.input, *inferred.graph.value_info,
                                         *inferred.graph.output]}
    known.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
                  for t in inferred.graph.initializer})
    declared = {vi.name for vi in [*light.graph.value_info, *light.graph.output]
                if vi.type.tensor_type.HasField("shape")}
    added = False
    for node in light.graph.node:
        rule = CONTRIB_TYPES.get((node.domain, node.op_type))
        if rule is None or all(o in declared for o in node.output if o):
            continue
        x = known.get(node.input[0]) if node.input else None
        if x is None or not x.tensor_type.HasField("shape"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for name, t in zip(node.output, rule(x.tensor_type, attrs)):
            if name and name not in declared:
                outputs = [vi for vi in light.graph.output if vi.name == name]
                vi = outputs[0] if outputs else light.graph.value_info.add()
                vi.name = name
                vi.type.CopyFrom(t)
                added = True
    return added


def _dynamic_quantize_lstm(x: onnx.TypeProto.Tensor, attrs: dict) -> list[onnx.TypeProto]:
    """com.microsoft DynamicQuantizeLSTM: X [seq, batch, input] -> Y [seq, dirs, batch, H],
    Y_h and Y_c [dirs, batch, H], all of X's type."""
    seq, batch = (x.shape.dim[i] for i in (0, 1)) if len(x.shape.dim) == 3 else (onnx.TensorShapeProto.Dimension(),) * 2
    dirs = onnx.TensorShapeProto.Dimension(dim_value=2 if attrs.get("direction") == b"bidirectional" else 1)
    hidden = onnx.TensorShapeProto.Dimension()
    if "hidden_size" in attrs:
        hidden.dim_value = attrs["hidden_size"]

    def tensor(dims):
        t = onnx.TypeProto()
        t.tensor_type.elem_type = x.elem_type
        t.tensor_type.shape.dim.extend(dims)
        return t

    return [tensor([seq, dirs, batch, hidden]), tensor([dirs, batch, hidden]), tensor([dirs, batch, hidden])]


CONTRIB_TYPES = {("com.microsoft", "DynamicQuantizeLSTM"): _dynamic_quantize_lstm}


def _max_elements(model: onnx.ModelProto) -> int:
    biggest = 0
    for vi in list(model.graph.value_info) + list(model.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if dims:
            biggest = max(biggest, int(np.prod(dims, dtype=np.float64)))
    return biggest


def _strip_payload(t: onnx.TensorProto) -> None:
    # keep dims and dtype; inference only needs those
    for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
              "uint64_data", "string_data"):
        t.ClearField(f)
    t.data_location = onnx.TensorProto.DEFAULT
    t.ClearField("external_data")


def _import_graph(gp: onnx.GraphProto, parent: ir.Graph | None, outer: dict[str, ir.Value],
                  types: dict[str, onnx.TypeProto]) -> ir.Graph:
    g = ir.Graph(gp.name or "graph", parent)
    g.doc_string = gp.doc_string
    scope: dict[str, ir.Value] = {}

    def define(v: ir.Value, what: str) -> None:
        if v.name in scope:
            raise ModelLoadError(f"graph {g.name!r}: value {v.name!r} is defined twice ({what})")
        scope[v.name] = v

    _check_text(gp.name, *(vi.name for vi in gp.input), *(vi.name for vi in gp.output),
                *(t.name for t in gp.initializer))
    for vi in gp.input:
        v = _value_from_info(vi)
        define(v, "graph input")
        g.add_input(v)
    for t in gp.initializer:
        if t.name in scope:
            v = scope[t.name]
            if any(v is i for i in g.inputs) and v.const is None:
                v.const = ir.Tensor(_copy(t))
                continue
        v = ir.Value(t.name, dtype=t.data_type, shape=tuple(t.dims), const=ir.Tensor(_copy(t)))
        define(v, "initializer")
        g.add_initializer(v)
    for sp in gp.sparse_initializer:
        t = _sparse_to_dense(sp)
        v = ir.Value(t.name, dtype=t.data_type, shape=tuple(t.dims), const=ir.Tensor(t))
        define(v, "sparse initializer")
        g.add_initializer(v)

    vinfo = {vi.name: vi for vi in gp.value_info}
    g.value_info_names = set(vinfo)
    # outputs of all nodes first, so a model whose nodes are out of order still imports
    node_outputs: list[list[ir.Value]] = []
    for np_ in gp.node:
        outs = list(np_.output)
        while outs and outs[-1] == "":
            outs.pop()
        values = []
        for name in outs:
            if name == "":
                v = ir.Value(g.fresh_name("unused"), omitted=True)
            else:
                v = ir.Value(name)
                if name in vinfo:
                    _apply_type(v, vinfo[name].type)
                    v.doc_string = vinfo[name].doc_string
                elif name in types and parent is None:
                    _apply_type(v, types[name])
                define(v, f"output of {np_.op_type} node {np_.name!r}")
            values.append(v)
        node_outputs.append(values)

    full = dict(outer)
    full.update(scope)
    in_order = True
    produced_ids = {id(v) for outs in node_outputs for v in outs}
    seen = {id(v) for v in scope.values() if id(v) not in produced_ids}
    for np_, outs in zip(gp.node, node_outputs):
        inputs: list[ir.Value | None] = []
        for name in np_.input:
            if name == "":
                inputs.append(None)
                continue
            v = full.get(name)
            if v is None:
                raise ModelLoadError(f"graph {g.name!r}: {np_.op_type} node {np_.name!r} "
                                     f"uses undefined value {name!r}")
            if id(v) in produced_ids and id(v) not in seen:
                in_order = False
            inputs.append(v)
        _check_text(np_.op_type, np_.domain, np_.name, *np_.input, *np_.output, *(a.name for a in np_.attribute))
        node = ir.Node(np_.op_type, inputs, outs, domain=np_.domain, name=np_.name,
                       doc_string=np_.doc_string)
        node.overload = getattr(np_, "overload", "")
        node.metadata = {p.key: p.value for p in getattr(np_, "metadata_props", [])}
        for a in np_.attribute:
            node.attrs[a.name] = import_attr(a, g, full, types)
            node.attr_types[a.name] = a.type
            if a.ref_attr_name:
                node.attr_refs[a.name] = a.ref_attr_name
        g.insert(node)
        seen.update(id(v) for v in outs)
    for vo in gp.output:
        v = full.get(vo.name)
        if v is None:
            raise ModelLoadError(f"graph {g.name!r}: output {vo.name!r} is not produced by any node")
        if vo.HasField("type") and (not v.dtype and v.type_proto is None or v.shape is None):
            _apply_type(v, vo.type)
        if vo.doc_string:
            v.doc_string = vo.doc_string
        g.outputs.append(v)
    if not in_order:
        g.sort()
    return g


def _check_text(*texts: str) -> None:
    """Names must be valid UTF-8 (protobuf hands malformed bytes through as lone surrogates)."""
    for t in texts:
        try:
            if not isinstance(t, str):  # protobuf hands undecodable strings over as bytes
                raise UnicodeError
            t.encode("utf-8")
        except UnicodeError:
            shown = t[:40] if isinstance(t, bytes) else t.encode("utf-8", "replace")[:40]
            raise ModelLoadError(f"malformed ONNX model: invalid UTF-8 in name {shown!r}") from None


def import_attr(a: onnx.AttributeProto, g: ir.Graph, scope: dict[str, ir.Value],
                 types: dict[str, onnx.TypeProto]) -> Any:
    if a.type == A.GRAPH:
        return _import_graph(a.g, g, scope, types)
    if a.type == A.GRAPHS:
        return [_import_graph(x, g, scope, types) for x in a.graphs]
    if a.type == A.TENSOR:
        return ir.Tensor(_copy(a.t))
    if a.type == A.TENSORS:
        return [ir.Tensor(_copy(t)) for t in a.tensors]
    if a.type == A.SPARSE_TENSOR:
        return _copy(a.sparse_tensor)
    if a.type == A.SPARSE_TENSORS:
        return [_copy(t) for t in a.sparse_tensors]
    if a.type == A.TYPE_PROTO:
        return _copy(a.tp)
    if a.type == A.TYPE_PROTOS:
        return [_copy(t) for t in a.type_protos]
    if a.type == A.UNDEFINED and a.ref_attr_name:
        return None
    return onnx.helper.get_attribute_value(a)


# ---------------------------------------------------------------- export
def export_model(model: ir.Model) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    proto.ir_version = model.ir_version
    proto.producer_name = model.producer_name
    proto.producer_version = model.producer_version
    proto.domain = model.domain
    proto.model_version = model.model_version
    proto.doc_string = model.doc_string
    for dom, ver in model.opset_imports.items():
        proto.opset_import.add(domain=dom, version=ver)
    for k, val in model.metadata_props.items():
        proto.metadata_props.add(key=k, value=val)
    proto.functions.extend(model.functions)
    _add_custom_op_functions(model, proto)
    for t in model.extra.get("training_info", []):
        proto.training_info.add().CopyFrom(t)
    proto.graph.CopyFrom(export_graph(model.graph))
    if 0 < proto.ir_version < 4:  # before IR 4 every initializer must also be a graph input
        listed = {i.name for i in proto.graph.input}
        proto.graph.input.extend(_value_info(v) for name, v in model.graph.initializers.items()
                                 if name not in listed)
    return proto


def _add_custom_op_functions(model: ir.Model, proto: onnx.ModelProto) -> None:
    """Ember's own ops travel with their ONNX function definitions, so any
    ONNX runtime can run the exported graph."""
    from ember.compiler.ir import custom_ops

    used = {(n.domain, n.op_type) for n in model.graph.all_nodes() if n.domain == custom_ops.DOMAIN}
    if not used:
        return
    have = {(f.domain, f.name) for f in model.functions}
    proto.functions.extend(op.function(model.opset) for op in custom_ops.used_ops(used)
                           if (custom_ops.DOMAIN, op.op_type) not in have)
    if custom_ops.DOMAIN not in model.opset_imports:
        proto.opset_import.add(domain=custom_ops.DOMAIN, version=custom_ops.VERSION)


def type_proto(v: ir.Value) -> onnx.TypeProto | None:
    if v.type_proto is not None:
        return v.type_proto
    if not v.dtype and v.shape is None:
        return None
    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = v.dtype
    if v.shape is not None:
        shape = tp.tensor_type.shape
        shape.SetInParent()
        for d in v.shape:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    return tp


def _value_info(v: ir.Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto(name=v.name, doc_string=v.doc_string)
    tp = type_proto(v)
    if tp is not None:
        vi.type.CopyFrom(tp)
    return vi


def export_graph(g: ir.Graph) -> onnx.GraphProto:
    gp = onnx.GraphProto(name=g.name, doc_string=g.doc_string)
    gp.input.extend(_value_info(v) for v in g.inputs)
    for v in g.inputs:
        if v.const is not None:
            gp.initializer.append(v.const.to_proto(v.name))
    gp.initializer.extend(v.const.to_proto(name) for name, v in g.initializers.items()
                          if not any(v is i for i in g.inputs))
    outputs = {id(v) for v in g.outputs}
    for n in g.nodes:
        gp.node.append(export_node(n))
        for v in n.outputs:
            if id(v) not in outputs and not v.omitted and (v.dtype or v.type_proto is not None or v.shape is not None):
                gp.value_info.append(_value_info(v))
    gp.output.extend(_value_info(v) for v in g.outputs)
    return gp


def export_node(n: ir.Node) -> onnx.NodeProto:
    np_ = onnx.NodeProto(op_type=n.op_type, domain=n.domain, name=n.name, doc_string=n.doc_string)
    np_.input.extend("" if v is None else v.name for v in n.inputs)
    g = n.graph
    np_.output.extend("" if v.omitted and not v.uses and not (g and g.is_output(v)) else v.name
                      for v in n.outputs)
    if n.overload:
        np_.overload = n.overload
    for k, val in n.metadata.items():
        np_.metadata_props.add(key=k, value=val)
    for name, value in n.attrs.items():
        np_.attribute.append(_export_attr(name, value, n.attr_types.get(name), n.attr_refs.get(name)))
    return np_


def _export_attr(name: str, value: Any, atype: int | None, ref: str | None) -> onnx.AttributeProto:
    if ref:
        a = onnx.AttributeProto(name=name, ref_attr_name=ref)
        a.type = atype or A.UNDEFINED
        return a
    if isinstance(value, ir.Graph):
        value = export_graph(value)
    elif isinstance(value, ir.Tensor):
        value = value.to_proto(value._proto.name if value._proto is not None else "")
    elif isinstance(value, list) and value and isinstance(value[0], ir.Graph):
        value = [export_graph(x) for x in value]
    elif isinstance(value, list) and value and isinstance(value[0], ir.Tensor):
        value = [t.to_proto(t._proto.name if t._proto is not None else "") for t in value]
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    return onnx.helper.make_attribute(name, value, attr_type=atype)


def save(model: ir.Model, path: str | os.PathLike) -> None:
    """Write the model atomically; models over 1.8 GB put weights in 'NAME.data' beside it."""
    from ember.fileutil import atomic_write_bytes

    proto = export_model(model)
    path = Path(path)
    if proto.ByteSize() > 1_800_000_000:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
        return
    atomic_write_bytes(path, proto.SerializeToString())
