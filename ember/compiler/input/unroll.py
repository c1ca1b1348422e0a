"""Scan and Loop, unrolled: TVM has no loops in its ONNX frontend, but a
Scan over a sequence whose length is known, or a Loop with a constant trip
count that never stops early, is just its body, once per step.

Each step slices the scan inputs (Gather at the step's index), copies the
body's nodes into the graph with the state and slices in place of its inputs,
and feeds its new state to the next step; the per-step scan outputs are
stacked (Unsqueeze + Concat). Directions and axes follow ONNX (opset 9+).
Scans too long to unroll (MAX_NODES), of unknown length, or with nested
subgraphs stay as they are, and are refused as unsupported.
"""

from __future__ import annotations

import numpy as np

from ember.compiler import ir
from ember.compiler.ir import onnx_io

MAX_NODES = 20000  # body nodes x steps


def _length(node: ir.Node, scans: list[ir.Value], axes: list[int]) -> int | None:
    lengths = set()
    for v, axis in zip(scans, axes):
        if v is None or v.shape is None or not isinstance(v.shape[axis % len(v.shape)], int):
            return None
        lengths.add(v.shape[axis % len(v.shape)])
    return lengths.pop() if len(lengths) == 1 else None



def _unsqueeze(g: ir.Graph, node: ir.Node, v: ir.Value, axis: int) -> ir.Value:
    if g.root().opset < 13:  # axes were an attribute before opset 13
        return g.make_node("Unsqueeze", [v], attrs={"axes": [axis]}, before=node).outputs[0]
    return g.make_node("Unsqueeze", [v, g.make_const(np.array([axis], np.int64), "axis")], before=node).outputs[0]


def _stack(g: ir.Graph, node: ir.Node, pieces: list[ir.Value], axis: int) -> ir.Value:
    """The per-step values stacked along a new `axis`."""
    lifted = [_unsqueeze(g, node, p, axis) for p in pieces]
    return g.make_node("Concat", lifted, attrs={"axis": axis}, before=node).outputs[0]


def _nested(body: ir.Graph) -> bool:
    return any(True for n in body.nodes for _ in n.subgraphs())


def _unroll_scan(g: ir.Graph, node: ir.Node) -> bool:
    body = node.attrs["body"]
    m = node.attrs["num_scan_inputs"]
    states, scans = list(node.inputs[: len(node.inputs) - m]), list(node.inputs[len(node.inputs) - m:])
    n_scan_out = len(body.outputs) - len(states)
    in_axes = list(node.attrs.get("scan_input_axes", [0] * m))
    in_dirs = list(node.attrs.get("scan_input_directions", [0] * m))
    out_axes = list(node.attrs.get("scan_output_axes", [0] * n_scan_out))
    out_dirs = list(node.attrs.get("scan_output_directions", [0] * n_scan_out))
    for k, axis in enumerate(out_axes):
        if axis < 0:
            shape = body.outputs[len(states) + k].shape
            if shape is None:
                return False
            out_axes[k] = axis + len(shape) + 1
    length = _length(node, scans, in_axes)
    if length is None or length * len(body.nodes) > MAX_NODES or _nested(body) or any(v is None for v in states):
        return False
    steps: list[list[ir.Value]] = []
    for t in range(length):
        slices = []
        for v, axis, reverse in zip(scans, in_axes, in_dirs):
            index = g.make_const(np.array(length - 1 - t if reverse else t, np.int64), "step")
            gather = g.make_node("Gather", [v, index], attrs={"axis": axis % len(v.shape)}, before=node)
            slices.append(gather.outputs[0])
        outs = g.inline_body(body, states + slices, before=node)
        states, per_step = outs[: len(states)], outs[len(states):]
        steps.append(per_step)
    for i, v in enumerate(states):
        g.substitute(node.outputs[i], v)
    for k in range(n_scan_out):
        pieces = [step[k] for step in steps]
        if out_dirs[k]:
            pieces.reverse()
        g.substitute(node.outputs[len(states) + k], _stack(g, node, pieces, out_axes[k]))
    g.remove(node)
    return True


def _constant(v: ir.Value | None):
    return None if v is None else v.scalar()


def _passes_cond_through(body: ir.Graph) -> bool:
    """Whether the body's condition output is its condition input (or constant true): no early exit."""
    out = body.outputs[0]
    while out.producer is not None and out.producer.op_type == "Identity":
        out = out.producer.inputs[0]
    value = _constant(out)
    return out is body.inputs[1] or bool(value is not None and value)


def _unroll_loop(g: ir.Graph, node: ir.Node) -> bool:
    body = node.attrs["body"]
    ins = list(node.inputs) + [None, None]
    trips, cond = _constant(ins[0]), ins[1]
    carried = list(node.inputs[2:])
    if (trips is None or int(trips) < 1 or int(trips) * len(body.nodes) > MAX_NODES
            or (cond is not None and not _constant(cond)) or not _passes_cond_through(body)
            or _nested(body) or any(v is None for v in carried)):
        return False
    steps: list[list[ir.Value]] = []
    for i in range(int(trips)):
        counter = g.make_const(np.array(i, np.int64), "iteration")
        keep_going = g.make_const(np.array(True), "cond")
        outs = g.inline_body(body, [counter, keep_going, *carried], before=node)
        carried, per_step = outs[1: 1 + len(carried)], outs[1 + len(carried):]
        steps.append(per_step)
    for i, v in enumerate(carried):
        g.substitute(node.outputs[i], v)
    for k in range(len(node.outputs) - len(carried)):
        g.substitute(node.outputs[len(carried) + k], _stack(g, node, [step[k] for step in steps], 0))
    g.remove(node)
    return True


def unroll(model: ir.Model) -> ir.Model:
    """`model` with every Scan and Loop it can unroll unrolled (re-imported, so shapes are
    inferred again). Constants are folded first: a trip count is often computed."""
    if any(n.op_type == "Loop" for n in model.graph.all_nodes()):
        from ember.passes.cleanup.fold_constants import FoldConstants

        FoldConstants().run(model.graph)
    changed = False
    for g in list(model.graph.all_graphs()):
        for node in list(g.nodes):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Scan" and model.opset >= 9:  # Scan-8 has a batch axis and per-batch lengths
                changed |= _unroll_scan(g, node)
            elif node.op_type == "Loop":
                changed |= _unroll_loop(g, node)
    return onnx_io.import_model(onnx_io.export_model(model)) if changed else model
