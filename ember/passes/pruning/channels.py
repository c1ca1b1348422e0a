"""Structured channel pruning: whole output channels of Conv, Gemm and MatMul
layers are removed and every consumer is rewritten, so the result is a
smaller dense model that any runtime runs faster.

Channels are tracked as *channel spaces*: the set of tensors that share one
channel axis. A space starts at the output of a prunable layer (Conv with
group 1, Gemm, MatMul with a constant weight) and grows through the ops that
keep channels apart: activations, pooling, BatchNormalization, depthwise
convolutions, and elementwise ops, which join the spaces of their inputs (a
residual Add makes the two branches one space, so both lose the same
channels). A space ends at the layers that reduce over channels (the next
Conv, Gemm or MatMul, directly or through Flatten), whose input channels are
removed. A space that reaches anything else (a graph output, Concat, Reshape,
Softmax, a layer that cannot be pruned...) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ember.compiler.ir import Graph, Node, Value, const_array, static_shape
from ember.passes.manager import Pass, register_pass

UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu",
         "Softplus", "Softsign", "Gelu", "Erf", "Identity", "Abs", "Neg", "Exp", "Mish", "Dropout",
         "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Cast"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "PRelu"}
BATCHNORM = "BatchNormalization"
REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
          "ReduceSumSquare", "ReduceProd"}


@dataclass
class Space:
    """Tensors sharing one channel axis, with the layers to edit when channels go."""

    values: list[tuple[Value, int]] = field(default_factory=list)  # (tensor, its channel axis)
    producers: list[Node] = field(default_factory=list)  # layers whose output channels these are
    channel_params: list[tuple[Node, int, int]] = field(default_factory=list)  # (node, const input, axis)
    depthwise: list[Node] = field(default_factory=list)
    sinks: list[tuple[Node, int]] = field(default_factory=list)  # (layer, block size: 1, or H*W via Flatten)
    flattens: list[tuple[Node, int]] = field(default_factory=list)
    frozen: str = ""  # why the space cannot be pruned
    channels: int = 0

    @property
    def name(self) -> str:
        """The first producer's output tensor (node names may be empty)."""
        return self.producers[0].outputs[0].name if self.producers else "?"



def producer_output_axis(node: Node) -> int | None:
    """Axis of the prunable layer's weight that holds its output channels, or
    None when the layer cannot lose output channels."""
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.dtype.kind != "f":
        return None
    if node.op_type == "Conv" and node.attrs.get("group", 1) == 1 and (len(node.inputs) < 3 or node.inputs[2] is None
                                                                        or node.inputs[2].const is not None):
        return 0
    if node.op_type == "Gemm" and not node.attrs.get("transA", 0) and w.ndim == 2:
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None and (c.const is None or const_array(c).ndim > 2):
            return None
        return 0 if node.attrs.get("transB", 0) else 1
    if node.op_type == "MatMul" and w.ndim == 2:
        return 1
    return None


def producer_rows(node: Node) -> np.ndarray:
    w = const_array(node.inputs[1])
    axis = producer_output_axis(node)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _input_axis(node: Node) -> int | None:
    """Axis of a channel-reducing layer's weight that holds its input channels."""
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None:
        return None
    if node.op_type == "Conv" and node.attrs.get("group", 1) == 1:
        return 1
    if node.op_type == "Gemm" and not node.attrs.get("transA", 0) and w.ndim == 2:
        return 1 if node.attrs.get("transB", 0) else 0
    if node.op_type == "MatMul" and w.ndim == 2:
        return 0
    return None


def _is_depthwise(node: Node, channels: int) -> bool:
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return (node.op_type == "Conv" and w is not None and node.attrs.get("group", 1) == channels
            and w.shape[0] == channels and w.shape[1] == 1
            and (len(node.inputs) < 3 or node.inputs[2] is None or node.inputs[2].const is not None))


