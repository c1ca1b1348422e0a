"""Ember's graph IR: Model, Graph, Node, Value, Tensor.

The IR sits at ONNX operator level. Use-def links are kept by the IR itself:
every edit goes through `Graph` methods that update `Value.uses` and
`Value.producer`, and `Graph.verify()` checks the invariants every pass must
leave true (SSA, topological order, consistent use lists, known types).

Subgraphs (If/Loop/Scan bodies) are `Graph` objects stored in node
attributes; a subgraph node may use a value of an enclosing graph directly,
and that use is recorded on the outer value, so no pass can drop a value a
subgraph still needs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Iterator, Union

import numpy as np
import onnx
from onnx import numpy_helper

from ember.errors import IRError

Dim = Union[int, str, None]  # static size, symbolic name, or unknown


class Tensor:
    """A constant tensor. Keeps the ONNX TensorProto it came from, so a round
    trip is lossless for every dtype (bfloat16, float8, strings...), and
    converts to numpy lazily."""

    __slots__ = ("_proto", "_array")

    def __init__(self, proto: onnx.TensorProto | None = None, array: np.ndarray | None = None):
        if proto is None and array is None:
            raise ValueError("Tensor needs a proto or an array")
        self._proto = proto
        self._array = array

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> "Tensor":
        return cls(array=np.asarray(array))

    @property
    def dtype(self) -> int:
        if self._proto is not None:
            return self._proto.data_type
        return onnx.helper.np_dtype_to_tensor_dtype(self._array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        if self._proto is not None:
            return tuple(self._proto.dims)
        return tuple(self._array.shape)

    @property
    def nbytes(self) -> int:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(self.dtype).itemsize if self.dtype != onnx.TensorProto.STRING else 1
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize

    def numpy(self) -> np.ndarray:
        if self._array is None:
            self._array = numpy_helper.to_array(self._proto)
        return self._array

    def to_proto(self, name: str) -> onnx.TensorProto:
        if self._proto is None:
            self._proto = numpy_helper.from_array(self._array)
        if self._proto.name != name:
            proto = onnx.TensorProto()
            proto.CopyFrom(self._proto)
            proto.name = name
            self._proto = proto
        return self._proto


@dataclass(eq=False)
class Value:
    """An SSA value: a graph input, an initializer, or a node output.

    `dtype` is the ONNX element type (0 when unknown), `shape` a tuple of dims
    (int, symbol name or None) or None when the rank is unknown. Values of a
    non-tensor type (sequence, optional, map) keep their `TypeProto` in
    `type_proto`. `const` holds the data of initializers."""

    name: str
    dtype: int = 0
    shape: tuple[Dim, ...] | None = None
    type_proto: onnx.TypeProto | None = None
    const: Tensor | None = None
    doc_string: str = ""
    omitted: bool = False  # an optional output left unnamed in the source ("" in ONNX)
    # provenance: names of values this one replaced (`replace_all_uses`), so a tensor of the
    # source model can be found after passes fused or renamed it (`ember debug`)
    aliases: set[str] = field(default_factory=set, repr=False)
    producer: "Node | None" = field(default=None, repr=False)
    uses: list[tuple["Node", int]] = field(default_factory=list, repr=False)

    @property
    def is_tensor(self) -> bool:
        return self.type_proto is None or self.type_proto.HasField("tensor_type")

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def is_empty(self) -> bool:
        """A tensor of static shape with no elements (its contents are known: none)."""
        return (self.is_tensor and bool(self.dtype) and self.shape is not None and 0 in self.shape
                and all(isinstance(d, int) for d in self.shape))

    def scalar(self):
        """The first element of its constant data (a scalar operand's value), or None."""
        return None if self.const is None else self.const.numpy().reshape(-1)[0]

    def consumers(self) -> list["Node"]:
        seen: dict[int, Node] = {}
        for node, _ in self.uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"Value({self.name!r}, dtype={self.dtype}, shape={self.shape})"


def static_shape(v: Value | None) -> tuple[int, ...] | None:
    """The shape of `v` when every dim is a known integer, else None (also for None)."""
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return None
    return tuple(v.shape)  # type: ignore[return-value]


def const_array(v: Value | None) -> np.ndarray | None:
    """The constant data of `v` as a numpy array, or None when it is not a constant (or None)."""
    return None if v is None or v.const is None else v.const.numpy()


class Node:
    """One operator application. Inputs may be None for omitted optional
    inputs. Attributes are plain Python values (int, float, bytes/str,
    list, Tensor, Graph, onnx.TypeProto); `attr_types` remembers the ONNX
    attribute type so lists of length 0 and refs round-trip."""

    __slots__ = ("op_type", "domain", "name", "_inputs", "outputs", "attrs", "attr_types",
                 "attr_refs", "doc_string", "overload", "metadata", "graph")

    def __init__(self, op_type: str, inputs: Iterable[Value | None], outputs: Iterable[Value],
                 attrs: dict[str, Any] | None = None, *, domain: str = "", name: str = "",
                 doc_string: str = ""):
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self._inputs: list[Value | None] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.attr_types: dict[str, int] = {}
        self.attr_refs: dict[str, str] = {}
        self.doc_string = doc_string
        self.overload = ""
        self.metadata: dict[str, str] = {}
        self.graph: Graph | None = None

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def subgraphs(self) -> Iterator["Graph"]:
        for v in self.attrs.values():
            if isinstance(v, Graph):
                yield v
            elif isinstance(v, list):
                yield from (g for g in v if isinstance(g, Graph))

    def __repr__(self) -> str:
        ins = ", ".join("" if v is None else "%" + v.name for v in self._inputs)
        outs = ", ".join("%" + v.name for v in self.outputs)
        dom = f"{self.domain}::" if self.domain else ""
        return f"{outs} = {dom}{self.op_type}({ins})"


class Graph:
    """A topologically ordered list of nodes with explicit inputs, outputs and
    initializers. All edits go through its methods."""

    def __init__(self, name: str = "graph", parent: "Graph | None" = None):
        self.name = name
        self.parent = parent
        self._nodes: list[Node] = []
        self._detached = 0  # removed nodes still in _nodes (dropped in one sweep when next read)
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.doc_string = ""
        self.value_info_names: set[str] = set()  # intermediate values that carried value_info
        self.opset = 17  # the model's default-domain opset, kept on the root graph by Model
        self.extra: dict[str, Any] = {}  # sparse initializers etc. carried verbatim
        self._names: set[str] = set()
        self._counter = itertools.count()

    @property
    def nodes(self) -> list[Node]:
        """The nodes in order. Removing one only detaches it; the list drops detached nodes
        when it is next read, so removing k nodes of n costs O(n), not O(k n)."""
        if self._detached:
            self._nodes = [n for n in self._nodes if n.graph is self]
            self._detached = 0
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: list[Node]) -> None:
        self._nodes, self._detached = list(nodes), 0

    # ---- construction -------------------------------------------------
    def _claim(self, name: str) -> None:
        g = self  # the root holds every name of its subgraphs too: fresh names are checked there
        while g is not None:
            g._names.add(name)
            g = g.parent

    def fresh_name(self, hint: str = "v") -> str:
        root = self.root()
        while True:
            name = f"{hint}__{next(root._counter)}"
            if not root._name_taken(name):
                root._names.add(name)
                return name

    def _name_taken(self, name: str) -> bool:
        return name in self._names

    def root(self) -> "Graph":
        g = self
        while g.parent is not None:
            g = g.parent
        return g

    def add_input(self, value: Value) -> Value:
        self._claim(value.name)
        self.inputs.append(value)
        return value

    def add_initializer(self, value: Value) -> Value:
        if value.const is None:
            raise IRError(f"initializer {value.name!r} has no data")
        self._claim(value.name)
        self.initializers[value.name] = value
        return value

    def make_const(self, array: np.ndarray, hint: str = "const") -> Value:
        arr = np.asarray(array)
        t = Tensor.from_numpy(arr)
        v = Value(self.fresh_name(hint), dtype=t.dtype, shape=tuple(arr.shape), const=t)
        self.initializers[v.name] = v
        return v

    def make_node(self, op_type: str, inputs: Iterable[Value | None], num_outputs: int = 1,
                  attrs: dict[str, Any] | None = None, *, domain: str = "", name: str = "",
                  before: Node | None = None, after: Node | None = None) -> Node:
        """Create a node with fresh output values and insert it (at the end,
        or before/after a given node)."""
        outs = [Value(self.fresh_name(op_type.lower())) for _ in range(num_outputs)]
        node = Node(op_type, inputs, outs, attrs, domain=domain, name=name or self.fresh_name(op_type))
        self.insert(node, before=before, after=after)
        return node

    def insert(self, node: Node, *, before: Node | None = None, after: Node | None = None) -> Node:
        if node.graph is not None:
            raise IRError(f"node {node.name!r} already belongs to a graph")
        node.graph = self
        for i, v in enumerate(node._inputs):
            if v is not None:
                v.uses.append((node, i))
        for v in node.outputs:
            if v.producer is not None:
                raise IRError(f"value {v.name!r} already has a producer")
            v.producer = node
            self._claim(v.name)
        if before is not None:
            self.nodes.insert(self.nodes.index(before), node)
        elif after is not None:
            self.nodes.insert(self.nodes.index(after) + 1, node)
        else:
            self.nodes.append(node)
        return node

    # ---- edits --------------------------------------------------------
    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node._inputs[index]
        if old is not None:
            old.uses.remove((node, index))
        node._inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every user of `old` (nodes, subgraph nodes, graph outputs) use `new`."""
        if old is new:
            return
        new.aliases |= old.aliases | {old.name}
        for node, i in list(old.uses):
            node._inputs[i] = new
            new.uses.append((node, i))
        old.uses.clear()
        for g in self._self_and_ancestors():
            g.outputs = [new if o is old else o for o in g.outputs]

    def _self_and_ancestors(self) -> Iterator["Graph"]:
        g: Graph | None = self
        while g is not None:
            yield g
            g = g.parent

    def remove(self, node: Node, *, safe: bool = True) -> None:
        """Remove a node. With safe=True (the default) refuses, changing
        nothing, when an output is still used or is a graph output."""
        if node.graph is not self:
            raise IRError(f"node {node.name or node.op_type!r} is not in graph {self.name!r}")
        if safe:
            for v in node.outputs:
                if v.uses:
                    users = ", ".join(n.name or n.op_type for n, _ in v.uses)
                    raise IRError(f"cannot remove {node.op_type} node {node.name!r}: "
                                  f"output {v.name!r} is still used by {users}")
                if any(v is o for o in self.outputs):
                    raise IRError(f"cannot remove {node.op_type} node {node.name!r}: "
                                  f"output {v.name!r} is a graph output")
        for i, v in enumerate(node._inputs):
            if v is not None:
                v.uses.remove((node, i))
        for v in node.outputs:
            v.producer = None
        node.graph = None
        self._detached += 1

    def substitute(self, old: Value, new: Value) -> None:
        """Make `new` take `old`'s place everywhere, keeping graph output
        names: when `old` is a graph output, `new` takes its name if `new` is
        a private node output, else an Identity carrying the name is added."""
        if old is new:
            return
        if not self.is_output(old):
            self.replace_all_uses(old, new)
            return
        name = old.name
        old.name = self.fresh_name(name)
        private = (new.producer is not None and new.producer.graph is self and not self.is_output(new))
        if private:
            new.name = name
            self.replace_all_uses(old, new)
        else:
            ident = Node("Identity", [new], [Value(name, dtype=old.dtype, shape=old.shape,
                                                   type_proto=old.type_proto)], name=self.fresh_name("Identity"))
            self.replace_all_uses(old, ident.outputs[0])
            p = new.producer
            if p is not None and p.graph is self:
                self.insert(ident, after=p)
            elif self.nodes:
                self.insert(ident, before=self.nodes[0])
            else:
                self.insert(ident)
        if not new.dtype and new.type_proto is None:
            new.dtype, new.shape = old.dtype, old.shape

    def forward(self, node: Node, in_index: int = 0, out_index: int = 0) -> bool:
        """Remove a node whose output `out_index` equals its input `in_index`
        (Identity, Dropout, no-op Reshape...), rewiring users to the input.
        Graph output names are kept: when the output is a graph output, the
        input's producer is made to write it instead. Returns False (changing
        nothing) when that is impossible or other outputs are still used."""
        x, y = node.inputs[in_index], node.outputs[out_index]
        if x is None or any(o.uses or self.is_output(o) for j, o in enumerate(node.outputs) if j != out_index):
            return False
        if not self.is_output(y):
            self.replace_all_uses(y, x)
            self.remove(node)
            return True
        p = x.producer
        if p is None or p.graph is not self or self.is_output(x):
            return False
        for i, v in enumerate(node._inputs):
            if v is not None:
                self.set_input(node, i, None)
        y.producer = None
        node.graph = None
        self._detached += 1
        self.replace_all_uses(x, y)
        p.outputs[p.outputs.index(x)] = y
        y.producer, x.producer = p, None
        if not y.dtype and y.type_proto is None:
            y.dtype, y.shape = x.dtype, x.shape
        return True

    def remove_unused_initializers(self) -> bool:
        input_names = {v.name for v in self.inputs}
        dead = [n for n, v in self.initializers.items()
                if not v.uses and n not in input_names and not any(v is o for o in self.outputs)]
        for n in dead:
            del self.initializers[n]
        return bool(dead)

    # ---- queries ------------------------------------------------------
    def all_graphs(self) -> Iterator["Graph"]:
        yield self
        for n in self.nodes:
            for g in n.subgraphs():
                yield from g.all_graphs()

    def all_nodes(self) -> Iterator[Node]:
        for g in self.all_graphs():
            yield from g.nodes

    def values(self) -> Iterator[Value]:
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, self.initializers.values(),
                                 (o for n in self.nodes for o in n.outputs)):
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def is_output(self, value: Value) -> bool:
        return any(value is o for o in self.outputs)

    def to_networkx(self):
        """A networkx.MultiDiGraph view: one vertex per node (the Node object,
        attribute `op_type`), one edge per data dependency, keyed by value name.
        Pseudo-vertices 'input:NAME' and 'output:NAME' stand for graph edges."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for v in self.inputs:
            g.add_node(f"input:{v.name}", op_type="<input>")
        for n in self.nodes:
            g.add_node(n, op_type=n.op_type)
        for n in self.nodes:
            for v in n.inputs:
                if v is None:
                    continue
                if v.producer is not None and v.producer.graph is self:
                    g.add_edge(v.producer, n, key=v.name)
                elif any(v is i for i in self.inputs):
                    g.add_edge(f"input:{v.name}", n, key=v.name)
        for v in self.outputs:
            g.add_node(f"output:{v.name}", op_type="<output>")
            if v.producer is not None and v.producer.graph is self:
                g.add_edge(v.producer, f"output:{v.name}", key=v.name)
        return g

    def sort(self) -> None:
        """Re-establish topological order (stable) after out-of-order edits."""
        import networkx as nx

        order = {id(n): i for i, n in enumerate(self.nodes)}
        dg = nx.DiGraph()
        dg.add_nodes_from(range(len(self.nodes)))
        for i, n in enumerate(self.nodes):
            for v in _captured_inputs(n):
                p = v.producer
                if p is not None and p.graph is self:
                    dg.add_edge(order[id(p)], i)
        try:
            seq = list(nx.lexicographical_topological_sort(dg))
        except nx.NetworkXUnfeasible:
            raise IRError(f"graph {self.name!r} has a cycle") from None
        self.nodes = [self.nodes[i] for i in seq]

    def inline_body(self, body: "Graph", bound: list[Value], before: Node) -> list[Value]:
        """A copy of subgraph `body`'s nodes placed before `before`, its inputs bound to `bound`;
        returns the copied outputs."""
        mapping: dict[int, Value] = {id(v): b for v, b in zip(body.inputs, bound)}
        for v in body.initializers.values():
            mapping[id(v)] = self.make_const(v.const.numpy(), v.name)
        for n in body.nodes:
            copy = self.make_node(n.op_type, [None if v is None else mapping.get(id(v), v) for v in n.inputs],
                                  len(n.outputs), dict(n.attrs), domain=n.domain, before=before)
            copy.attr_types.update(n.attr_types)
            for old, new in zip(n.outputs, copy.outputs):
                new.dtype, new.shape, new.type_proto = old.dtype, old.shape, old.type_proto
                mapping[id(old)] = new
        return [mapping.get(id(v), v) for v in body.outputs]

    # ---- invariants ---------------------------------------------------
    def verify(self) -> None:
        """Raise IRError naming the first broken invariant."""
        _verify(self, outer={})

    def __str__(self) -> str:
        from ember.compiler.ir.printer import format_graph

        return format_graph(self)


