"""How `ember tune` measures: the default schedules (Ember's, dlight's on CUDA)
timed here or on an RPC device as the records to beat, MetaSchedule's builder
and runner for the candidates, and the model's end-to-end latency with and
without the tuned schedules."""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.driver import build as tvm_build
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
from tvm.support import cc

from ember.autotune.database import TuningDatabase, tuned_slower
from ember.compiler.backend.tvm import lower
from ember.compiler.backend.tvm.pipeline import for_target
from ember.compiler.driver import signature
from ember.compiler.runtime import remote
from ember.passes import calibration


def default_schedule(func, tgt, tvm_target):
    """The schedule a kernel gets untuned: Ember's on CPUs, dlight's on CUDA."""
    return for_target(tgt).default_schedule(func, tvm_target)


def measure_schedules(extracted, schedules, tgt, tvm_target, builder, runner) -> list[tuple[Any, float] | None]:
    """(schedule, mean seconds) for each task's schedule (None: none, or it failed to
    build or run; a kernel over run-time sizes, a shape computation's, cannot be timed alone),
    built and timed by MetaSchedule's builder and runner."""
    args = {}
    for i, sch in enumerate(schedules):
        if sch is not None:
            try:
                args[i] = ms.arg_info.ArgInfo.from_prim_func(extracted[i].dispatched[0]["main"])
            except Exception:  # a symbolic shape: no tensors to time it on
                pass
    todo = sorted(args)
    built = builder.build([ms.builder.BuilderInput(schedules[i].mod, tvm_target) for i in todo])
    ok = [(i, b) for i, b in zip(todo, built) if b.error_msg is None]
    inputs = [ms.runner.RunnerInput(b.artifact_path, device_type=for_target(tgt).DEVICE, args_info=args[i])
              for i, b in ok]
    out: list[tuple[Any, float] | None] = [None] * len(extracted)
    for (i, _), future in zip(ok, runner.run(inputs)):
        r = future.result()
        if r.error_msg is None and r.run_secs:
            out[i] = (schedules[i], sum(float(x) for x in r.run_secs) / len(r.run_secs))
    return out


def local_device(tgt, rpc):
    """The device tasks are measured on here, or None (remote or foreign targets)."""
    if rpc:
        return None
    dev = tvm.device(for_target(tgt).DEVICE, 0)
    return dev if dev.exist and (tgt.is_host or tgt.kind != "llvm") else None


def device_cores(rpc: dict[str, Any]) -> int:
    """The thread count of a device's TVM runtime (its cores), asked over RPC."""
    sess = remote.connect(tracker=f"{rpc['host']}:{rpc['port']}", key=rpc["key"])
    try:
        return int(sess.get_function("runtime.NumThreads")())
    except Exception as e:
        raise remote.RemoteError(f"cannot ask the device for its core count: {str(e).strip()[:200]}") from None


def end_to_end(m, relax_mod, tgt, database: TuningDatabase, dev, say, rounds: int = 5,
               precision: str = "fp32") -> dict[str, float] | None:
    """The model's real latency (VM included) with default schedules and with
    the database's, timed in alternation so both see the same machine state;
    None when an input has no fixed shape."""


    specs, _ = signature(m.graph)
    if any(s["shape"] is None or not all(isinstance(d, int) for d in s["shape"]) for s in specs):
        say("end-to-end check skipped: the model has inputs without a fixed shape")
        return None
    say("building the model with and without the tuned schedules to time it end to end")
    feed = calibration.random_batches(specs, 1)[0]
    args = [tvm.runtime.tensor(feed[s["name"]], dev) for s in specs]
    vms = {"default_ms": relax.VirtualMachine(lower.build(relax_mod, tgt, precision=precision), dev),
           "tuned_ms": relax.VirtualMachine(lower.build(relax_mod, tgt, database.ms_database(), precision=precision),
                                            dev)}
    times: dict[str, list[float]] = {k: [] for k in vms}
    for _ in range(rounds):
        for k, vm in vms.items():
            times[k].append(vm.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=100)(*args).mean * 1e3)
    result = {k: float(np.median(v)) for k, v in times.items()}
    say(f"end to end: {result['default_ms']:.3f} ms with default schedules, {result['tuned_ms']:.3f} ms tuned")
    if tuned_slower(result):
        say("the tuned schedules made this model slower end to end (kernels measured alone do not always add "
            "up): `ember compile --db` will build it with its default schedules until tuning does better")
    return result