class _Spaces:
    """Union-find over the graph's tensors, grown from the prunable layers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.parent: dict[int, int] = {}
        self.info: dict[int, Space] = {}
        self.axis: dict[int, int] = {}
        self.seen: dict[int, Value] = {}

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def add(self, v: Value, axis: int, channels: int) -> int:
        k = id(v)
        if k not in self.parent:
            self.parent[k] = k
            self.info[k] = Space(values=[(v, axis)], channels=channels)
            self.axis[k] = axis
            self.seen[k] = v
        return self.find(k)

    def union(self, a: int, b: int) -> int:
        """Merge b's space into a's, in place: a Space object held for a's root
        stays the live one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self.info[ra], self.info.pop(rb)
        sa.values += sb.values
        sa.producers += sb.producers
        sa.channel_params += sb.channel_params
        sa.depthwise += sb.depthwise
        sa.sinks += sb.sinks
        sa.flattens += sb.flattens
        sa.frozen = sa.frozen or sb.frozen
        if sa.channels != sb.channels:
            sa.frozen = sa.frozen or "tensors of different channel counts meet"
        self.parent[rb] = ra
        return ra


def find_spaces(graph: Graph) -> list[Space]:
    """The channel spaces of a graph (top level only), frozen ones included."""
    s = _Spaces(graph)
    work: list[Value] = []
    for node in graph.nodes:
        if producer_output_axis(node) is None:
            continue
        y = node.outputs[0]
        if y.shape is None or len(y.shape) < 2 or not isinstance(y.shape[-1 if node.op_type != "Conv" else 1], int):
            continue
        axis = 1 if node.op_type == "Conv" else len(y.shape) - 1
        root = s.add(y, axis, int(y.shape[axis]))
        s.info[root].producers.append(node)
        work.append(y)
    done: set[int] = set()
    while work:
        v = work.pop()
        if id(v) in done:
            continue
        done.add(id(v))
        root = s.find(id(v))
        sp, axis = s.info[root], s.axis[id(v)]
        if graph.is_output(v):
            sp.frozen = sp.frozen or f"{v.name} is a graph output"
        for node in v.consumers():
            _visit(s, root, v, axis, node, work)
    # every tensor of a space must come from its producers or from ops inside it
    spaces = list(s.info.values())
    for sp in spaces:
        inside = {id(v) for v, _ in sp.values}
        for v, _ in sp.values:
            p = v.producer
            if p is None:
                sp.frozen = sp.frozen or f"{v.name} is a graph input"
            elif p not in sp.producers and not any(id(i) in inside for i in p.inputs if i is not None):
                sp.frozen = sp.frozen or f"{v.name} comes from {p.op_type} {p.name}"
    return spaces


