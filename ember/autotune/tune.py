"""`ember tune`: MetaSchedule search over a model's kernels, kept in a tuning database.

1. The model is lowered exactly as `compile` lowers it (passes, Relax, NHWC,
   Ember's kernels, fusion); every distinct fused PrimFunc is a task,
   weighted by how often the model calls it.
2. Each task's default Ember schedule is measured first and stored as a
   record, so the database always holds the better of Ember's schedule and
   the search's (MetaSchedule keeps the fastest record per workload).
3. MetaSchedule tunes the tasks (evolutionary search, XGBoost cost model,
   gradient task scheduler: trials go to the tasks that dominate the
   end-to-end estimate) until the trial or time budget runs out. A kernel of
   Ember's own (GEMM, convolution, Winograd, int8) is searched in the space
   of its own schedule (`schedule.design_space`: the rule's decisions as
   sampled instructions, the rule's values their defaults); other kernels in
   MetaSchedule's generic space. `seed` makes the candidates drawn depend
   only on the measurements. Records
   are appended as each batch is measured: an interrupted run keeps all
   but the batch in flight, and running again resumes from them.
4. A report (per task: trials, default and best latency, share of the
   end-to-end estimate) is written as JSON and Markdown, with a PNG of the
   estimated end-to-end latency over tuning time.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ember import targets
from ember.autotune import measure
from ember.autotune.database import TuningDatabase, describe_device, model_key
from ember.autotune.report import TaskStat, TuneReport
from ember.autotune.scheduler import deadline_scheduler, dominant
from ember.compiler import driver
from ember.compiler.backend.tvm import schedule
from ember.compiler.backend.tvm.intrinsics import import_tvm_intrinsics
from ember.compiler.backend.tvm.pipeline import legalize_passes
from ember.compiler.backend.tvm.target import prepare
from ember.compiler.runtime.isolate import use_all_cores
from ember.compiler.runtime.native_stderr import filtered_native_stderr
from ember.errors import EmberError

__all__ = ["tune", "parse_duration", "TuneReport", "TaskStat"]


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


def tune(model: Any, target: str = "host", db: str = "ember-tuning", *, trials: int | None = None,
         seconds: float | None = None, pipeline=None, opt_level: int | None = None, mcpu: str | None = None,
         features=None, rpc: dict[str, Any] | None = None, report_dir: str | None = None,
         progress: Callable[[str], None] | None = None, bind: dict[str, Any] | None = None,
         input_shapes: dict[str, Any] | None = None, seed: int | None = None,
         warm_start: str | None = None, precision: str = "fp32") -> TuneReport:
    """Tune a model's kernels for a target into database `db` (created if missing); `bind`
    fixes graph inputs TVM needs as constants and `input_shapes` symbolic input dims,
    as in `driver.compile` (tune with the shapes you compile with). `warm_start`: a
    database from another device of the same ISA whose best schedules for these kernels
    are measured here first and kept as records (never trusted: they compete like
    any other). `precision`: the kernels of a `compile(precision=...)` build."""
    say = progress or (lambda msg: None)
    use_all_cores()  # before MetaSchedule's workers start: they inherit the thread count
    if trials is None and seconds is None:
        trials = 64
    tgt = _target(target, mcpu, features, rpc)
    driver.check_precision(precision, tgt)
    database = TuningDatabase.open(db, tgt, create=True)
    if database.repaired:
        say(f"dropped {database.repaired} incomplete record(s) left by an interrupted run")
    m, relax_mod, _ = driver.lower_model(model, tgt, pipeline, opt_level=opt_level, say=say, bind=bind,
                                         input_shapes=input_shapes)
    tvm_target = tgt.tvm_target()
    with tvm_target:
        mod = tvm.transform.Sequential(legalize_passes(tgt, precision))(relax_mod)
    extracted = ms.relax_integration.extract_tasks(mod, tvm_target)
    report = TuneReport(model=str(model), target=tgt.describe(), db=str(db),
                        budget=" and ".join(x for x in (f"{trials} trials" if trials else "",
                                                         f"{seconds:.0f} s" if seconds else "") if x),
                        seed=seed)
    report.tasks = [TaskStat(t.task_name, int(t.weight)) for t in extracted]
    ms_db = database.ms_database()
    t0 = time.monotonic()
    builder, runner = measure.builder(tgt), measure.runner(rpc)

    # 1. the default schedules (Ember's, dlight's on CUDA), measured, as the records to beat
    _record_defaults(report, extracted, ms_db, tvm_target,
                     measure.measure_defaults(extracted, tgt, tvm_target, rpc, builder, runner, say))
    report.timeline.append((time.monotonic() - t0, report.estimate_ms()))
    if report.default_ms() is not None:
        say(f"{len(extracted)} tasks; default schedules: {report.estimate_ms():.3f} ms of kernel time")
    if warm_start is not None:
        _warm_start(report, extracted, ms_db, warm_start, tgt, tvm_target, builder, runner, say)
        report.timeline.append((time.monotonic() - t0, report.estimate_ms()))

    # 2. the search, over the kernels that make up most of the default estimate
    deadline = None if seconds is None else t0 + seconds
    if deadline is not None and time.monotonic() >= deadline:
        say("time budget spent measuring the default schedules; no search")
        return _finish(report, t0, report_dir, say)
    _search(report, extracted, database, ms_db, tgt, trials, deadline, t0, builder, runner, say, seed)
    _record_decisions(report, extracted, ms_db)

    # 3. the model end to end, default against tuned schedules
    dev = measure.local_device(tgt, rpc)
    if dev is not None and not report.interrupted:
        report.end_to_end = measure.end_to_end(m, relax_mod, tgt, database, dev, say, precision=precision)
        if report.end_to_end is not None:
            database.record_end_to_end(model_key(relax_mod, precision), report.end_to_end)
    return _finish(report, t0, report_dir, say)


def _target(target: str, mcpu, features, rpc):
    """The target to tune for, checked: its toolchain is here, and its code can be
    measured here or on an RPC device (whose core count MetaSchedule's rules need)."""
    tgt = targets.parse(target, mcpu=mcpu, features=features)
    tgt.check_toolchain()
    prepare(tgt)
    if not rpc and tgt.runtime_only:
        raise EmberError(f"{tgt.describe()} code cannot be measured on this machine; tune on devices of that "
                         "kind through a TVM RPC tracker: --tracker HOST:PORT --key KEY")
    if rpc and not tgt.num_cores:
        tgt = targets.parse(target, mcpu=mcpu, features=features, num_cores=measure.device_cores(rpc))
    return tgt


def _warm_start(report: TuneReport, extracted, ms_db, path: str, tgt, tvm_target, builder, runner, say) -> None:
    """Measure here the best record another device's database holds for each task (same
    triple and TVM; any CPU) and commit those that build and run as records here."""
    other = TuningDatabase.open(path)
    there = other.manifest.get("device") or {}
    if there.get("triple") != tgt.triple:
        raise EmberError(f"--warm-start {path}: tuned for {there.get('triple')}, not {tgt.triple} (another ISA's "
                         "schedules do not apply)")
    if other.manifest.get("tvm_version") != tvm.__version__:
        raise EmberError(f"--warm-start {path}: made with TVM {other.manifest.get('tvm_version')}, this is "
                         f"{tvm.__version__}")
    theirs_db = other.ms_database()
    schedules, theirs = [], []
    for task in extracted:
        mod = task.dispatched[0]
        best = theirs_db.get_top_k(theirs_db.commit_workload(mod), 1) if theirs_db.has_workload(mod) else []
        sch = None
        if best:
            try:
                sch = tvm.s_tir.Schedule(mod)
                best[0].trace.apply_to_schedule(sch, remove_postproc=False)
            except Exception:  # a schedule step this kernel does not take: not a candidate here
                sch = None
        schedules.append(sch)
        theirs.append(1e3 * sum(float(x) for x in best[0].run_secs) / len(best[0].run_secs)
                      if sch is not None and best[0].run_secs else None)
    say(f"warm start: measuring the {sum(s is not None for s in schedules)} schedules {path} "
        f"({describe_device(there)}) holds for these kernels")
    measured = measure.measure_schedules(extracted, schedules, tgt, tvm_target, builder, runner)
    for i, (task, got) in enumerate(zip(extracted, measured)):
        if schedules[i] is None:
            continue
        stat = report.tasks[i]
        entry = {"task": task.task_name, "there_ms": theirs[i], "here_ms": None if got is None else got[1] * 1e3,
                 "default_ms": stat.default_ms}
        if got is not None:
            wl = ms_db.commit_workload(task.dispatched[0])
            ms_db.commit_tuning_record(ms.database.TuningRecord(
                got[0].trace, wl, [got[1]], tvm_target,
                ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])))
            stat.best_ms = entry["here_ms"] if stat.best_ms is None else min(stat.best_ms, entry["here_ms"])
        entry["kept"] = bool(got is not None and (stat.default_ms is None or entry["here_ms"] < stat.default_ms))
        report.warm_start.append(entry)
    report.warm_start_from = f"{path} ({describe_device(there)})"