def _captured_inputs(node: Node) -> Iterator[Value]:
    """Inputs of a node including values its subgraphs take from outside."""
    for v in node.inputs:
        if v is not None:
            yield v
    for g in node.subgraphs():
        for sub in g.all_nodes():
            for v in sub.inputs:
                if v is not None and v.producer is not None and not _inside(v.producer.graph, g):
                    yield v


def _inside(graph: Graph | None, ancestor: Graph) -> bool:
    while graph is not None:
        if graph is ancestor:
            return True
        graph = graph.parent
    return False


_DTYPES = frozenset(onnx.TensorProto.DataType.values())


def _verify(graph: Graph, outer: dict[str, Value]) -> None:
    where = f"graph {graph.name!r}"
    defined: dict[str, Value] = dict(outer)
    local: set[str] = set()
    use_sets: dict[int, set[tuple[int, int]]] = {}  # a constant shared by n nodes has n uses

    def listed(v: Value, node: Node, i: int) -> bool:
        if len(v.uses) < 16:
            return any(n is node and j == i for n, j in v.uses)
        uses = use_sets.get(id(v))
        if uses is None:
            uses = use_sets[id(v)] = {(id(n), j) for n, j in v.uses}
        return (id(node), i) in uses

    def define(v: Value, what: str) -> None:
        if not v.name:
            raise IRError(f"{where}: {what} has an empty name")
        if v.name in local:
            raise IRError(f"{where}: value {v.name!r} is defined twice (SSA violated)")
        local.add(v.name)
        defined[v.name] = v
        if v.dtype and v.dtype not in _DTYPES:
            raise IRError(f"{where}: value {v.name!r} has unknown dtype {v.dtype}")

    for v in graph.inputs:
        define(v, "an input")
    input_ids = {id(v) for v in graph.inputs}
    for name, v in graph.initializers.items():
        if v.name != name:
            raise IRError(f"{where}: initializer key {name!r} names value {v.name!r}")
        if v.const is None:
            raise IRError(f"{where}: initializer {name!r} has no data")
        if id(v) not in input_ids:
            define(v, "an initializer")
    for node in graph.nodes:
        label = f"{where}: {node.op_type} node {node.name!r}"
        if node.graph is not graph:
            raise IRError(f"{label} does not point back to its graph")
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if defined.get(v.name) is not v:
                raise IRError(f"{label}: input {i} {v.name!r} is not defined before use")
            if not listed(v, node, i):
                raise IRError(f"{label}: input {i} {v.name!r} is missing from its use list")
        for sub in node.subgraphs():
            if sub.parent is not graph:
                raise IRError(f"{label}: subgraph {sub.name!r} has the wrong parent")
            _verify(sub, defined)
        for v in node.outputs:
            if v.producer is not node:
                raise IRError(f"{label}: output {v.name!r} names another producer")
            define(v, "a node output")
    for v in graph.outputs:
        if defined.get(v.name) is not v:
            raise IRError(f"{where}: output {v.name!r} is not defined")
    # every recorded use must be real
    for v in list(defined.values()):
        if v.name not in local:
            continue
        for node, i in v.uses:
            if node.graph is None or i >= len(node.inputs) or node.inputs[i] is not v:
                raise IRError(f"{where}: value {v.name!r} lists a stale use by {node.op_type} {node.name!r}")


@dataclass(eq=False)
class Model:
    """A graph plus the model-level facts ONNX carries."""

    graph: Graph
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    ir_version: int = onnx.IR_VERSION
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # training_info etc., verbatim

    def __post_init__(self) -> None:
        self.graph.opset = self.opset  # passes that work on graphs read it from graph.root()

    def verify(self) -> None:
        self.graph.verify()

    def assign(self, other: "Model") -> None:
        """Take over `other`'s contents: a step that rebuilt the model (re-imported it, say)
        replaces this one in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))
        self.graph.opset = self.opset

    @property
    def opset(self) -> int:
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 1))