def _visit(s: _Spaces, root: int, v: Value, axis: int, node: Node, work: list[Value]) -> None:
    sp = s.info[root]
    channels = sp.channels
    op = node.op_type
    first = node.inputs and node.inputs[0] is v

    def join(out: Value, out_axis: int) -> None:
        if out.shape is None or len(out.shape) <= out_axis or out.shape[out_axis] != channels:
            s.info[s.find(root)].frozen = s.info[s.find(root)].frozen or f"{op} {node.name} changes the channels"
            return
        r = s.add(out, out_axis, channels)
        s.union(root, r)
        work.append(out)

    if op in UNARY and first and not (op in ("MaxPool",) and len(node.outputs) > 1 and node.outputs[1].uses):
        join(node.outputs[0], axis)
    elif op == BATCHNORM and first and len(node.outputs) == 1:
        if all(i is not None and i.const is not None for i in node.inputs[1:5]):
            sp.channel_params.extend((node, i, 0) for i in range(1, 5))
            join(node.outputs[0], axis)
        else:
            sp.frozen = sp.frozen or f"BatchNormalization {node.name} with computed statistics"
    elif op in ELEMENTWISE:
        out = node.outputs[0]
        if out.shape is None or v.shape is None:
            sp.frozen = sp.frozen or f"{op} {node.name} of unknown shape"
            return
        out_axis = axis + len(out.shape) - len(v.shape)
        for i, other in enumerate(node.inputs):
            if other is None or other is v:
                continue
            if other.shape is None:
                sp.frozen = sp.frozen or f"{op} {node.name} of unknown shape"
                return
            oa = out_axis - (len(out.shape) - len(other.shape))
            if oa < 0 or other.shape[oa] == 1:
                continue  # broadcast over the channels
            if other.const is not None:
                sp.channel_params.append((node, i, oa))
            elif other.shape[oa] == channels:
                r = s.add(other, oa, channels)  # the other branch: same channels (residual)
                s.union(root, r)
                work.append(other)
            else:
                sp.frozen = sp.frozen or f"{op} {node.name} mixes channel counts"
        join(out, out_axis)
    elif op == "Conv" and first and _is_depthwise(node, channels) and axis == 1:
        sp.depthwise.append(node)
        join(node.outputs[0], 1)
    elif first and _input_axis(node) is not None and (op == "Conv" and axis == 1 or
                                                        op != "Conv" and axis == len(v.shape or ()) - 1):
        sp.sinks.append((node, 1))
    elif op in REDUCE and first and _reduced_axes(node, v) is not None and axis not in _reduced_axes(node, v):
        gone = _reduced_axes(node, v)
        join(node.outputs[0], axis if node.attrs.get("keepdims", 1) else axis - sum(1 for g in gone if g < axis))
    elif (op == "Flatten" and node.attrs.get("axis", 1) == 1 or _flattening_reshape(node, v)) and first \
            and axis == 1 and static_shape(v) is not None:
        block = int(np.prod(v.shape[2:], dtype=np.int64))
        users = node.outputs[0].consumers()
        if users and all(u.inputs[0] is node.outputs[0] and u.op_type in ("Gemm", "MatMul")
                         and _input_axis(u) is not None for u in users) and not s.graph.is_output(node.outputs[0]):
            sp.flattens.append((node, block))
            sp.sinks.extend((u, block) for u in users)
        else:
            sp.frozen = sp.frozen or f"{op} {node.name} feeds something other than Gemm/MatMul"
    else:
        sp.frozen = sp.frozen or f"{op} {node.name} uses the channels"


def _reduced_axes(node: Node, v: Value) -> set[int] | None:
    """The axes a Reduce* node reduces (None when they are not known)."""
    if v.shape is None:
        return None
    rank = len(v.shape)
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        c = const_array(node.inputs[1])
        if c is None:
            return None
        axes = c.reshape(-1).tolist()
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) else set(range(rank))
    return {a % rank for a in axes}


def _flattening_reshape(node: Node, v: Value) -> bool:
    """A Reshape [N, C, ...] -> [N, C*...] (what Flatten does) with a constant 2-D shape."""
    if node.op_type != "Reshape" or len(node.inputs) < 2 or not static_shape(v) is not None or len(v.shape) < 2:
        return False
    shape = const_array(node.inputs[1])
    out = node.outputs[0].shape
    return (shape is not None and shape.size == 2 and out is not None and len(out) == 2
            and out[0] == v.shape[0] and out[1] == int(np.prod(v.shape[1:], dtype=np.int64)))


def keep_channels(scores: np.ndarray, ratio: float, multiple: int = 1) -> np.ndarray:
    """Indices of the channels to keep: the highest scores, in order; at least
    one (and a multiple of `multiple` where the layer allows it)."""
    n = len(scores)
    keep = max(1, int(round(n * (1.0 - ratio))))
    if multiple > 1 and keep > multiple:
        keep = int(round(keep / multiple)) * multiple
    keep = min(n, keep)
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


SELECTIONS = ("reconstruction", "energy")


