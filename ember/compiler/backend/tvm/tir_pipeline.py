"""Ember's TIR pipeline: TVM's default lowering with two additions.

- After TVM's LoopPartition, a simplification. Ember's schedules mark loops over a run-time
  extent for partitioning (`pragma_loop_partition_hint`: a softmax row, the column tiles of
  attention's scores) so that all but the last iteration lose the predicate that would make
  TVM's VectorizeLoop emit scalar code. The partition replaces the predicate's bound check by
  `True` but leaves it in a disjunction (`True or j == 0`, from a crop's region), and
  VectorizeLoop, which runs next, sees a lane-dependent condition: the stores went scalar again.
- Before the host finalization, `parallel_guard.run_time_guard_pass` (parallel or serial by the
  work of the call).

`register()` registers it with TVM under `NAME`, for tvm.compile(tir_pipeline=...).
"""

from __future__ import annotations

NAME = "ember"


def _simplified_partitions(pipeline):
    """`pipeline` (TVM's default TIR lowering, a module pass) with a StmtSimplify after its
    LoopPartition. TVM builds the pass list when the pass runs, by attribute lookup: the
    LoopPartition it finds then is a sequence of both (restored afterwards)."""
    import tvm
    from tvm import s_tir, tirx

    @tvm.transform.module_pass(opt_level=0, name="EmberTIRLowering")
    def _pass(mod, _ctx):
        original = s_tir.transform.LoopPartition
        s_tir.transform.LoopPartition = lambda: tvm.transform.Sequential([original(), tirx.transform.StmtSimplify()])
        try:
            return pipeline(mod)
        finally:
            s_tir.transform.LoopPartition = original

    return _pass


def register() -> str:
    """Registers Ember's pipeline (idempotent); returns its name."""
    import tvm
    from tvm.tirx import compilation_pipeline

    from ember.compiler.backend.tvm.parallel_guard import run_time_guard_pass

    def factory(**kwargs):
        pipeline, host, device = compilation_pipeline.get_tir_pipeline("default", **kwargs)
        return (_simplified_partitions(pipeline), lambda: tvm.transform.Sequential([run_time_guard_pass(), host()]),
                device)

    compilation_pipeline.register_tir_pipeline(NAME, factory)
    return NAME
