"""Which tasks `ember tune` searches, and in what order: the kernels that make
up most of the default-schedule estimate, then a gradient task scheduler with
a deadline."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

# Ember's spaces are small (a ResNet-50 kernel's: tens of schedules): 12 tasks were exhausted within
# 1.5 minutes of a 5-minute budget, which then went to re-proposing them; the gradient scheduler
# still spends the trials where the estimate falls fastest
MAX_TASKS = 32


def dominant(tasks: Sequence) -> list[int]:
    """Indices of the tasks (`report.TaskStat`s) worth searching: by share of the default
    estimate, until 98% of it is covered, at most MAX_TASKS (all tasks when nothing was
    measured: remote targets)."""
    measured = [(t.weight * t.default_ms, i) for i, t in enumerate(tasks) if t.default_ms is not None]
    if len(measured) < len(tasks):
        return list(range(len(tasks)))
    total = sum(ms_ for ms_, _ in measured) or 1.0
    chosen, covered = [], 0.0
    for ms_, i in sorted(measured, reverse=True):
        if covered >= 0.98 * total or len(chosen) >= MAX_TASKS:
            break
        chosen.append(i)
        covered += ms_
    return sorted(chosen)


def deadline_scheduler(n: int, weights: list[float], deadline: float | None, best_ms: Callable[[int], float | None],
               say: Callable[[str], None], alpha: float = 0.2, window: int = 3):
    """MetaSchedule's gradient task scheduler (Ansor's: one round over all
    tasks, then the task whose weighted latency is falling fastest, or is
    largest per round spent on it), with a deadline checked before every
    batch. TVM's own checks nothing until its first round over all tasks is
    measured, which overran a 3-minute budget by up to 4 minutes, and it
    builds the next batch while the last one is being timed."""
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
