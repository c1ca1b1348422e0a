"""`ember tune`: MetaSchedule search over a model's kernels, kept in a tuning database.

1. The model is lowered exactly as `compile` lowers it (passes, Relax, NHWC,
   Ember's kernels, fusion); every distinct fused PrimFunc is a task,
   weighted by how often the model calls it.
2. Each task's default Ember schedule is measured first and stored as a
   record, so the database always holds the better of Ember's schedule and
   the search's (MetaSchedule keeps the fastest record per workload).
3. MetaSchedule tunes the tasks (evolutionary search, XGBoost cost model,
   gradient task scheduler: trials go to the tasks that dominate the
   end-to-end estimate) until the trial or time budget runs out. Records
   are appended as each batch is measured: an interrupted run keeps all
   but the batch in flight, and running again resumes from them.
4. A report (per task: trials, default and best latency, share of the
   end-to-end estimate) is written as JSON and Markdown, with a PNG of the
   estimated end-to-end latency over tuning time.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ember.errors import EmberError
from ember.fileutil import atomic_write_text
from ember.autotune.database import TuningDatabase, model_key, tuned_slower
from ember.compiler.backend.tvm.pipeline import for_target


@dataclass
class TaskStat:
    name: str
    weight: int
    default_ms: float | None = None
    best_ms: float | None = None
    trials: int = 0

    def current_ms(self) -> float | None:
        vals = [v for v in (self.default_ms, self.best_ms) if v is not None]
        return min(vals) if vals else None


@dataclass
class TuneReport:
    model: str
    target: str
    db: str
    budget: str
    tasks: list[TaskStat] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds, end-to-end ms estimate)
    seconds: float = 0.0
    interrupted: bool = False
    end_to_end: dict[str, float] | None = None  # measured model latency, default vs tuned schedules

    def estimate_ms(self) -> float:
        return sum(t.weight * (t.current_ms() or 0.0) for t in self.tasks)

    def default_ms(self) -> float | None:
        """The kernel-time estimate with default schedules (None where they were
        not measured: remote devices)."""
        if any(t.default_ms is None for t in self.tasks):
            return None
        return sum(t.weight * t.default_ms for t in self.tasks)

    def to_json(self) -> dict[str, Any]:
        total = self.estimate_ms() or 1.0
        default = self.default_ms()
        return {"model": self.model, "target": self.target, "db": self.db, "budget": self.budget,
                "summary": self.summary(),
                "seconds": round(self.seconds, 1), "interrupted": self.interrupted,
                "default_estimate_ms": None if default is None else round(default, 4), "tuned_estimate_ms": round(self.estimate_ms(), 4),
                "tasks": [{"name": t.name, "weight": t.weight, "trials": t.trials,
                           "default_ms": t.default_ms, "best_ms": t.best_ms,
                           "share": round(t.weight * (t.current_ms() or 0.0) / total, 4)} for t in self.tasks],
                "end_to_end": self.end_to_end,
                "timeline": [[round(s, 1), round(ms, 4)] for s, ms in self.timeline]}

    def markdown(self) -> str:
        d = self.to_json()
        lines = [f"# Tuning report: {self.model}", "",
                 f"target {self.target}; database {self.db}; budget {self.budget}; "
                 f"{d['seconds']} s{' (interrupted)' if self.interrupted else ''}", "",
                 self.summary() + " (kernel time: the sum over kernels of calls x best latency, "
                 "without the VM's own overhead)", "", *self._end_to_end_lines(),
                 "| task | calls | trials | default ms | tuned ms | share |", "|---|---|---|---|---|---|"]
        for t in sorted(d["tasks"], key=lambda t: -t["share"]):
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            lines.append(f"| {t['name']} | {t['weight']} | {t['trials']} | {fmt(t['default_ms'])} | "
                         f"{fmt(t['best_ms'])} | {100 * t['share']:.1f}% |")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        d = self.default_ms()
        if d is None:
            return (f"Best measured kernel time {self.estimate_ms():.3f} ms "
                    "(default schedules are measured on this machine only)")
        return f"Kernel time {d:.3f} ms with default schedules, {self.estimate_ms():.3f} ms after tuning"

    def _end_to_end_lines(self) -> list[str]:
        e = self.end_to_end
        if not e:
            return []
        return [f"Model latency, measured end to end: {e['default_ms']:.3f} ms with default schedules, "
                f"{e['tuned_ms']:.3f} ms with the tuned ones ({e['default_ms'] / e['tuned_ms']:.2f}x)", ""]

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        out = [directory / "tuning-report.json", directory / "tuning-report.md"]
        atomic_write_text(out[0], json.dumps(self.to_json(), indent=1) + "\n")
        atomic_write_text(out[1], self.markdown())
        png = directory / "tuning-curve.png"
        if self._plot(png):
            out.append(png)
        return out

    def _plot(self, path: Path) -> bool:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        if not self.timeline:
            return False
        xs = [s / 60 for s, _ in self.timeline]
        ys = [ms for _, ms in self.timeline]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.step(xs, ys, where="post")
        ax.set_xlabel("tuning time (min)")
        ax.set_ylabel("estimated kernel time (ms)")
        ax.set_title(f"{Path(self.model).stem} on {self.target.split(' +')[0]}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return True


def parse_duration(text: str) -> float:
    """'90s', '20m', '1.5h' or plain seconds -> seconds."""
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise ValueError(f"cannot read duration {text!r}; use e.g. 90s, 20m or 1.5h") from None
    if value <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return value


def _default_schedule(func, tgt, tvm_target):
    """The schedule a kernel gets untuned: Ember's on CPUs, dlight's on CUDA."""
    return for_target(tgt).default_schedule(func, tvm_target)


def _measure_default(func, tgt, tvm_target, dev, repeat: int = 3) -> tuple[Any, float] | None:
    """A task's untuned schedule and its measured mean seconds, on this machine's CPU or GPU."""
    import numpy as np
    import tvm

    sch = _default_schedule(func, tgt, tvm_target)
    if sch is None:
        return None
    try:
        with tvm_target:
            lib = tvm.tirx.build(sch.mod["main"].with_attr("global_symbol", "main"), target=tvm_target)
        args = []
        for p in func.params:
            shape = [int(d) for d in p.shape]
            data = np.zeros(shape, dtype=p.dtype)
            args.append(tvm.runtime.tensor(data, dev))
        secs = lib.time_evaluator("main", dev, number=3, repeat=repeat, min_repeat_ms=20)(*args).mean
    except Exception:
        return None
    return sch, secs


def _measure_defaults_remote(extracted, tgt, tvm_target, builder, runner) -> list[tuple[Any, float] | None]:
    """Each task's default schedule and its mean seconds on the RPC device,
    built and timed by MetaSchedule's own builder and runner (as its
    candidates are), or None where that failed. Without them as records, a
    searched schedule replaced Ember's dot-product kernels however slow."""
    from tvm.s_tir import meta_schedule as ms

    schedules = [_default_schedule(t.dispatched[0]["main"], tgt, tvm_target) for t in extracted]
    todo = [i for i, sch in enumerate(schedules) if sch is not None]
    built = builder.build([ms.builder.BuilderInput(schedules[i].mod, tvm_target) for i in todo])
    ok = [(i, b) for i, b in zip(todo, built) if b.error_msg is None]
    inputs = [ms.runner.RunnerInput(b.artifact_path, device_type=for_target(tgt).DEVICE,
                                    args_info=ms.arg_info.ArgInfo.from_prim_func(extracted[i].dispatched[0]["main"]))
              for i, b in ok]
    out: list[tuple[Any, float] | None] = [None] * len(extracted)
    for (i, _), future in zip(ok, runner.run(inputs)):
        r = future.result()
        if r.error_msg is None and r.run_secs:
            out[i] = (schedules[i], sum(float(x) for x in r.run_secs) / len(r.run_secs))
    return out


