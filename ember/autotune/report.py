"""What `ember tune` reports: per task, its calls, trials, default and best
latency and share of the kernel-time estimate; the estimate over tuning time;
the model's measured end-to-end latency. Written as JSON, Markdown and a PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.fileutil import atomic_write_text


@dataclass
class TaskStat:
    name: str
    weight: int
    default_ms: float | None = None
    best_ms: float | None = None
    trials: int = 0
    # Ember's design space (schedule.decision_names): the decisions' names, the rule's values, and
    # the best record's (None: the best is the default schedule, or the kernel is searched in
    # MetaSchedule's generic space)
    decision_names: list[str] | None = None
    default_decisions: list[int] | None = None
    tuned_decisions: list[int] | None = None

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
    seed: int | None = None
    # --warm-start: per task with a record there, its time there and here, the default's here,
    # and whether it was kept as better than the default
    warm_start: list[dict[str, Any]] = field(default_factory=list)
    warm_start_from: str = ""

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
                "seconds": round(self.seconds, 1), "interrupted": self.interrupted, "seed": self.seed,
                "default_estimate_ms": None if default is None else round(default, 4), "tuned_estimate_ms": round(self.estimate_ms(), 4),
                "tasks": [{"name": t.name, "weight": t.weight, "trials": t.trials,
                           "default_ms": t.default_ms, "best_ms": t.best_ms,
                           "decision_names": t.decision_names, "default_decisions": t.default_decisions, "tuned_decisions": t.tuned_decisions,
                           "share": round(t.weight * (t.current_ms() or 0.0) / total, 4)} for t in self.tasks],
                "end_to_end": self.end_to_end,
                "warm_start": {"from": self.warm_start_from, "tasks": self.warm_start} if self.warm_start_from else None,
                "timeline": [[round(s, 1), round(ms, 4)] for s, ms in self.timeline]}

    def markdown(self) -> str:
        d = self.to_json()
        lines = [f"# Tuning report: {self.model}", "",
                 f"target {self.target}; database {self.db}; budget {self.budget}; "
                 f"{d['seconds']} s{' (interrupted)' if self.interrupted else ''}", "",
                 self.summary() + " (kernel time: the sum over kernels of calls x best latency, "
                 "without the VM's own overhead)", "", *self._end_to_end_lines(),
                 "Decisions of Ember's kernels: default -> best record "
                 "('=': the default schedule is still the best). "
                 f"Seed: {'none (random)' if self.seed is None else self.seed}.", "",
                 "| task | calls | trials | default ms | tuned ms | share | decisions |",
                 "|---|---|---|---|---|---|---|"]
        for t in sorted(d["tasks"], key=lambda t: -t["share"]):
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            lines.append(f"| {t['name']} | {t['weight']} | {t['trials']} | {fmt(t['default_ms'])} | "
                         f"{fmt(t['best_ms'])} | {100 * t['share']:.1f}% | {_decisions(t)} |")
        if self.warm_start_from:
            lines += ["", f"Warm start from {self.warm_start_from}: its best schedule per kernel, measured here "
                          "(kept: faster here than the default schedule).", "",
                      "| task | there ms | here ms | default here ms | kept |", "|---|---|---|---|---|"]
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            for w in self.warm_start:
                lines.append(f"| {w['task']} | {fmt(w['there_ms'])} | {fmt(w['here_ms'])} | {fmt(w['default_ms'])} | "
                             f"{'yes' if w['kept'] else 'no'} |")
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


def _decisions(t: dict[str, Any]) -> str:
    default, tuned = t.get("default_decisions"), t.get("tuned_decisions")
    if not default:
        return ""
    names = t.get("decision_names") or [""] * len(default)
    return "; ".join(f"{name} {d} -> {'=' if tuned is None else tuned[i]}".strip()
                     for i, (name, d) in enumerate(zip(names, default)))
