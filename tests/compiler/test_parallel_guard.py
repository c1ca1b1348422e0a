"""parallel_guard: parallel loops of small static work run serially; large or run-time work stays parallel."""

import numpy as np
import pytest
import tvm
from ember import targets
from ember.compiler.backend.tvm import parallel_guard, schedule


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
    name = parallel_guard.register_tir_pipeline()
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