def _local_device(tgt, rpc):
    """The device tasks are measured on here, or None (remote or foreign targets)."""
    import tvm

    if rpc:
        return None
    dev = tvm.device(for_target(tgt).DEVICE, 0)
    return dev if dev.exist and (tgt.is_host or tgt.kind != "llvm") else None


def tune(model: Any, target: str = "host", db: str = "ember-tuning", *, trials: int | None = None,
         seconds: float | None = None, pipeline=None, opt_level: int | None = None, mcpu: str | None = None,
         features=None, rpc: dict[str, Any] | None = None, report_dir: str | None = None,
         progress: Callable[[str], None] | None = None, bind: dict[str, Any] | None = None,
         input_shapes: dict[str, Any] | None = None) -> TuneReport:
    """Tune a model's kernels for a target into database `db` (created if missing); `bind`
    fixes graph inputs TVM needs as constants and `input_shapes` symbolic input dims,
    as in `driver.compile` (tune with the shapes you compile with)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    from ember import targets

    from ember.compiler import driver
    from ember.compiler.backend.tvm.pipeline import legalize_passes
    from ember.compiler.backend.tvm.intrinsics import import_tvm_intrinsics
    from ember.compiler.runtime.isolate import use_all_cores
    from ember.compiler.backend.tvm.target import prepare
    from ember.compiler.runtime.native_stderr import filtered_native_stderr

    say = progress or (lambda msg: None)
    use_all_cores()  # before MetaSchedule's workers start: they inherit the thread count
    if trials is None and seconds is None:
        trials = 64
    tgt = targets.parse(target, mcpu=mcpu, features=features)
    tgt.check_toolchain()
    prepare(tgt)
    if not rpc and tgt.runtime_only:
        raise EmberError(f"{tgt.describe()} code cannot be measured on this machine; tune on devices of that "
                         "kind through a TVM RPC tracker: --tracker HOST:PORT --key KEY")
    if rpc and not tgt.num_cores:  # MetaSchedule's CPU rules need the device's core count
        tgt = targets.parse(target, mcpu=mcpu, features=features, num_cores=_device_cores(rpc))
    database = TuningDatabase.open(db, tgt, create=True)
    if database.repaired:
        say(f"dropped {database.repaired} incomplete record(s) left by an interrupted run")
    m, relax_mod, _ = driver.lower_model(model, tgt, pipeline, opt_level=opt_level, say=say, bind=bind,
                                         input_shapes=input_shapes)
    tvm_target = tgt.tvm_target()
    with tvm_target:
        mod = tvm.transform.Sequential(legalize_passes(tgt))(relax_mod)
    extracted = ms.relax_integration.extract_tasks(mod, tvm_target)
    report = TuneReport(model=str(model), target=tgt.describe(), db=str(db),
                        budget=" and ".join(x for x in (f"{trials} trials" if trials else "",
                                                         f"{seconds:.0f} s" if seconds else "") if x))
    report.tasks = [TaskStat(t.task_name, int(t.weight)) for t in extracted]
    ms_db = database.ms_database()
    t0 = time.monotonic()

    runner = _runner(rpc)
    linker = tgt.info.linker if tgt.cross_compiler() is not None else None
    builder = ms.builder.LocalBuilder(timeout_sec=300, f_build=_build,
                                      f_export=functools.partial(_export_shared, linker) if linker else None)

    # 1. the default schedules (Ember's, dlight's on CUDA), measured, as the records to beat
    dev = _local_device(tgt, rpc)
    if dev is not None:
        measured = []
        for i, task in enumerate(extracted):
            say(f"measuring default schedule {i + 1}/{len(extracted)}: {task.task_name}")
            measured.append(_measure_default(task.dispatched[0]["main"], tgt, tvm_target, dev))
    elif rpc:
        say(f"measuring the {len(extracted)} default schedules on the device")
        measured = _measure_defaults_remote(extracted, tgt, tvm_target, builder, runner)
    else:
        measured = [None] * len(extracted)
    for i, (task, got) in enumerate(zip(extracted, measured)):
        if got is None:
            continue
        sch, secs = got
        report.tasks[i].default_ms = secs * 1e3
        wl = ms_db.commit_workload(task.dispatched[0])
        ms_db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, wl, [secs], tvm_target, ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])))
    report.timeline.append((time.monotonic() - t0, report.estimate_ms()))
    if report.default_ms() is not None:
        say(f"{len(extracted)} tasks; default schedules: {report.estimate_ms():.3f} ms of kernel time")

    deadline = None if seconds is None else t0 + seconds
    if deadline is not None and time.monotonic() >= deadline:
        say("time budget spent measuring the default schedules; no search")
        return _finish(report, t0, report_dir, say)
    total_trials = trials if trials is not None else 1 << 30

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            stat = report.tasks[chosen[task_id]]
            stat.trials += len(runner_results)
            for r in runner_results:
                if r.error_msg is None and r.run_secs:
                    ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                    stat.best_ms = ms_ if stat.best_ms is None else min(stat.best_ms, ms_)
            now = time.monotonic()
            report.timeline.append((now - t0, report.estimate_ms()))
            done = sum(t.trials for t in report.tasks)
            left = "" if deadline is None else f", {max(0, deadline - now) / 60:.1f} min left"
            budget = f"/{trials}" if trials else ""
            say(f"trials {done}{budget}; task {task_id + 1}/{len(chosen)} {stat.name}; "
                f"estimate {report.estimate_ms():.3f} ms{left}")

    # search where the time is: the kernels that make up 98% of the default-schedule estimate
    # (at most MAX_TASKS of them); the rest keep their measured default schedule
    chosen = _dominant(report)
    if len(chosen) < len(extracted):
        say(f"searching the {len(chosen)} kernels that take "
            f"{100 * sum(report.tasks[i].weight * report.tasks[i].default_ms for i in chosen) / report.estimate_ms():.0f}% "
            "of the kernel time")
    import_tvm_intrinsics()
    _drop_unnamed_log_handlers()
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        [extracted[i] for i in chosen], work_dir=str(database.path / "logs"),
        num_threads=max(1, tgt.num_cores or (os.cpu_count() or 1)))
    _quiet_console()
    say(f"tuning {len(contexts)} tasks ({report.budget})")
    try:
        # TVM's own VNNI rule tries (and fails) to tensorize Ember's int8 kernels, which
        # carry their own dot-product schedule: one harmless warning per candidate
        with tempfile.TemporaryDirectory(prefix="ember-tune-") as work, \
                filtered_native_stderr(("Tensorize failed",)):
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=work,
                max_trials_global=total_trials, num_trials_per_iter=min(16, max(4, total_trials // 4)),
                builder=builder, runner=runner, database=ms_db, cost_model="xgb",
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), Progress()],
                task_scheduler=_scheduler(len(contexts), weights, deadline,
                                          lambda i: report.tasks[chosen[i]].current_ms(), say))
    except KeyboardInterrupt:
        report.interrupted = True
        say("interrupted: records measured so far are kept")
    if dev is not None and not report.interrupted:
        report.end_to_end = _end_to_end(m, relax_mod, tgt, database, dev, say)
        if report.end_to_end is not None:
            database.record_end_to_end(model_key(relax_mod), report.end_to_end)
    return _finish(report, t0, report_dir, say)


def _end_to_end(m, relax_mod, tgt, database: TuningDatabase, dev, say, rounds: int = 5) -> dict[str, float] | None:
    """The model's real latency (VM included) with default schedules and with
    the database's, timed in alternation so both see the same machine state;
    None when an input has no fixed shape."""
    import numpy as np
    import tvm
    from tvm import relax

    from ember.passes import calibration
    from ember.compiler.backend.tvm import lower
    from ember.compiler.driver import signature

    specs, _ = signature(m.graph)
    if any(s["shape"] is None or not all(isinstance(d, int) for d in s["shape"]) for s in specs):
        say("end-to-end check skipped: the model has inputs without a fixed shape")
        return None
    say("building the model with and without the tuned schedules to time it end to end")
    feed = calibration.random_batches(specs, 1)[0]
    args = [tvm.runtime.tensor(feed[s["name"]], dev) for s in specs]
    vms = {"default_ms": relax.VirtualMachine(lower.build(relax_mod, tgt), dev),
           "tuned_ms": relax.VirtualMachine(lower.build(relax_mod, tgt, database.ms_database()), dev)}
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


def _finish(report: TuneReport, t0: float, report_dir: str | None, say) -> TuneReport:
    report.seconds = time.monotonic() - t0
    if report_dir is not None:
        for p in report.write(Path(report_dir)):
            say(f"wrote {p}")
    return report


MAX_TASKS = 12


def _device_cores(rpc: dict[str, Any]) -> int:
    """The thread count of a device's TVM runtime (its cores), asked over RPC."""
    from ember.compiler.runtime import remote

    sess = remote.connect(tracker=f"{rpc['host']}:{rpc['port']}", key=rpc["key"])
    try:
        return int(sess.get_function("runtime.NumThreads")())
    except Exception as e:
        raise remote.RemoteError(f"cannot ask the device for its core count: {str(e).strip()[:200]}") from None


