"""Declarative rewrites: pattern -> check -> replacement.

A pattern is a small tree of ops over variables:

    X, W = Var("x"), Const("w")
    pattern = Op("Relu", Op("Conv", X, W, name="conv"))

`Var` matches any value, `Const` only initializers; a variable used twice
must bind the same value (`Op("Mul", X, Op("Sigmoid", X))`). `Op` takes
alternative op types (`Op(("Relu", "Sigmoid"), X)`), attribute constraints
(`attrs={"axis": -1}` or a predicate), `commutative=True` to try both input
orders, and `name=` to bind the node.

A rule is a class with a `pattern`, an optional `check(match)` that returns
a reason string when it refuses, and `rewrite(match, graph)` that builds the
replacement (new nodes go before the matched root) and returns the values
that replace the root's outputs. Rules are grouped in a `RuleSet` pass that
applies them until nothing changes. `explain(rule, node)` tells why a rule
does not fire on a node.

Intermediate values of a match must have no other users (else the rewrite
would compute them twice); the engine checks this, not each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence, Union

from ember.compiler.ir import Graph, Node, Value
from ember.passes.manager import Pass


# ---------------------------------------------------------------- patterns
@dataclass(frozen=True)
class Var:
    name: str
    const: bool = False  # must be an initializer
    optional: bool = False  # may be an omitted input (binds None)


def Const(name: str) -> Var:  # noqa: N802 - reads like a pattern constructor
    return Var(name, const=True)


@dataclass(frozen=True, init=False)
class Op:
    op_types: tuple[str, ...]
    inputs: tuple["Pattern", ...]
    attrs: tuple[tuple[str, Any], ...]
    name: str | None
    commutative: bool
    domain: str

    def __init__(self, op_type: str | Sequence[str], *inputs: "Pattern", attrs: dict[str, Any] | None = None,
                 name: str | None = None, commutative: bool = False, domain: str = ""):
        object.__setattr__(self, "op_types", (op_type,) if isinstance(op_type, str) else tuple(op_type))
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "attrs", tuple((attrs or {}).items()))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "commutative", commutative)
        object.__setattr__(self, "domain", domain)


Pattern = Union[Var, Op]


@dataclass
class Match:
    root: Node
    values: dict[str, Value | None] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    matched: list[Node] = field(default_factory=list)  # every node of the pattern
    opset: int = 17  # the model's default-domain opset (rules may depend on it)

    def __getitem__(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        return self.nodes[name]

    def const(self, name: str):
        """The numpy array of a Const variable."""
        v = self.values[name]
        return v.const.numpy() if v is not None and v.const is not None else None


class NoMatch(Exception):
    """Why a pattern did not match (the message says where)."""


def _check_attrs(pat: Op, node: Node) -> None:
    for key, want in pat.attrs:
        have = node.attrs.get(key)
        ok = want(have) if callable(want) else have == want
        if not ok:
            raise NoMatch(f"{node.op_type} {node.name!r}: attribute {key}={have!r} does not satisfy the pattern")


def _match(pat: Pattern, value: Value | None, m: Match, graph: Graph) -> None:
    if isinstance(pat, Var):
        if value is None:
            if not pat.optional:
                raise NoMatch(f"variable {pat.name!r}: input is omitted")
            m.values.setdefault(pat.name, None)
            return
        if pat.const and (value is None or value.const is None):
            raise NoMatch(f"variable {pat.name!r}: %{getattr(value, 'name', '?')} is not a constant")
        bound = m.values.get(pat.name, value)
        if bound is not value:
            raise NoMatch(f"variable {pat.name!r} bound to %{bound.name} and %{value.name}")
        m.values[pat.name] = value
        return
    node = value.producer if value is not None else None
    if node is None or node.graph is not graph:
        raise NoMatch(f"expected {'/'.join(pat.op_types)}, found %{getattr(value, 'name', '?')} "
                      "(not produced by a node of this graph)")
    _match_node(pat, node, m, graph)


def _match_node(pat: Op, node: Node, m: Match, graph: Graph) -> None:
    if pat.name and pat.name in m.nodes and m.nodes[pat.name] is not node:
        raise NoMatch(f"pattern node {pat.name!r} bound to two different nodes")
    if node.op_type not in pat.op_types or node.domain not in (pat.domain, "ai.onnx" if not pat.domain else pat.domain):
        raise NoMatch(f"expected {'/'.join(pat.op_types)}, found {node.op_type} {node.name!r}")
    _check_attrs(pat, node)
    inputs = list(node.inputs)
    while len(inputs) > len(pat.inputs) and inputs[-1] is None:
        inputs.pop()
    n_required = len([p for p in pat.inputs if not (isinstance(p, Var) and p.optional)])
    if not n_required <= len(inputs) <= len(pat.inputs):
        raise NoMatch(f"{node.op_type} {node.name!r} has {len(inputs)} inputs, the pattern {len(pat.inputs)}")
    inputs += [None] * (len(pat.inputs) - len(inputs))
    orders = [inputs]
    if pat.commutative and len(inputs) == 2:
        orders.append(inputs[::-1])
    first: NoMatch | None = None
    for order in orders:
        trial = Match(m.root, dict(m.values), dict(m.nodes), list(m.matched), m.opset)
        try:
            for p, v in zip(pat.inputs, order):
                _match(p, v, trial, graph)
        except NoMatch as e:
            first = first or e  # report why the inputs as written did not match
            continue
        m.values, m.nodes, m.matched = trial.values, trial.nodes, trial.matched
        if pat.name:
            m.nodes[pat.name] = node
        if not any(n is node for n in m.matched):  # shared sub-patterns (x - mean in LayerNorm) match once
            m.matched.append(node)
        return
    raise first  # type: ignore[misc]


def match(pattern: Op, node: Node, opset: int = 17) -> Match:
    """Match a pattern rooted at `node`; raises NoMatch with the reason."""
    if node.graph is None:
        raise NoMatch("node is not in a graph")
    m = Match(node, opset=opset)
    graph = node.graph
    _match_node(pattern, node, m, graph)
    inside = {id(n) for n in m.matched}
    for n in m.matched:
        if n is node:
            continue
        for v in n.outputs:
            outside = [u for u, _ in v.uses if id(u) not in inside]
            if outside or graph.is_output(v):
                who = "a graph output" if not outside else f"{outside[0].op_type} {outside[0].name!r}"
                raise NoMatch(f"intermediate %{v.name} of {n.op_type} {n.name!r} is also used by {who}; "
                              "rewriting would compute it twice")
    return m


# ---------------------------------------------------------------- rules
class Rule:
    """Subclass with a `pattern`; override `check` and `rewrite`."""

    name: ClassVar[str] = ""
    pattern: ClassVar[Op]

    def check(self, m: Match) -> str | None:
        """Return a reason to refuse this match, or None to accept it."""
        return None

    def rewrite(self, m: Match, graph: Graph) -> Sequence[Value | None] | Value:
        """Build the replacement; return values for the root's outputs
        (None where the root output is unused and has no replacement)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name or type(self).__name__