def _record_defaults(report: TuneReport, extracted, ms_db, tvm_target, measured) -> None:
    """The measured default schedules into the report and the database as records."""
    for i, (task, got) in enumerate(zip(extracted, measured)):
        if got is None:
            continue
        sch, secs = got
        report.tasks[i].default_ms = secs * 1e3
        wl = ms_db.commit_workload(task.dispatched[0])
        ms_db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, wl, [secs], tvm_target, ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])))


def _search(report: TuneReport, extracted, database: TuningDatabase, ms_db, tgt, trials: int | None,
            deadline: float | None, t0: float, builder, runner, say, seed: int | None = None) -> None:
    """MetaSchedule's search over the kernels that take 98% of the default estimate (the
    rest keep their measured default schedule), its records appended to the database
    as each batch is measured; Ctrl-C keeps what was measured."""
    total_trials = trials if trials is not None else 1 << 30
    chosen = dominant(report.tasks)
    if len(chosen) < len(extracted):
        say(f"searching the {len(chosen)} kernels that take "
            f"{100 * sum(report.tasks[i].weight * report.tasks[i].default_ms for i in chosen) / report.estimate_ms():.0f}% "
            "of the kernel time")

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

    import_tvm_intrinsics()
    _drop_unnamed_log_handlers()
    contexts, weights = tune_contexts([extracted[i] for i in chosen], str(database.path / "logs"),
                                      max(1, tgt.num_cores or (os.cpu_count() or 1)), seed)
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
                task_scheduler=deadline_scheduler(len(contexts), weights, deadline,
                                                  lambda i: report.tasks[chosen[i]].current_ms(), say))
    except KeyboardInterrupt:
        report.interrupted = True
        say("interrupted: records measured so far are kept")


