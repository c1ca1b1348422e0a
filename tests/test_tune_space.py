"""Ember's schedules as MetaSchedule's design space: the rule's decisions are the
space's defaults, the search varies them, and a seed makes the candidates drawn
depend only on the measurements."""

from __future__ import annotations

import re

import pytest
import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ember import targets
from ember.autotune.tune import tune_contexts
from ember.compiler.backend.tvm import schedule
from ember.compiler.backend.tvm.pipeline import legalize_passes
from ember.compiler.driver import lower_model
from tests.test_debug import tiny_cnn


@pytest.fixture(scope="module")
def tasks():
    tgt = targets.parse("host")
    _, mod, _ = lower_model(tiny_cnn(), tgt)
    tvm_target = tgt.tvm_target()
    with tvm_target:
        mod = tvm.transform.Sequential(legalize_passes(tgt))(mod)
    return ms.relax_integration.extract_tasks(mod, tvm_target), tvm_target


def _llvm(sch, tvm_target) -> str:
    text = tvm.tirx.build(sch.mod["main"].with_attr("global_symbol", "main"), target=tvm_target).inspect_source("ll")
    text = re.sub(r'"0x[0-9a-f]+', '"ADDR', text)  # TBAA metadata names carry buffer addresses
    text = re.sub(r"(\w+)_0\b", r"\1", text)  # a split of one iteration only renames its loop
    return re.sub(r"[ \t]+", " ", text)  # ...and so moves the column of the comments after labels


def test_the_default_decisions_give_the_default_kernel(tasks):
    extracted, tvm_target = tasks
    spaces = [t for t in extracted if schedule.has_design_space(t.dispatched[0]["main"])]
    assert {t.task_name for t in spaces} >= {"fused_ember_conv2d_add_relu", "fused_ember_matmul_add2"}
    assert not schedule.has_design_space(next(t for t in extracted if t.task_name == "transpose").dispatched[0]["main"])
    for t in spaces:
        sch = tvm.s_tir.Schedule(t.dispatched[0])
        schedule.design_space(sch)
        (_, rows), (_, unroll) = schedule.decisions(sch.trace)
        fresh = tvm.s_tir.Schedule(t.dispatched[0])
        name, _ = schedule._kernel(schedule._blocks(fresh))
        mr = int(fresh.get(fresh.get_sblock(name)).annotations["ember_mr"])
        assert (rows, unroll) == (mr, 1)  # the rule's values
        assert _llvm(sch, tvm_target) == _llvm(schedule.default_schedule(t.dispatched[0]["main"]), tvm_target)


def test_another_decision_is_another_kernel_that_computes_the_same(tasks):
    import numpy as np

    extracted, tvm_target = tasks
    task = next(t for t in extracted if t.task_name == "fused_ember_conv2d1_add1_relu1")
    sch = tvm.s_tir.Schedule(task.dispatched[0])
    schedule.design_space(sch)
    insts = [i for i in sch.trace.insts if i.kind.name == "SampleCategorical"]
    other = sch.trace.with_decision(insts[0], len(insts[0].attrs[0]) - 1, remove_postproc=True)
    other = other.with_decision(insts[1], len(insts[1].attrs[1]) - 1, remove_postproc=True)
    varied = tvm.s_tir.Schedule(task.dispatched[0])
    other.apply_to_schedule(varied, remove_postproc=True)
    assert schedule.decisions(varied.trace) != schedule.decisions(sch.trace)
    default = schedule.default_schedule(task.dispatched[0]["main"])
    rng = np.random.default_rng(0)
    params = task.dispatched[0]["main"].params
    results = []
    for s in (default, varied):
        lib = tvm.tirx.build(s.mod["main"].with_attr("global_symbol", "main"), target=tvm_target)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype(p.dtype))
                for p in params[:-1]]
        rng = np.random.default_rng(0)  # the same inputs for both
        out = tvm.runtime.tensor(np.zeros([int(d) for d in params[-1].shape], params[-1].dtype))
        lib["main"](*args, out)
        results.append(out.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-5)
    assert np.abs(results[0]).max() > 0