def _scheduler(n: int, weights: list[float], deadline: float | None, best_ms: Callable[[int], float | None],
               say: Callable[[str], None], alpha: float = 0.2, window: int = 3):
    """MetaSchedule's gradient task scheduler (Ansor's: one round over all
    tasks, then the task whose weighted latency is falling fastest, or is
    largest per round spent on it), with a deadline checked before every
    batch. TVM's own checks nothing until its first round over all tasks is
    measured, which overran a 3-minute budget by up to 4 minutes, and it
    builds the next batch while the last one is being timed."""
    import math

    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class DeadlineGradient(ms.task_scheduler.PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.started = 0
            self.pending = [False] * n  # sent to the runner, results not yet joined
            self.history: list[list[float]] = [[] for _ in range(n)]  # best ms after each round

        def _join_all(self) -> None:
            tasks = self._outer().tasks_
            for i in range(n):
                if self.pending[i]:
                    self.pending[i] = False
                    if not tasks[i].is_terminated:  # terminated in the loop: nothing was sent
                        self.join_running_task(i)
                    self.history[i].append(best_ms(i) or math.inf)

        def _grad(self, i: int) -> float:
            h = self.history[i]
            if not h or math.isinf(h[-1]):
                return math.inf
            g1 = (h[-1 - window] - h[-1]) / window if len(h) > window else 0.0
            return weights[i] * (alpha * g1 + (1 - alpha) * h[-1] / len(h))

        def next_task_id(self) -> int:
            # measurements finish before the next build starts: progress after every
            # batch, and on a small machine builds would disturb the timings
            self._join_all()
            if deadline is not None and time.monotonic() >= deadline:
                say("time budget spent")
                return -1
            tasks = self._outer().tasks_
            while self.started < n:  # the first round: every task once
                i, self.started = self.started, self.started + 1
                if not tasks[i].is_terminated:
                    self.pending[i] = True
                    return i
            alive = [i for i in range(n) if not tasks[i].is_terminated]
            if not alive:
                return -1
            i = max(alive, key=self._grad)
            self.pending[i] = True
            return i

    return DeadlineGradient()


def _build(mod, target, _params):
    """MetaSchedule's default build without its import of the tensor
    intrinsics (12 s in every fresh builder worker; candidates arrive
    already tensorized)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    with target:  # TVM's CUDA compile callback reads the sm_XX from the target in scope
        return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export_shared(linker: str, mod) -> str:
    """MetaSchedule's export for a device with no linker of its own (its
    default, a .tar of objects, is linked on the device): a shared library
    cross-linked here. Runs in the builder's worker processes."""
    import os

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="ember-tune-"), "kernel.so")
    mod.export_library(path, fcompile=cc.cross_compiler(linker))
    return path