def build_candidate(mod, target, _params):
    """MetaSchedule's default build without its import of the tensor
    intrinsics (12 s in every fresh builder worker; candidates arrive
    already tensorized)."""
    with target:  # TVM's CUDA compile callback reads the sm_XX from the target in scope
        return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_shared(linker: str, mod) -> str:
    """MetaSchedule's export for a device with no linker of its own (its
    default, a .tar of objects, is linked on the device): a shared library
    cross-linked here. Runs in the builder's worker processes."""
    path = os.path.join(tempfile.mkdtemp(prefix="ember-tune-"), "kernel.so")
    mod.export_library(path, fcompile=cc.cross_compiler(linker))
    return path


def builder(tgt):
    """MetaSchedule's builder for the candidates: `build_candidate` in worker
    processes, exported with the target's cross linker where it has one."""
    linker = tgt.info.linker if tgt.cross_compiler() is not None else None
    return PooledBuilder(build_candidate, functools.partial(export_shared, linker) if linker else None,
                         timeout_sec=300)


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's LocalBuilder, keeping its worker processes between batches. LocalBuilder
    starts new ones for every batch (each imports TVM and this module: on 2 cores, a third of a
    batch's build time went to that); these are replaced every `restart` batches instead (what
    LocalBuilder's fresh start guards against: memory that grows in long-lived workers)."""

    def __init__(self, f_build, f_export, timeout_sec: float, max_workers: int | None = None, restart: int = 32):
        super().__init__()
        self.f_build, self.f_export, self.timeout_sec = f_build, f_export, timeout_sec
        self.max_workers, self.restart = max_workers or os.cpu_count() or 1, restart
        self.pool, self.batches = None, 0

    def build(self, build_inputs):
        from tvm.support.popen_pool import PopenPoolExecutor, StatusKind
        from tvm.s_tir.meta_schedule.builder import local_builder

        if self.pool is None or self.batches >= self.restart:
            if self.pool is not None:
                self.pool.shutdown()
            self.pool, self.batches = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec), 0
        self.batches += 1
        jobs = [(self.f_build, self.f_export, b.mod, b.target, local_builder._serialize_params(b.params))
                for b in build_inputs]
        results = []
        for r in self.pool.map_with_error_catching(lambda job: local_builder._worker_func(*job), jobs):
            if r.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(ms.builder.BuilderResult(None, f"build failed: {r.value}"))
        return results


def runner(rpc: dict[str, Any] | None):
    """MetaSchedule's runner: here, or on the devices an RPC tracker lists."""

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    if not rpc:
        return ms.runner.LocalRunner(timeout_sec=120, evaluator_config=evaluator)
    config = ms.runner.RPCConfig(tracker_host=rpc["host"], tracker_port=int(rpc["port"]), tracker_key=rpc["key"],
                                 session_timeout_sec=rpc.get("timeout", 300))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator,
                               max_workers=rpc.get("workers"))


def measure_defaults(extracted, tgt, tvm_target, rpc, builder_, runner_, say) -> list[tuple[Any, float] | None]:
    """Each task's default schedule and its mean seconds, here or on the RPC device, built and
    timed by MetaSchedule's builder and runner as its candidates are (without them as records, a
    searched schedule replaced Ember's dot-product kernels however slow); None where that failed
    (or for foreign targets without RPC). The same path as the candidates' (on a quiet machine the
    two agree within 2% over ResNet-50's kernels). Timings still drift over a run: records with the
    default's own decisions measured later came out 5-40% faster than the default measured first,
    which is why the end-to-end timing decides what `compile --db` uses."""
    if local_device(tgt, rpc) is None and not rpc:
        return [None] * len(extracted)
    say(f"measuring the {len(extracted)} default schedules" + (" on the device" if rpc else ""))
    schedules = [default_schedule(t.dispatched[0]["main"], tgt, tvm_target) for t in extracted]
    return measure_schedules(extracted, schedules, tgt, tvm_target, builder_, runner_)