def test_a_depthwise_kernels_tile_is_searched_and_computes_the_same():
    """The depthwise convolution's register tile (pixels x channels) is a pair of decisions:
    the rule's give the default kernel; the largest ones another kernel with the same values."""
    import numpy as np
    from tvm import te

    from ember.compiler.backend.tvm import kernels

    x, wt = te.placeholder((1, 10, 16, 64), name="x"), te.placeholder((3, 3, 64), name="wt")
    func = te.create_prim_func([x, wt, kernels.depthwise_nhwc(x, wt, (1, 1), (1, 1, 1, 1), (1, 1))])
    tvm_target = targets.parse("host").tvm_target()
    assert schedule.has_design_space(func)
    sch = tvm.s_tir.Schedule(func)
    schedule.design_space(sch)
    assert schedule.decisions(sch.trace) == [("pixels per register tile", 8), ("channels per register tile", 16)]
    assert _llvm(sch, tvm_target) == _llvm(schedule.default_schedule(func), tvm_target)
    trace = sch.trace
    for inst in [i for i in sch.trace.insts if i.kind.name == "SampleCategorical"]:
        trace = trace.with_decision(inst, len(inst.attrs[0]) - 1, remove_postproc=True)
    varied = tvm.s_tir.Schedule(func)
    trace.apply_to_schedule(varied, remove_postproc=True)
    assert [v for _, v in schedule.decisions(varied.trace)] == [16, 64]
    rng = np.random.default_rng(3)
    args = [rng.standard_normal((1, 10, 16, 64)).astype(np.float32), rng.standard_normal((3, 3, 64)).astype(np.float32)]
    results = []
    for s in (schedule.default_schedule(func), varied):
        lib = tvm.tirx.build(s.mod["main"].with_attr("global_symbol", "main"), target=tvm_target)
        out = tvm.runtime.tensor(np.zeros((1, 10, 16, 64), np.float32))
        lib["main"](*(tvm.runtime.tensor(a) for a in args), out)
        results.append(out.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)
    assert np.abs(results[0]).max() > 0


@derived_object
class HashBuilder(ms.builder.PyBuilder):
    """Builds nothing: names each candidate by its structure."""

    def build(self, build_inputs):
        return [ms.builder.BuilderResult(str(tvm_ffi.structural_hash(i.mod)), None) for i in build_inputs]


@derived_object
class Done(ms.runner.PyRunnerFuture):
    def __init__(self, result):
        super().__init__()
        self.res = result

    def done(self):
        return True

    def result(self):
        return self.res


@derived_object
class HashRunner(ms.runner.PyRunner):
    """Recorded measurements: each candidate's time is a fixed function of its structure."""

    def run(self, runner_inputs):
        return [Done(ms.runner.RunnerResult([1e-3 * (1 + int(i.artifact_path) % 997 / 997)], None))
                for i in runner_inputs]


def _draw(tasks, seed: int, work: str) -> list[tuple[str, list[int]]]:
    extracted, _ = tasks
    spaces = [t for t in extracted if t.task_name.startswith("fused_ember_conv2d")]
    drawn: list[tuple[str, list[int]]] = []

    @derived_object
    class Record(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            drawn.extend((spaces[task_id].task_name, schedule.decisions(c.sch.trace)) for c in measure_candidates)

    small = ms.search_strategy.EvolutionarySearch(population_size=32, init_min_unmeasured=8, genetic_num_iters=2)
    contexts, weights = tune_contexts(spaces, work, 1, seed, strategy=small)
    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work, max_trials_global=18,
                       num_trials_per_iter=4, builder=HashBuilder(), runner=HashRunner(), database="memory",
                       cost_model="xgb", measure_callbacks=[Record()], task_scheduler="round-robin")
    return drawn


def test_the_same_seed_and_measurements_draw_the_same_candidates(tasks, tmp_path):
    first = _draw(tasks, 7, str(tmp_path / "a"))
    assert len(first) >= 12 and len({tuple(d) for _, d in first}) > 3  # the search varied the decisions
    assert _draw(tasks, 7, str(tmp_path / "b")) == first
    assert _draw(tasks, 8, str(tmp_path / "c")) != first


def test_a_database_from_another_cpu_warm_starts_tuning_here(tmp_path):
    """Records from a database tuned on another CPU of the same ISA are measured here
    first and kept as records here: never taken on trust, never refused for the CPU."""
    import json

    import onnx

    from ember.autotune.database import TuningDatabase
    from ember.autotune.tune import tune
    from ember.errors import EmberError

    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    tune(str(tmp_path / "m.onnx"), db=str(tmp_path / "there"), trials=4, seed=1)
    manifest_path = tmp_path / "there" / "ember-tuning.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["device"].update(cpu="Another CPU", mcpu="skylake-avx512")  # as if tuned on another machine
    manifest_path.write_text(json.dumps(manifest))
    report = tune(str(tmp_path / "m.onnx"), db=str(tmp_path / "here"), trials=1, seed=1,
                  warm_start=str(tmp_path / "there"))
    assert "Another CPU" in report.warm_start_from
    measured = [w for w in report.warm_start if w["here_ms"] is not None]
    assert len(measured) >= 4 and all(w["there_ms"] is not None for w in measured)
    assert all(isinstance(w["kept"], bool) for w in report.warm_start)
    here = TuningDatabase.open(tmp_path / "here").stats()
    assert here["tuned_workloads"] >= len(measured)
    assert "Warm start from" in report.markdown()
    # another ISA's schedules do not apply: refused in one line
    manifest["device"]["triple"] = "aarch64-linux-gnu"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(EmberError, match="not x86_64"):
        tune(str(tmp_path / "m.onnx"), db=str(tmp_path / "here2"), trials=1, warm_start=str(tmp_path / "there"))