def channel_scores(sp: Space, norm: str = "l2", acts: dict[str, np.ndarray] | None = None,
                   select: str = "reconstruction") -> np.ndarray:
    """Per channel, how much it matters (higher: kept longer). Without data: each producer's
    filter norm, relative to that producer's mean (so layers of different scale count alike),
    summed over producers. With activations (`acts`: tensor name -> calibration values of the
    sinks' inputs): the order in which `reconstruction_order` gives channels up, or, where a
    sink is not a plain linear map of its input (grouped convolutions, very wide layers), the
    energy each channel sends downstream, mean(x_c^2) x |W[:, c]|^2 summed over the sinks
    (also with `select="energy"`)."""
    if acts is not None and all(n.inputs[0].name in acts for n, _ in sp.sinks):
        order = reconstruction_order(sp, acts) if select == "reconstruction" else None
        if order is not None:
            scores = np.empty(sp.channels)
            scores[order] = np.arange(sp.channels)
            return scores
        total = np.zeros(sp.channels)
        for node, block in sp.sinks:
            x = acts[node.inputs[0].name].astype(np.float64)
            axis = 1 if node.op_type == "Conv" or block > 1 else x.ndim - 1
            if block > 1:  # flattened: features are channel-major blocks
                x = x.reshape(x.shape[0], sp.channels, block)
            energy = np.moveaxis(x ** 2, axis, 0).reshape(sp.channels, -1).mean(axis=1)
            w = np.moveaxis(const_array(node.inputs[1]).astype(np.float64), _input_axis(node), 0)
            wn = (w.reshape(sp.channels, block, -1) ** 2).sum(axis=(1, 2))
            total += energy * wn
        return total
    total = np.zeros(sp.channels)
    for p in sp.producers:
        rows = producer_rows(p).astype(np.float64)
        n = np.abs(rows).sum(axis=1) if norm == "l1" else np.sqrt((rows ** 2).sum(axis=1))
        total += n / (n.mean() or 1.0)
    return total


MAX_COLUMNS = 2048  # of a sink's input rows (channels x kernel positions) for least-squares selection
MAX_ROWS = 8192


def _sink_system(node: Node, block: int, channels: int, x: np.ndarray, rng) -> tuple | None:
    """(A [rows, channels * b], W [channels * b, Cout], b) with the sink's output = A @ W
    (bias aside): the columns of each input channel are b adjacent ones. None where the
    sink is not such a map."""
    from ember.passes.pruning import reconstruct as rc

    if not rc.supported(node) or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return None
    w = const_array(node.inputs[1]).astype(np.float64)
    if node.op_type == "Conv":
        a = rc.im2col(x, node, tuple(w.shape[2:]))
        b = int(np.prod(w.shape[2:]))
    else:
        a, b = x.reshape(-1, x.shape[-1]), block
    wm = rc.weight_matrix(node, w).T
    if a.shape[1] != channels * b or wm.shape[0] != a.shape[1] or a.shape[1] > MAX_COLUMNS:
        return None
    if len(a) > MAX_ROWS:
        a = a[rng.choice(len(a), MAX_ROWS, replace=False)]
    return a.astype(np.float64), wm, b


def reconstruction_order(sp: Space, acts: dict[str, np.ndarray], ridge: float = 1e-3) -> np.ndarray | None:
    """The space's channels in the order to give them up (first: least missed), chosen so
    the sinks' outputs stay best rebuilt by least squares from the channels kept (ThiNet's
    greedy selection, with the refit that `ember prune --reconstruct` then does): backward
    elimination, at each step removing the channel whose loss raises the sinks' residual
    least, as a fraction of each sink's output energy. With P = (A'A)^-1 over the kept
    columns and B = P A'Y the fitted weights, dropping channel j's columns J raises the
    residual by tr(B_J' P_JJ^-1 B_J); P and B are then downdated. None where a sink is not
    a linear map of its input (`_sink_system`)."""
    rng = np.random.default_rng(0)
    states = []
    for node, block in sp.sinks:
        system = _sink_system(node, block, sp.channels, acts[node.inputs[0].name], rng)
        if system is None:
            return None
        a, w, b = system
        g0 = a.T @ a
        p = np.linalg.inv(g0 + np.eye(len(g0)) * ridge * (np.trace(g0) / len(g0) or 1.0))
        y_energy = float(((a @ w) ** 2).sum()) or 1.0
        states.append([p, p @ (g0 @ w), b, y_energy])  # B = P A'Y with Y = A W
    alive = list(range(sp.channels))
    order = []
    while len(alive) > 1:
        n = len(alive)
        cost = np.zeros(n)
        for p, bm, b, energy in states:
            d = p.reshape(n, b, n, b)[np.arange(n), :, np.arange(n), :]  # [n, b, b] diagonal blocks
            bj = bm.reshape(n, b, -1)
            cost += (bj * np.linalg.solve(d, bj)).sum(axis=(1, 2)) / energy
        j = int(np.argmin(cost))
        order.append(alive.pop(j))
        for st in states:
            p, bm, b, _ = st
            cols = np.arange(j * b, (j + 1) * b)
            rest = np.setdiff1d(np.arange(p.shape[0]), cols)
            pj = p[np.ix_(rest, cols)]
            dinv = np.linalg.inv(p[np.ix_(cols, cols)])
            st[0] = p[np.ix_(rest, rest)] - pj @ dinv @ pj.T
            st[1] = bm[rest] - pj @ (dinv @ bm[cols])
    return np.array(order + alive)


