"""The chain of stages `ember debug` evaluates, each against the reference and the
stage before it:

    reference (the ONNX model, or --reference, in onnxruntime)
    [model as given, when a --reference is given]  [quantize int8]
    import, each step of the input phase and each pass that changed the graph
        (the IR exported and run in onnxruntime)
    relax: TVM's generic pipeline (no Ember kernels), artifact (Ember's build, here)
    [target: built for --target, run under --emulate or over --rpc]

In the first stage past its threshold, the tensors of the source model are found
again (by name, or through the values that replaced them: `Value.aliases`) and
compared node by node against the stage before: the first one past the threshold
is where the divergence starts. TVM stages are rebuilt with those tensors as
extra outputs for this."""

from __future__ import annotations

import tempfile
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from ember.compiler import ir
from ember.compiler.debug import int8
from ember.compiler.debug.compare import (Probe, compare_layers, error, feed_for, first_over, is_quantized,
                                          onnx_probe, sources)
from ember.compiler.debug.report import Report, Stage
from ember.compiler.driver import compile as ember_compile
from ember.compiler.driver import optimized_model
from ember.compiler.ir import onnx_io
from ember.errors import EmberError
from ember.passes.manager import Instrument, Pass


class _NotRun(Exception):
    """A stage that could not be evaluated (not a failure of what Ember ships)."""


class _Chain:
    def __init__(self, report: Report, source: onnx.GraphProto, feed: dict[str, np.ndarray],
                 labels: np.ndarray | None, max_accuracy_drop: float, say: Callable[[str], None]):
        self.report, self.source, self.feed, self.labels = report, source, feed, labels
        self.max_drop = max_accuracy_drop
        self.say = say
        self.outputs = [o.name for o in source.output]
        self.ref: dict[str, np.ndarray] = {}
        self.prev: dict[str, np.ndarray] = {}
        self.prev_probe: Probe | None = None
        self.prev_name = ""
        self.prev_accuracy: float | None = None
        self.quantized = False  # a stage so far computed in 8 bits: later ones get the int8 threshold

    # ---------------------------------------------------------------- stages
    def reference(self, probe: Probe, name: str) -> None:
        self.say(f"stage 0: {name}")
        outs = probe(self.outputs)
        missing = [o for o in self.outputs if o not in outs]
        if missing:
            raise EmberError(f"the reference does not compute output {missing[0]!r}")
        self.ref, self.prev, self.prev_probe, self.prev_name = outs, outs, probe, name
        stage = Stage(name, "reference", errors={o: 0.0 for o in outs})
        stage.accuracy = self.prev_accuracy = self._accuracy(outs)
        self.report.stages.append(stage)

    def onnx_stage(self, name: str, kind: str, proto: onnx.ModelProto, names: dict[str, str]) -> None:
        quantized = is_quantized(proto.graph)
        self.run(name, kind, onnx_probe(proto, names, self.feed), quantized)

    def ir_stage(self, name: str, kind: str, model: ir.Model) -> None:
        try:
            proto = onnx_io.export_model(model)
        except Exception as e:  # noqa: BLE001 - a graph the exporter refuses: say so, go on
            self.skip(name, kind, f"cannot export the IR to ONNX: {str(e).splitlines()[0][:200]}")
            return
        self.onnx_stage(name, kind, proto, sources(model.graph))

    def skip(self, name: str, kind: str, why: str) -> None:
        self.say(f"stage {len(self.report.stages)}: {name}: skipped ({why})")
        self.report.stages.append(Stage(name, kind, status="skipped", note=why))

    def unchanged(self, name: str, kind: str) -> None:
        self.report.stages.append(Stage(name, kind, status="unchanged"))

    def run(self, name: str, kind: str, probe: Probe, quantized: bool, must_run: bool = False) -> None:
        """Evaluate a stage; `must_run`: failing to build or run it is a failure (what
        Ember ships), not a skip."""
        self.say(f"stage {len(self.report.stages)}: {name}")
        self.quantized |= quantized
        tol = self.report.quant_tol if self.quantized else self.report.tol
        try:
            outs = probe(self.outputs)
        except _NotRun as e:
            self.skip(name, kind, str(e))
            return
        except EmberError as e:
            if not must_run:
                self.skip(name, kind, f"onnxruntime cannot run it: {e}" if kind not in ("tvm", "target") else str(e))
                return
            self.report.stages.append(Stage(name, kind, status="failed", tol=tol, note=str(e)))
            self._first_failure()
            return
        stage = Stage(name, kind, tol=tol)
        for o in self.outputs:
            got = outs.get(o)
            stage.errors[o] = error(self.ref[o], got) if isinstance(got, np.ndarray) else float("inf")
            stage.step[o] = error(self.prev[o], got) if isinstance(got, np.ndarray) else float("inf")
        stage.accuracy = self._accuracy(outs)
        over = any(not v <= tol for v in stage.step.values())
        if stage.accuracy is not None and self.prev_accuracy is not None:
            drop = 100 * (self.prev_accuracy - stage.accuracy)
            if drop > self.max_drop:
                over = True
                stage.note = f"top-1 accuracy {drop:.2f} points below the stage before"
        stage.status = "over" if over else "ok"
        self.report.stages.append(stage)
        if over and self._first_failure():
            self._layers(name, probe, tol)
        self.prev, self.prev_probe, self.prev_name = outs, probe, name
        self.prev_accuracy = stage.accuracy

    def _first_failure(self) -> bool:
        if self.report.first is not None:
            return False
        self.report.first = len(self.report.stages) - 1
        return True

    def _layers(self, name: str, probe: Probe, tol: float) -> None:
        self.report.layer_stage = f"{name}, against {self.prev_name}"
        self.say(f"comparing layers: {self.report.layer_stage}")
        try:
            rows = compare_layers(self.source, self.prev_probe, probe)
        except (EmberError, _NotRun) as e:
            self.report.layer_note = f"layer comparison unavailable: {e}"
            return
        self.report.layers = rows
        self.report.divergence = first_over(rows, tol)
        if not rows:
            self.report.layer_note = "no tensor of the source model is computed by both stages"
        elif self.report.divergence is None:
            self.report.layer_note = ("no tensor of the source model crosses the threshold on its own: the "
                                      "difference is in what the stages add after them")

    def _accuracy(self, outs: dict[str, np.ndarray]) -> float | None:
        if self.labels is None or not self.outputs:
            return None
        y = outs.get(self.outputs[0])
        if not isinstance(y, np.ndarray) or y.ndim != 2 or len(y) != len(self.labels):
            return None
        return float(np.mean(np.argmax(y, axis=-1) == self.labels))


