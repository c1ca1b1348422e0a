"""The `ember debug` report: stages with their errors, the layer where the first
failing stage diverges, the int8 analysis; as Markdown, JSON and a PNG."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ember.compiler.debug.compare import Layer


@dataclass
class Stage:
    """One step of the chain from the ONNX model to the artifact on its device.

    `errors`: each output's error against the reference; `step`: against the stage
    before (the last one that ran), which the threshold `tol` applies to. `status`:
    ok, over (past `tol` or the accuracy drop), failed (could not build or run what
    Ember would ship), unchanged (a pass that changed nothing), skipped (a stage that
    could not be evaluated: the reason is in `note`)."""

    name: str
    kind: str  # reference, model, quantize, import, input, pass, tvm, target
    status: str = "ok"
    tol: float | None = None
    errors: dict[str, float] = field(default_factory=dict)
    step: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    note: str = ""
    seconds: float | None = None  # a pass's own run time

    @property
    def worst(self) -> float | None:
        return max(self.errors.values()) if self.errors else None

    @property
    def worst_step(self) -> float | None:
        return max(self.step.values()) if self.step else None


@dataclass
class Report:
    model: str
    reference: str
    tol: float
    quant_tol: float
    stages: list[Stage] = field(default_factory=list)
    first: int | None = None  # index of the first stage over its threshold or failed
    layer_stage: str = ""  # the stage the layers were compared in, and against what
    layers: list[Layer] = field(default_factory=list)
    divergence: Layer | None = None  # where the first failing stage starts to differ
    layer_note: str = ""
    int8: dict | None = None

    @property
    def failed(self) -> bool:
        return self.first is not None

    # ---------------------------------------------------------------- text
    def verdict(self) -> str:
        if self.first is None:
            return (f"OK: no stage moves any output past its threshold ({len(self.stages)} stages; "
                    f"float {self.tol:g}, int8 {self.quant_tol:g} of the output's scale)")
        s = self.stages[self.first]
        if s.status == "failed":
            head = f"FAIL: stage `{s.name}` failed: {s.note}"
        elif s.step and s.worst_step is not None and s.worst_step > (s.tol or 0):
            out = max(s.step, key=lambda k: s.step[k])
            head = (f"FAIL: stage `{s.name}` moves output `{out}` by {_num(s.step[out])} of its scale "
                    f"(threshold {s.tol:g})")
        else:
            head = f"FAIL: stage `{s.name}`: {s.note}"
        if self.divergence is not None:
            d = self.divergence
            head += f"; the divergence starts at node `{d.node}` ({d.op}), tensor `{d.tensor}` ({_num(d.error)})"
        return head

    def markdown(self) -> str:
        lines = [f"# ember debug: {self.model}", "", self.verdict(), "",
                 f"Reference: {self.reference}. Errors are max |difference| / max |reference| per output "
                 "(integer outputs: the share of elements that differ); a stage is held to its threshold "
                 "against the stage before it.", "",
                 "## Stages", "",
                 "| # | stage | error vs reference | error vs previous | threshold | accuracy | status |",
                 "|---|---|---|---|---|---|---|"]
        for i, s in enumerate(self.stages):
            acc = "" if s.accuracy is None else f"{100 * s.accuracy:.2f}%"
            status = s.status + (f": {s.note}" if s.note else "")
            lines.append(f"| {i} | {s.name} | {_num(s.worst)} | {_num(s.worst_step)} | "
                         f"{'' if s.tol is None else f'{s.tol:g}'} | {acc} | {status} |")
        if self.layers or self.layer_note:
            lines += ["", f"## Layers: {self.layer_stage}", ""]
            if self.layer_note:
                lines.append(self.layer_note)
            if self.layers:
                tol = self.stages[self.first].tol if self.first is not None else self.tol
                lines += ["| node | op | tensor | error | |", "|---|---|---|---|---|"]
                shown = self.layers if len(self.layers) <= 60 else self._around_divergence()
                for r in shown:
                    mark = "first over" if r is self.divergence else ("over" if r.over(tol or 0) else "")
                    lines.append(f"| {r.node} | {r.op} | {r.tensor} | {_num(r.error)} | {mark} |")
        if self.int8:
            lines += ["", "## int8 layers", ""] + _int8_lines(self.int8)
        return "\n".join(lines) + "\n"

    def _around_divergence(self) -> list[Layer]:
        k = self.layers.index(self.divergence) if self.divergence in self.layers else 0
        return self.layers[max(0, k - 10):k + 40]

    def to_json(self) -> dict:
        d = asdict(self)
        d["failed"], d["verdict"] = self.failed, self.verdict()
        return _finite(d)

    # ---------------------------------------------------------------- files
    def write(self, directory: str | Path) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "report.md", out / "report.json", out / "report.png"]
        paths[0].write_text(self.markdown())
        paths[1].write_text(json.dumps(self.to_json(), indent=1) + "\n")
        self.plot(paths[2])
        return paths

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 1 + bool(self.layers) + bool(self.int8 and self.int8.get("layers"))
        fig, axes = plt.subplots(panels, 1, figsize=(11, 3.6 * panels), squeeze=False)
        ax = axes[0][0]
        shown = [s for s in self.stages if s.status != "unchanged"]
        names = [s.name for s in shown]
        floor = 1e-9
        vs_ref = [max(s.worst or 0.0, floor) if s.worst is not None else math.nan for s in shown]
        vs_prev = [max(s.worst_step or 0.0, floor) if s.worst_step is not None else math.nan for s in shown]
        x = range(len(names))
        ax.plot(x, vs_ref, "o-", label="vs reference")
        colours = ["tab:red" if s.status in ("over", "failed") else "tab:green" for s in shown]
        ax.scatter(x, vs_prev, c=colours, marker="s", zorder=3, label="vs previous stage")
        for s_i, s in enumerate(shown):
            if s.tol is not None:
                ax.hlines(s.tol, s_i - 0.4, s_i + 0.4, colors="grey", linestyles="dashed")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("error / output scale")
        ax.set_title("error by stage (dashes: threshold; passes that changed nothing left out)")
        ax.legend(fontsize=8)
        row = 1
        if self.layers:
            ax = axes[row][0]
            errs = [max(r.error, floor) if math.isfinite(r.error) else math.nan for r in self.layers]
            ax.plot(range(len(errs)), errs, ".-")
            if self.divergence is not None and self.divergence in self.layers:
                k = self.layers.index(self.divergence)
                ax.axvline(k, color="tab:red", linestyle=":")
                ax.annotate(self.divergence.node, (k, errs[k] if math.isfinite(errs[k]) else 1), fontsize=8,
                            color="tab:red")
            ax.set_yscale("log")
            ax.set_xlabel("source node (topological order)")
            ax.set_ylabel("error / tensor scale")
            ax.set_title(f"error by layer: {self.layer_stage}")
            row += 1
        if self.int8 and self.int8.get("layers"):
            ax = axes[row][0]
            rows = self.int8["layers"]
            ax.bar(range(len(rows)), [r["sqnr_db"] or 0.0 for r in rows])
            ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=60, ha="right", fontsize=7)
            ax.set_ylabel("SQNR (dB)")
            ax.set_title("int8 layers: output SQNR against the float model")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _int8_lines(d: dict) -> list[str]:
    if not d.get("layers"):
        return [d.get("note", "no int8 layers")]
    lines = [f"Output error of the int8 model: {_num(d['error'])} (threshold {d['tol']:g}; the largest over "
             f"{d.get('samples', 1)} input batch(es)).", "",
             "| layer | op | SQNR dB | output error with this layer in float | compute share |",
             "|---|---|---|---|---|"]
    for r in sorted(d["layers"], key=lambda r: r.get("error_in_float", math.inf)):
        sq = "" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        lines.append(f"| {r['layer']} | {r['op']} | {sq} | {_num(r.get('error_in_float'))} | "
                     f"{100 * r['compute_share']:.1f}% |")
    if d.get("exclude"):
        flags = " ".join(f"--exclude {n}" for n in d["exclude"])
        lines += ["", f"Suggestion: `ember quantize ... {flags}` (the layers recovering the most accuracy per "
                      f"unit of compute): output error {_num(d['error_excluded'])} with them in float"
                  + (f", {_num(d['error_requantized'])} quantized again with these flags"
                     if "error_requantized" in d else "") + "."]
        if d["error_excluded"] > d["tol"]:
            lines += ["", f"Even with {len(d['exclude'])} layers in float the error stays above the threshold: "
                          "it is spread over many layers, not caused by a few (try another --calibrate "
                          "observer, or --symmetric)."]
        if d.get("error_requantized", 0.0) > d["error_excluded"] and d["error_requantized"] >= d["error"]:
            lines += ["", "Quantizing again with these flags did not recover the error: with float weights "
                      "as well as float inputs these layers round differently, and on few inputs the "
                      "difference can be within the inputs' own noise; evaluate on more samples before "
                      "excluding."]
    return lines


def _num(x: float | None) -> str:
    if x is None:
        return ""
    if not math.isfinite(x):
        return str(x)
    return "0" if x == 0 else f"{x:.3g}"


def _finite(x):
    """JSON has no inf or NaN: they become strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
