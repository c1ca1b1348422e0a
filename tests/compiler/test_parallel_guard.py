"""parallel_guard: parallel loops of small static work run serially; large or run-time work stays parallel."""

import numpy as np
import pytest
import tvm
from ember import targets
from ember.compiler.backend.tvm import parallel_guard, schedule, tir_pipeline


def _scheduled(shape):
    from tvm import te, tirx

    dims = [tirx.Var(d, "int64") if isinstance(d, str) else d for d in shape]
    a = te.placeholder(dims, "float32", name="a")
    b = te.compute(dims, lambda *i: a(*i) * 2 + 1, name="b")
    return schedule.schedule_func(te.create_prim_func([a, b]))


@pytest.mark.parametrize("shape, parallel", [
    ((4, 96), False),               # 384 iterations: serial
    ((64, 1024), True),             # 64K: parallel
    (("n", 96), True),              # run-time rows: stays parallel
])
def test_small_static_work_runs_serially(shape, parallel):
    func = _scheduled(shape)
    assert "T.parallel(" in func.script()
    guarded = parallel_guard.guard_func(func)
    assert ("T.parallel(" in guarded.script()) == parallel
    assert parallel_guard.guard_func(guarded).same_as(guarded)  # idempotent
    lib = tvm.compile(tvm.IRModule({"main": guarded}), target=targets.parse("host").tvm_target())
    x = np.random.default_rng(0).standard_normal([7 if d == "n" else d for d in shape]).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), x * 2 + 1)


def test_run_time_work_chooses_parallel_or_serial_when_it_runs():
    """Over a run-time row count the lowered function holds the loop twice, parallel under a
    test of its work, and computes the same at 1, 7 and 1000 rows."""
    from tvm.tirx import compilation_pipeline

    func = _scheduled(("n", 96))
    tgt = targets.parse("host").tvm_target()
    name = tir_pipeline.register()
    pipeline, host, _ = compilation_pipeline.get_tir_pipeline(name)
    lowered = host()(pipeline(tvm.tirx.transform.BindTarget(tgt.with_host(tgt))(tvm.IRModule({"main": func}))))
    text = lowered.script()
    assert "T.parallel(" in text and f">= T.float64({parallel_guard.RUN_TIME_MIN_WORK}" in text
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=tgt, pipeline=name)
    for rows in (1, 7, 1000):
        x = np.random.default_rng(rows).standard_normal((rows, 96)).astype(np.float32)
        out = tvm.runtime.tensor(np.zeros_like(x))
        lib(tvm.runtime.tensor(x), out)
        np.testing.assert_array_equal(out.numpy(), x * 2 + 1)


def test_inner_extents_bound_inside_the_loop_do_not_reach_its_condition():
    """DETR's masked softmax over run-time rows: after lowering, the row loops' extents are values
    bound inside the parallel loop, which its run-time condition must not read ("used before
    definition" at build time)."""
    from helpers import init, model, ort_run, tensor
    from onnx import TensorProto
    from onnx import helper as h

    import ember

    nodes = [h.make_node("Reshape", ["x", "rows"], ["r"]), h.make_node("Softmax", ["r"], ["s"], axis=-1),
             h.make_node("IsNaN", ["s"], ["bad"]), h.make_node("Where", ["bad", "zero", "s"], ["y"])]
    m = model(nodes, [tensor("x", ["n", 4, "h", "w"]), tensor("zero", [], TensorProto.FLOAT)], [tensor("y", None)],
              [init("rows", np.array([0, 0, -1], np.int64))])  # softmax over h * w: an expression
    cm = ember.compile(m)
    for hw in (1, 3, 9):
        feeds = {"x": np.random.default_rng(hw).standard_normal((2, 4, hw, hw + 1)).astype(np.float32),
                 "zero": np.zeros((), np.float32)}
        np.testing.assert_allclose(cm.run(feeds)["y"], ort_run(m, feeds)[0], rtol=1e-5, atol=1e-7)