def _dominant(report: TuneReport) -> list[int]:
    """Indices of the tasks worth searching: by share of the default estimate,
    until 98% of it is covered (all tasks when nothing was measured: remote targets)."""
    measured = [(t.weight * t.default_ms, i) for i, t in enumerate(report.tasks) if t.default_ms is not None]
    if len(measured) < len(report.tasks):
        return list(range(len(report.tasks)))
    total = sum(ms_ for ms_, _ in measured) or 1.0
    chosen, covered = [], 0.0
    for ms_, i in sorted(measured, reverse=True):
        if covered >= 0.98 * total or len(chosen) >= MAX_TASKS:
            break
        chosen.append(i)
        covered += ms_
    return sorted(chosen)


def _drop_unnamed_log_handlers() -> None:
    """TVM sets up MetaSchedule's loggers anew for every tuning run, listing the
    handlers already there by name, and fails on an unnamed one (a log
    capture a host program or pytest attached): such handlers are removed."""
    import logging

    log = logging.getLogger("tvm.s_tir.meta_schedule")
    for h in [h for h in log.handlers if h.get_name() is None]:
        log.removeHandler(h)


def _quiet_console() -> None:
    """MetaSchedule logs every step to stdout as well as to its log files
    (kept in DB/logs); Ember prints its own progress lines instead."""
    import logging

    for h in logging.getLogger("tvm.s_tir.meta_schedule").handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.WARNING)


def _runner(rpc: dict[str, Any] | None):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    if not rpc:
        return ms.runner.LocalRunner(timeout_sec=120, evaluator_config=evaluator)
    config = ms.runner.RPCConfig(tracker_host=rpc["host"], tracker_port=int(rpc["port"]), tracker_key=rpc["key"],
                                 session_timeout_sec=rpc.get("timeout", 300))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator,
                               max_workers=rpc.get("workers"))
