"""ONNX -> Ember IR -> ONNX is lossless on every model of the conformance
suites: onnxruntime gives identical outputs on the exported model (or fails
on both), and the graph keeps its nodes, initializers and signature."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from ember.compiler.ir import onnx_io
from ember.models import zoo


def _node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in collect_testcases(None):
            inputs = case.data_sets[0][0] if case.data_sets else None
            yield f"node/{case.name}", case.model, inputs


def _load_pb(path: Path):
    for proto_type, convert in ((onnx.TensorProto, onnx.numpy_helper.to_array),
                                (onnx.SequenceProto, onnx.numpy_helper.to_list),
                                (onnx.OptionalProto, onnx.numpy_helper.to_optional)):
        p = proto_type()
        try:
            p.ParseFromString(path.read_bytes())
            return convert(p)
        except Exception:
            continue
    raise ValueError(path)


def _disk_cases():
    data = zoo.onnx_test_data_dir()
    for suite in ("simple", "pytorch-converted", "pytorch-operator"):
        for d in sorted((data / suite).iterdir()):
            sets = sorted(d.glob("test_data_set_*"))
            inputs = [_load_pb(p) for p in sorted(sets[0].glob("input_*.pb"))] if sets else None
            yield f"{suite}/{d.name}", d / "model.onnx", inputs
    for name in zoo.LIGHT_MODELS:
        yield f"light/{name}", zoo.light_model_path(name), None


CASES = {name: (model, inputs) for name, model, inputs in [*_node_cases(), *_disk_cases()]}


def _feeds(model: onnx.ModelProto, inputs):
    if inputs is None:
        return zoo.random_inputs(model)
    names = [i.name for i in zoo.runtime_inputs(model)]
    return dict(zip(names, inputs))


def _ort(model: onnx.ModelProto, feeds):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    except Exception as e:
        return f"{type(e).__name__}"


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def test_suite_is_complete():
    assert len(CASES) > 2000


@pytest.mark.parametrize("name", sorted(CASES))
def test_roundtrip(name):
    model, inputs = CASES[name]
    if isinstance(model, Path):
        model = onnx.load(str(model))
    exported = onnx_io.export_model(onnx_io.import_model(model))
    # structure: same nodes in the same order, same initializer bytes, same signature
    assert [(n.op_type, n.domain, list(n.input), list(n.output)) for n in exported.graph.node] == \
           [(n.op_type, n.domain, list(n.input), [o for o in n.output]) for n in model.graph.node] or \
           _only_trailing_empty_outputs_dropped(model, exported)
    assert {t.name: t.SerializeToString() for t in exported.graph.initializer} == \
           {t.name: t.SerializeToString() for t in model.graph.initializer}
    assert [i.name for i in exported.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in exported.graph.output] == [o.name for o in model.graph.output]
    assert {(o.domain, o.version) for o in exported.opset_import} == {(o.domain, o.version) for o in model.opset_import}
    feeds = _feeds(model, inputs)
    before, after = _ort(model, feeds), _ort(exported, feeds)
    if isinstance(before, str):
        assert isinstance(after, str), f"onnxruntime failed on the original ({before}) but ran the export"
    else:
        assert _same(before, after), "onnxruntime gives different outputs on the exported model"


def _only_trailing_empty_outputs_dropped(model, exported) -> bool:
    def norm(n):
        outs = list(n.output)
        while outs and outs[-1] == "":
            outs.pop()
        return n.op_type, n.domain, list(n.input), outs

    return [norm(n) for n in exported.graph.node] == [norm(n) for n in model.graph.node]