class _PassProbe(Instrument):
    """Evaluates the IR after every step of the input phase and every pass."""

    def __init__(self, chain: _Chain):
        self.chain = chain

    def after(self, p: Pass, model: ir.Model, changed: bool, seconds: float) -> None:
        kind = "input" if type(p).__module__.startswith("ember.compiler.input") else "pass"
        name = f"{kind}: {p}"
        before = len(self.chain.report.stages)
        if changed:
            self.chain.ir_stage(name, kind, model)
        elif kind == "pass":
            self.chain.unchanged(name, kind)
        if len(self.chain.report.stages) > before:
            self.chain.report.stages[-1].seconds = seconds


def _built_probe(final: ir.Model, build: Callable[[ir.Model], dict[str, Any]]) -> Probe:
    """A Probe for a TVM stage: `build` compiles and runs a model; tensors other than
    the outputs are made extra outputs of the final IR, and the model is built again."""
    names = sources(final.graph)

    def probe(wanted: list[str]) -> dict[str, np.ndarray]:
        m = onnx_io.as_ir(final)
        values = {v.name: v for n in m.graph.nodes for v in n.outputs}
        have = {v.name for v in m.graph.outputs}
        local = {w: names[w] for w in wanted if w in names}
        for n in dict.fromkeys(local.values()):
            v = values.get(n)
            if n not in have and v is not None and v.dtype and v.is_tensor and not v.is_empty:
                m.graph.outputs.append(v)
                have.add(n)
        got = build(m)
        return {w: got[n] for w, n in local.items() if n in got}

    return probe