def explain(rule: Rule, node: Node, opset: int = 17) -> str:
    """Why `rule` does (not) fire on `node`, in one line."""
    try:
        m = match(rule.pattern, node, opset)
    except NoMatch as e:
        return f"{rule!r} does not match: {e}"
    reason = rule.check(m)
    if reason:
        return f"{rule!r} matches but refuses: {reason}"
    return f"{rule!r} fires"


def apply_rule(rule: Rule, node: Node, opset: int = 17) -> bool:
    graph = node.graph
    try:
        m = match(rule.pattern, node, opset)
    except NoMatch:
        return False
    if rule.check(m):
        return False
    new = rule.rewrite(m, graph)
    if isinstance(new, Value):
        new = [new]
    root = m.root
    for old, repl in zip(root.outputs, new):
        if repl is None:
            if old.uses or graph.is_output(old):
                raise AssertionError(f"rule {rule!r} left used output %{old.name} without replacement")
            continue
        if repl.dtype == 0 and repl.type_proto is None:
            repl.dtype, repl.shape = old.dtype, old.shape
        graph.substitute(old, repl)
    for n in reversed(m.matched):
        if n.graph is graph and not any(o.uses or graph.is_output(o) for o in n.outputs):
            graph.remove(n)
    return True


@dataclass(frozen=True)
class RuleSet(Pass):
    """A pass that applies its rules everywhere until nothing changes.
    Subclasses set `rules`; each is tried on every node (subgraphs too),
    from the graph's outputs backwards, in the order the rules are listed."""

    rules: ClassVar[Sequence[Rule]] = ()
    max_rounds: ClassVar[int] = 16

    def run(self, graph: Graph) -> bool:
        opset = graph.root().opset
        changed = False
        for _ in range(self.max_rounds):
            round_changed = False
            for g in list(graph.all_graphs()):
                # consumers first: a rule rooted at the last node of a chain gets the largest match
                for node in reversed(list(g.nodes)):
                    if node.graph is not g:
                        continue  # removed by an earlier rewrite
                    for rule in self.rules:
                        if node.op_type in rule.pattern.op_types and apply_rule(rule, node, opset):
                            round_changed = True
                            break
            changed |= round_changed
            if not round_changed:
                break
        return changed

    def explain(self, node: Node, opset: int = 17) -> list[str]:
        return [explain(r, node, opset) for r in self.rules]
