"""Compile-time scaling: seconds per stage for graphs of 1k to 100k nodes.

    python benchmarks/compile_time.py [--sizes 1000 5000 20000 100000] [--kinds chain encoder]
                                      [--timeout SECONDS]

Two kinds of graph, built with onnx.helper at about the requested node count:
- chain: one tensor [4, 64] through elementwise ops (Relu, Add, Mul, Neg,
  Sigmoid, Clip, Abs, Sub in turn), each reading the last one's output;
- encoder: a stack of transformer encoder layers ([16, 64], 4 heads) as an
  exporter writes them, about 50 nodes each: layer norms and GELU spelled
  out, attention as MatMul/Softmax/MatMul with its reshapes and transposes.

Each compile runs in a child process (killed after --timeout) and prints the
stages as `ember compile` reports them: import and the input phase, the
graph passes (the slowest named), lowering to Relax, and TVM's build
(fusion, scheduling, LLVM), then the total, seconds per 1000 nodes, and
whether the artifact matches onnxruntime on one input. Linear scaling shows
as a flat "s / 1k nodes" column down each kind.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from ember.errors import EmberError

CHAIN_OPS = ("Relu", "Add", "Mul", "Neg", "Sigmoid", "Clip", "Abs", "Sub")
STAGES = (("importing model", "import"), ("optimizing", "passes"), ("lowering to Relax", "lower"),
          ("building for", "build"))


def chain(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.5), "half"), numpy_helper.from_array(np.float32(-3), "lo"),
             numpy_helper.from_array(np.float32(3), "hi"),
             numpy_helper.from_array(rng.uniform(0.9, 1.1, (4, 64)).astype(np.float32), "scale")]
    nodes, prev = [], "x"
    for i in range(n):
        op, out = CHAIN_OPS[i % len(CHAIN_OPS)], f"t{i}"
        args = {"Add": [prev, "half"], "Sub": [prev, "half"], "Mul": [prev, "scale"],
                "Clip": [prev, "lo", "hi"]}.get(op, [prev])
        nodes.append(h.make_node(op, args, [out]))
        prev = out
    g = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", T.FLOAT, [4, 64])],
                     [h.make_tensor_value_info(prev, T.FLOAT, [4, 64])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.rng, self.k = [], [], np.random.default_rng(0), 0

    def const(self, array) -> str:
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(array), f"c{self.k}"))
        return f"c{self.k}"

    def weight(self, *shape) -> str:
        return self.const((self.rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def op(self, op: str, *args: str, **attrs) -> str:
        self.k += 1
        self.nodes.append(h.make_node(op, list(args), [f"v{self.k}"], **attrs))
        return f"v{self.k}"

    def layer_norm(self, x: str, d: int) -> str:
        mean = self.op("ReduceMean", x, axes=[-1])
        dev = self.op("Sub", x, mean)
        var = self.op("ReduceMean", self.op("Pow", dev, self.const(np.float32(2))), axes=[-1])
        std = self.op("Sqrt", self.op("Add", var, self.const(np.float32(1e-5))))
        norm = self.op("Div", dev, std)
        return self.op("Add", self.op("Mul", norm, self.const(np.ones(d, np.float32))),
                       self.const(np.zeros(d, np.float32)))

    def linear(self, x: str, d_in: int, d_out: int) -> str:
        return self.op("Add", self.op("MatMul", x, self.weight(d_in, d_out)), self.const(np.zeros(d_out, np.float32)))

    def gelu(self, x: str) -> str:
        erf = self.op("Erf", self.op("Div", x, self.const(np.float32(np.sqrt(2)))))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, self.const(np.float32(1)))),
                       self.const(np.float32(0.5)))

    def encoder_layer(self, x: str, seq: int, d: int, heads: int) -> str:
        y = self.layer_norm(x, d)
        split = self.const(np.array([seq, heads, d // heads], np.int64))

        def heads_of(t):
            return self.op("Transpose", self.op("Reshape", t, split), perm=[1, 0, 2])

        q, k, v = (heads_of(self.linear(y, d, d)) for _ in range(3))
        scores = self.op("Div", self.op("MatMul", q, self.op("Transpose", k, perm=[0, 2, 1])),
                         self.const(np.float32(np.sqrt(d // heads))))
        att = self.op("MatMul", self.op("Softmax", scores, axis=-1), v)
        merged = self.op("Reshape", self.op("Transpose", att, perm=[1, 0, 2]), self.const(np.array([seq, d])))
        x = self.op("Add", x, self.linear(merged, d, d))
        y = self.layer_norm(x, d)
        return self.op("Add", x, self.linear(self.gelu(self.linear(y, d, 2 * d)), 2 * d, d))


def encoder(n: int, seq: int = 16, d: int = 64, heads: int = 4) -> onnx.ModelProto:
    b = _Builder()
    x = "x"
    while len(b.nodes) < n:
        x = b.encoder_layer(x, seq, d, heads)
    g = h.make_graph(b.nodes, "encoder", [h.make_tensor_value_info("x", T.FLOAT, [seq, d])],
                     [h.make_tensor_value_info(x, T.FLOAT, [seq, d])], b.inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


KINDS = {"chain": chain, "encoder": encoder}


def _compile(kind: str, n: int, progress=None) -> dict:
    """In the child: build the graph, compile it with stage times, check it against onnxruntime."""
    import ember
    from ember.compiler.ir.reference import run_onnxruntime
    from ember.passes.manager import PassTiming

    m = KINDS[kind](n)
    marks: list[tuple[str, float]] = []

    def say(msg: str) -> None:
        marks.append((msg, time.perf_counter()))
        if progress:
            progress(msg)

    timing = PassTiming()
    cm = ember.compile(m, instruments=[timing], progress=say)
    end = time.perf_counter()
    row = {"nodes": len(m.graph.node), "total": cm.compile_seconds, "stages": {}}
    for (msg, t), (_, t_next) in zip(marks, marks[1:] + [("", end)]):
        stage = next((name for prefix, name in STAGES if msg.startswith(prefix)), None)
        if stage:
            row["stages"][stage] = row["stages"].get(stage, 0.0) + t_next - t
    slowest = max(timing.records, key=lambda r: r[1], default=("-", 0.0, False))
    row["slowest_pass"] = (slowest[0], slowest[1])
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref, _ = run_onnxruntime(m, {"x": x})
    got = cm.run({"x": x})
    row["match"] = all(np.allclose(got[k], ref[k], rtol=1e-4, atol=1e-4 * float(np.max(np.abs(ref[k])) or 1))
                       for k in ref)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000, 100000])
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per compile before it is stopped")
    args = ap.parse_args()

    from ember.compiler.runtime.isolate import run_isolated

    head = (f"{'graph':8s} {'nodes':>7s} {'import':>7s} {'passes':>7s} {'lower':>7s} {'build':>7s} "
            f"{'total s':>8s} {'s/1k':>6s} {'match':>5s}  slowest pass")
    print(head)
    print("-" * len(head), flush=True)
    for kind in args.kinds:
        for n in args.sizes:
            print(f".. {kind} {n}", file=sys.stderr, flush=True)
            try:
                r = run_isolated(_compile, kind, n, what=f"compiling the {n}-node {kind}", timeout=args.timeout)
            except EmberError as e:
                print(f"{kind:8s} {n:7d}  {e}", flush=True)
                continue
            s = r["stages"]
            name, secs = r["slowest_pass"]
            print(f"{kind:8s} {r['nodes']:7d} " + " ".join(f"{s.get(k, 0.0):7.2f}" for _, k in STAGES)
                  + f" {r['total']:8.2f} {r['total'] / r['nodes'] * 1e3:6.3f} {'yes' if r['match'] else 'NO':>5s}"
                  + f"  {name} {secs:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