def debug(model: Any, feed: dict[str, np.ndarray], *, reference: Any = None, labels: np.ndarray | None = None,
          target: str = "host", mcpu: str | None = None, features: str | Sequence[str] | None = None,
          pipeline: str | Sequence[Pass] | None = None, opt_level: int | None = None,
          disabled: Sequence[str] = (), memory_budget: int | None = None, bind: dict[str, Any] | None = None,
          input_shapes: dict[str, Sequence[int]] | None = None,
          quantizer: Callable[[set[str]], ir.Model] | None = None, db: str | None = None,
          remote: dict[str, Any] | None = None, tol: float = 1e-3, quant_tol: float = 0.05,
          max_accuracy_drop: float = 1.0, int8_analysis: bool = True,
          int8_feeds: list[dict[str, np.ndarray]] | None = None, precision: str = "fp32",
          say: Callable[[str], None] = lambda msg: None) -> Report:
    """Evaluate `model` stage by stage on `feed` against `reference` (default: the model
    itself in onnxruntime). `quantizer(exclude)` quantizes the model (the int8 stage);
    `remote` ({"rpc"/"tracker"/"key"/"qemu_cpu"} or {} to emulate) runs the target stage
    when the target is not this machine. `int8_feeds`: the inputs the int8 analysis runs
    on (default: `feed` alone). `precision` is the artifact's (bf16: its stages are
    compared against TVM's generic fp32 build, so that error shows there)."""
    from ember import targets
    from ember.passes.levels import resolve_pipeline

    passes = resolve_pipeline(pipeline, opt_level)  # a bad spec is the user's error, before any stage
    source = onnx_io.export_model(onnx_io.as_ir(reference if reference is not None else model))
    report = Report(model=str(model) if not isinstance(model, (onnx.ModelProto, ir.Model)) else "(in memory)",
                    reference=(f"{reference if isinstance(reference, str) else 'the reference model'} in onnxruntime"
                               if reference is not None else "the model in onnxruntime"),
                    tol=tol, quant_tol=quant_tol)
    chain = _Chain(report, source.graph, feed, labels, max_accuracy_drop, say)
    own = {n: n for n in [i.name for i in source.graph.input] + [o for n in source.graph.node for o in n.output]}
    ref_probe = onnx_probe(source, own, feed)
    chain.reference(ref_probe, "reference (onnxruntime)")
    current: Any = model
    qdq: ir.Model | None = None
    if reference is not None:
        given = onnx_io.as_ir(model)
        chain.ir_stage("model as given", "model", given)
        qdq = given if is_quantized(onnx_io.export_model(given).graph) else None
    if quantizer is not None:
        say("quantizing")
        q = quantizer(set())
        chain.ir_stage("quantize int8", "quantize", q)
        current = qdq = q
    chain.ir_stage("import", "import", onnx_io.as_ir(current))
    host = targets.parse("host")
    tgt = targets.parse(target, mcpu=mcpu, features=features)
    if remote is not None and tgt.runner == "local":
        raise EmberError(f"{tgt.triple} runs on this machine: --emulate and --rpc are for other targets")
    try:
        final, _ = optimized_model(current, tgt if tgt.runner == "local" else host, passes,
                                   memory_budget=memory_budget, instruments=[_PassProbe(chain)], disabled=disabled,
                                   bind=bind, input_shapes=input_shapes, say=say)
    except EmberError as e:
        report.stages.append(Stage("passes", "pass", status="failed", note=str(e)))
        chain._first_failure()
        return _with_int8(report, qdq, chain, source, int8_feeds or [feed], quantizer, int8_analysis, say)

    def run_here(generic: bool, on: str, mc: str | None, feats) -> Callable[[ir.Model], dict[str, Any]]:
        def build(m: ir.Model) -> dict[str, Any]:
            cm = ember_compile(m, target=on, pipeline="", mcpu=mc, features=feats, db=None if generic else db,
                               generic=generic, precision="fp32" if generic else precision)
            return cm.run(feed_for(cm.input_names, feed))

        return build

    def run_there(m: ir.Model) -> dict[str, Any]:
        from ember.compiler.runtime.elsewhere import run_elsewhere

        cm = ember_compile(m, target=target, pipeline="", mcpu=mcpu, features=features, db=db, precision=precision)
        if remote is None:
            raise _NotRun(f"built for {tgt.describe()}; give --emulate or --rpc to run it there")
        with tempfile.TemporaryDirectory(prefix="ember-debug-") as d:
            cm.save(d)
            outs, _ = run_elsewhere(d, cm.metadata, feed_for(cm.input_names, feed), say=say, **remote)
        return outs

    chain.run("relax: TVM's generic pipeline (here)", "tvm", _built_probe(final, run_here(True, "host", None, None)),
              False)
    if tgt.runner == "local":
        chain.run(f"artifact: {_short(tgt)} (here)", "tvm",
                  _built_probe(final, run_here(False, target, mcpu, features)), False, must_run=True)
    else:
        chain.run("artifact: this machine", "tvm", _built_probe(final, run_here(False, "host", None, None)), False,
                  must_run=True)
        where = ("not run" if remote is None else
                 "remote" if remote.get("rpc") or remote.get("tracker") else "emulated")
        chain.run(f"target: {_short(tgt)} ({where})", "target", _built_probe(final, run_there), False,
                  must_run=remote is not None)
    return _with_int8(report, qdq, chain, source, int8_feeds or [feed], quantizer, int8_analysis, say)


def _short(tgt) -> str:
    return tgt.triple + (f" -mcpu={tgt.mcpu}" if tgt.mcpu else "")


def _with_int8(report: Report, qdq: ir.Model | None, chain: _Chain, source: onnx.ModelProto,
               feeds: list[dict[str, np.ndarray]], quantizer: Callable[[set[str]], ir.Model] | None, wanted: bool,
               say) -> Report:
    if qdq is None or not wanted:
        return report
    say("int8 analysis")
    requantize = (lambda exclude: onnx_io.export_model(quantizer(exclude))) if quantizer is not None else None
    source_names = {local: src for src, local in sources(qdq.graph).items() if src != local}
    report.int8 = int8.analyse(onnx_io.export_model(qdq), source_names, source, feeds, report.quant_tol,
                               requantize, say)
    return report