def set_const(graph: Graph, node: Node, index: int, array: np.ndarray) -> None:
    old = node.inputs[index]
    new = graph.make_const(np.ascontiguousarray(array.astype(old.const.numpy().dtype)), old.name)
    graph.set_input(node, index, new)


def apply(graph: Graph, sp: Space, keep: np.ndarray) -> None:
    """Remove every channel of `sp` not in `keep` (sorted indices)."""
    for p in sp.producers:
        set_const(graph, p, 1, np.take(const_array(p.inputs[1]), keep, axis=producer_output_axis(p)))
        b = p.inputs[2] if len(p.inputs) > 2 else None
        if b is not None:
            arr = const_array(b)
            if arr.ndim >= 1 and arr.shape[-1] == sp.channels:
                set_const(graph, p, 2, np.take(arr, keep, axis=arr.ndim - 1))
    for node, i, axis in sp.channel_params:
        arr = const_array(node.inputs[i])
        if arr.shape[axis] == sp.channels:
            set_const(graph, node, i, np.take(arr, keep, axis=axis))
    for node in sp.depthwise:
        set_const(graph, node, 1, np.take(const_array(node.inputs[1]), keep, axis=0))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            set_const(graph, node, 2, np.take(const_array(node.inputs[2]), keep, axis=0))
        node.attrs["group"] = len(keep)
    for node, block in sp.sinks:
        idx = (keep[:, None] * block + np.arange(block)[None, :]).reshape(-1) if block > 1 else keep
        set_const(graph, node, 1, np.take(const_array(node.inputs[1]), idx, axis=_input_axis(node)))
    for v, axis in sp.values:
        v.shape = tuple(len(keep) if i == axis else d for i, d in enumerate(v.shape))
    for node, block in sp.flattens:
        out = node.outputs[0]
        if out.shape is not None:
            out.shape = (out.shape[0], len(keep) * block)
        if node.op_type == "Reshape":
            shape = const_array(node.inputs[1]).copy()
            if shape[1] > 0:  # an explicit feature count (0 and -1 need no change)
                shape[1] = len(keep) * block
                set_const(graph, node, 1, shape)
    sp.channels = len(keep)


def prunable(graph: Graph) -> list[Space]:
    return [sp for sp in find_spaces(graph) if not sp.frozen and sp.sinks and sp.channels > 1]


@register_pass
@dataclass(frozen=True)
class PruneChannels(Pass):
    """Remove the `sparsity` fraction of output channels with the smallest
    filter norms from every prunable channel space (see module docstring),
    rewriting producers, per-channel parameters and consumers. Without data:
    run `ember prune --reconstruct` to refit the layers after it."""

    name: ClassVar[str] = "prune-channels"
    sparsity: float = 0.5
    norm: str = "l2"
    multiple: int = 8  # kept channel counts rounded to a multiple of this: odd counts defeat vector kernels

    def run(self, graph: Graph) -> bool:
        if not 0.0 <= self.sparsity < 1.0:
            from ember.errors import PassError

            raise PassError(f"prune-channels: sparsity must be in [0, 1), got {self.sparsity}")
        changed = False
        for sp in prunable(graph):
            keep = keep_channels(channel_scores(sp, self.norm), self.sparsity, self.multiple)
            if len(keep) < sp.channels:
                apply(graph, sp, keep)
                changed = True
        if changed:
            graph.remove_unused_initializers()
        return changed