def tune_contexts(tasks, work_dir: str, num_threads: int, seed: int | None = None, strategy="evolutionary"):
    """One TuneContext per task, as MetaSchedule's own helper makes them, but with Ember's
    design space for Ember's kernels; `seed` seeds each task's random state and numpy's
    global generator, from which MetaSchedule's XGBoost model draws its predictions until
    it has trained (its own training is seeded)."""
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    if seed is not None:
        import numpy as np

        np.random.seed(seed)

    space = ms.space_generator.ScheduleFn(schedule.design_space, sch_rules=[], postprocs=[],
                                          mutator_probs={schedule.choice_mutator(): 1.0})
    contexts, weights = [], []
    for task, logger, rand_state in zip(tasks, get_loggers_from_work_dir(work_dir, [t.task_name for t in tasks]),
                                        fork_seed(seed, n=len(tasks))):
        ember = schedule.has_design_space(task.dispatched[0]["main"])
        search = strategy
        if ember and strategy == "evolutionary":
            # Ember's spaces hold tens of kernels, not millions: MetaSchedule's population of 512
            # evolved 4 times spent a third of a search's time on mutations that found nothing new
            search = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                           genetic_num_iters=2)
        contexts.append(ms.TuneContext(mod=task.dispatched[0], target=task.target,
                                       space_generator=space if ember else "post-order-apply",
                                       search_strategy=search, task_name=task.task_name, logger=logger,
                                       rand_state=rand_state, num_threads=num_threads).clone())
        weights.append(task.weight)
    return contexts, weights


def _record_decisions(report: TuneReport, extracted, ms_db) -> None:
    """Per task of Ember's design space: the default schedule's decisions (names and values)
    and the best record's values (None where the best is the default schedule itself)."""
    for stat, task in zip(report.tasks, extracted):
        mod = task.dispatched[0]
        if not schedule.has_design_space(mod["main"]):
            continue
        sch = tvm.s_tir.Schedule(mod)
        schedule.design_space(sch)
        default = schedule.decisions(sch.trace)
        if not default:  # nothing to vary in this kernel (run-time extents)
            continue
        stat.decision_names = [name for name, _ in default]
        stat.default_decisions = [v for _, v in default]
        if ms_db.has_workload(mod):
            best = ms_db.get_top_k(ms_db.commit_workload(mod), 1)
            tuned = schedule.decisions(best[0].trace) if best else []
            stat.tuned_decisions = [v for _, v in tuned] or None


def _finish(report: TuneReport, t0: float, report_dir: str | None, say) -> TuneReport:
    report.seconds = time.monotonic() - t0
    if report_dir is not None:
        for p in report.write(Path(report_dir)):
            say(f"wrote {p}")
    return report


def _drop_unnamed_log_handlers() -> None:
    """TVM sets up MetaSchedule's loggers anew for every tuning run, listing the
    handlers already there by name, and fails on an unnamed one (a log
    capture a host program or pytest attached): such handlers are removed."""
    log = logging.getLogger("tvm.s_tir.meta_schedule")
    for h in [h for h in log.handlers if h.get_name() is None]:
        log.removeHandler(h)


def _quiet_console() -> None:
    """MetaSchedule logs every step to stdout as well as to its log files
    (kept in DB/logs); Ember prints its own progress lines instead."""
    for h in logging.getLogger("tvm.s_tir.meta_schedule").handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.WARNING)
