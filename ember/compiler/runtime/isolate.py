"""Run a step that may crash the interpreter (TVM can segfault or abort on
some inputs) in a forked child process, so the caller gets an error naming
the step and the signal instead of a dead process.

The child reports progress lines and its result (or an EmberError) through a
pipe. Fork is used so the child starts at once with what the parent already
imported.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
from typing import Any, Callable

from ember import errors
from ember.errors import CompileError, EmberError


_pool_started = False


def use_all_cores() -> None:
    """TVM's thread pool assumes two hyperthreads per core on x86 and uses half the logical
    CPUs it sees: one thread on a 2-core machine, halving every kernel. Before the pool
    starts (it reads the variable once), run on all the cores this process may use, unless
    the user said otherwise."""
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                            else (os.cpu_count() or 1))


def mark_pool_started() -> None:
    """Note that this process may now start TVM's worker threads (it is about to run
    kernels); the pool gets all cores (`use_all_cores`)."""
    global _pool_started
    use_all_cores()
    _pool_started = True


def after_fork() -> None:
    """Call first thing in a forked child. TVM's worker threads do not survive
    fork: a child of a process that already ran parallel kernels would wait on
    them forever. Such a child runs its kernels on its own thread instead."""
    if _pool_started:
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(1, 1)


class StepCrashed(CompileError):
    """The isolated step died (signal), hung (timeout) or exited abnormally."""


def _child(conn, fn, args, kwargs):
    # The parent's garbage stays uncollected here: collecting it would run destructors
    # of objects whose threads did not survive fork (an onnxruntime session left in a
    # reference cycle blocks forever in pthread_cond_destroy on its pool's condition).
    gc.freeze()
    after_fork()

    def progress(msg: str) -> None:
        conn.send(("progress", msg))

    try:
        result = fn(*args, progress=progress, **kwargs)
        conn.send(("ok", result))
    except EmberError as e:
        conn.send(("error", type(e).__name__, str(e)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("internal", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()
        os._exit(0)


def run_isolated(fn: Callable[..., Any], *args: Any, what: str = "step",
                 progress: Callable[[str], None] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> Any:
    """Call fn(*args, progress=..., **kwargs) in a forked child and return its
    (picklable) result. Raises the child's EmberError in the parent, or
    StepCrashed when the child dies."""
    ctx = mp.get_context("fork")
    gc.collect()  # destroy the parent's garbage here, where its threads still run
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child_conn, fn, args, kwargs), daemon=True)
    proc.start()
    child_conn.close()
    last = "starting"
    outcome = None
    try:
        while True:
            if not parent_conn.poll(timeout):
                proc.kill()
                raise StepCrashed(f"{what} timed out after {timeout:.0f} s while {last}")
            try:
                msg = parent_conn.recv()
            except EOFError:
                break
            if msg[0] == "progress":
                last = msg[1]
                if progress:
                    progress(msg[1])
            else:
                outcome = msg
                break
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent_conn.close()
    if outcome is None:
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            raise StepCrashed(f"{what} crashed in TVM while {last} (signal {name})")
        raise StepCrashed(f"{what} exited unexpectedly (code {code}) while {last}")
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "error":
        cls = getattr(errors, outcome[1], EmberError)
        raise cls(outcome[2])
    raise errors.EmberError(f"internal error during {what} while {last}: {outcome[1]}")
