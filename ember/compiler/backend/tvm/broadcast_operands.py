"""Operands a kernel broadcasts are computed once, in a kernel of their own.

Relax's FuseOps fuses an elementwise producer into its consumer whatever their
sizes. When the consumer broadcasts the producer's result (a per-channel vector
or a scalar combined with a whole feature map), the fused kernel recomputes the
producer's chain for every element of its output. Models quantized dynamically
by onnxruntime carry such chains: each int8 convolution's bias is quantized at
run time by the input's scale (Mul, Div, Floor and a Cast that TVM lowers to
nine wrapping ops, on a vector of channels). Inlined into the convolution's
epilogue, and repeated by a SiLU's x * sigmoid(x), that made 96 KB expressions
per kernel (TIR simplification took minutes of the build) and ~40 scalar ops
per output element.

`isolate_broadcast_operands` runs between AnnotateTIROpPattern and FuseOps: a
convex group (`_chains`) of elementwise or injective kernels whose outputs are
static and small (at most SMALL elements), with at least MIN_OPS of them
computing (reshapes and transposes join but do not count), read by a kernel
whose output is at least REUSE times larger (or of a run-time size), becomes a
primitive Relax function of its own, and the block is re-emitted in dependency
order. FuseOps leaves a call of a function unfused, and FuseTIR turns the
function into one kernel: the chain runs once per inference.
"""

from __future__ import annotations

import math

from ember.compiler.backend.tvm.relax_util import static_shape

SMALL = 4096  # elements: per-channel vectors, scalars, short masks
REUSE = 16  # the consumer's output is this many times the operand's, or more
MIN_OPS = 3  # kernels that compute: one or two inlined cost less than a kernel call
_INJECTIVE = 2  # TVM's OpPatternKind: elementwise 0, broadcast 1, injective 2


def isolate_broadcast_operands():
    """The module pass; see the module's docstring."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="EmberIsolateBroadcastOperands")
    def _pass(mod, _ctx):
        bb, changed = relax.BlockBuilder(mod), False
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function) and not _primitive(func):
                blocks = [_isolate(bb, mod, block) if isinstance(block, relax.DataflowBlock) else block
                          for block in func.body.blocks]
                if any(not new.same_as(old) for new, old in zip(blocks, func.body.blocks)):
                    changed = True
                    body = bb.normalize(relax.SeqExpr(blocks, func.body.body))
                    bb.update_func(gv, relax.Function(func.params, body, func.ret_ty, func.is_pure,
                                                      func.attrs, func.span))
        return bb.get() if changed else mod

    return _pass


def _primitive(func) -> bool:
    return bool(func.attrs and func.attrs.get("Primitive"))


def _elements(var) -> int | None:
    """The element count of a tensor variable's static shape, else None."""
    shape = static_shape(var)
    return None if shape is None else math.prod(shape)


def _reads(value) -> list:
    """The Relax variables an expression reads, in order, once each."""
    from tvm import relax

    found: list = []
    relax.analysis.post_order_visit(value, lambda e: found.append(e)
                                    if isinstance(e, relax.Var) and e not in found else None)
    return found


def _pattern(mod, binding) -> int | None:
    """The op pattern of a call_tir binding's kernel (no symbolic arguments), else None."""
    from tvm import relax, tirx

    call = binding.value
    if not (isinstance(binding, relax.VarBinding) and isinstance(call, relax.Call)
            and getattr(call.op, "name", "") == "relax.call_tir" and len(call.args) == 2):
        return None
    func = mod[call.args[0]]
    pattern = func.attrs.get("op_pattern") if isinstance(func, tirx.PrimFunc) and func.attrs else None
    return None if pattern is None else int(pattern)


def _moves_data(func) -> bool:
    """Whether a kernel only copies elements (a reshape, a transpose): each of its blocks stores a load."""
    import tvm
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(func)
    bodies = [sch.get(b).body for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return all(isinstance(b, tirx.BufferStore) and isinstance(b.value, tvm.ir.expr.TensorLoad) for b in bodies)


def _small_kernel(mod, binding) -> bool:
    """An elementwise, broadcast or injective kernel of a small static output."""
    pattern, size = _pattern(mod, binding), _elements(binding.var)
    return pattern is not None and pattern <= _INJECTIVE and size is not None and size <= SMALL


def _chains(mod, bindings, reads, readers, position) -> list[list[int]]:
    """The groups of small kernels one call can replace (binding indices, in order).

    Small kernels connected as producer and consumer join one group if they are ready at the same
    point of the block: the last binding outside the group they depend on, through members or
    directly, is the same. A group whose results only one other group reads joins that one if it
    is ready before that one's first member. Every group is then convex: no path leaves it and
    comes back (such a path would make a member wait for a binding after another member)."""
    from tvm import relax

    small = [i for i, b in enumerate(bindings) if _small_kernel(mod, b)]
    where = {bindings[i].var: i for i in small}
    ready: dict[int, int] = {}
    root = {i: i for i in small}

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    def groups() -> list[list[int]]:
        found: dict[int, list[int]] = {}
        for i in small:
            found.setdefault(find(i), []).append(i)
        return list(found.values())

    for i in small:
        ready[i] = max([ready[where[v]] if v in where else position.get(v, -1) for v in reads[i]] + [-1])
        for v in reads[i]:
            if v in where and ready[where[v]] == ready[i]:
                root[find(i)] = find(where[v])
    for members in sorted(groups(), key=lambda g: -g[-1]):
        if not all(isinstance(bindings[i].var, relax.DataflowVar) for i in members):
            continue
        users = {j for i in members for j in readers.get(bindings[i].var, [])} - set(members)
        if not users or not all(j in root for j in users) or len({find(j) for j in users}) != 1:
            continue
        other = find(next(iter(users)))
        if max(ready[i] for i in members) < min(i for i in small if find(i) == other):
            root[find(members[0])] = other
    return groups()


def _isolate(bb, mod, block):
    """The dataflow block with each chain worth isolating replaced by a call of its own function."""
    from tvm import relax

    bindings = list(block.bindings)
    reads = [_reads(b.value) for b in bindings]
    readers: dict = {}  # variable -> indices of the bindings that read it
    for j, vs in enumerate(reads):
        for v in vs:
            readers.setdefault(v, []).append(j)
    position = {b.var: i for i, b in enumerate(bindings)}
    units = [[i] for i in range(len(bindings))]  # what is emitted together: a binding, or a chain
    chains: dict[int, tuple] = {}  # a chain's first index -> (chain, exported indices, inputs)
    for chain in _chains(mod, bindings, reads, readers, position):
        if sum(not _moves_data(mod[bindings[i].value.args[0]]) for i in chain) < MIN_OPS:
            continue
        members = set(chain)
        outside = {i: [j for j in readers.get(bindings[i].var, []) if j not in members] for i in chain}
        exported = [i for i in chain if outside[i] or not isinstance(bindings[i].var, relax.DataflowVar)]
        if not any(_broadcasts(bindings[i].var, bindings[j].var) for i in exported for j in outside[i]):
            continue
        # what the chain reads from outside, constants too: a primitive function takes them as parameters
        inputs = list(dict.fromkeys(a for i in chain for a in bindings[i].value.args[1].fields
                                    if not (a in position and position[a] in members)))
        chains[chain[0]] = (chain, exported, inputs)
        for i in chain:
            units[i] = None
        units[chain[0]] = chain
    order = _topological([u for u in units if u is not None], reads, position) if chains else None
    if order is None:
        return block
    out = []
    for unit in order:
        if unit[0] not in chains:
            out.append(bindings[unit[0]])
            continue
        chain, exported, inputs = chains[unit[0]]
        gvar = bb.add_func(_function(bindings, chain, exported, inputs), _name(mod, bindings, chain))
        out.extend(_call(bb, gvar, inputs, [bindings[i].var for i in exported]))
    return relax.DataflowBlock(out, block.span)


def _topological(units: list[list[int]], reads, position) -> list[list[int]] | None:
    """The units in an order where each comes after what it reads, nearest the original order
    (None if there is none: a cycle)."""
    import heapq

    unit_of = {i: k for k, unit in enumerate(units) for i in unit}
    needs = [set() for _ in units]
    for k, unit in enumerate(units):
        for i in unit:
            needs[k] |= {unit_of[position[v]] for v in reads[i] if v in position} - {k}
    waiting = [len(n) for n in needs]
    feeds: list[list[int]] = [[] for _ in units]
    for k, n in enumerate(needs):
        for m in n:
            feeds[m].append(k)
    heap = [(units[k][0], k) for k in range(len(units)) if not waiting[k]]
    heapq.heapify(heap)
    order = []
    while heap:
        _, k = heapq.heappop(heap)
        order.append(units[k])
        for m in feeds[k]:
            waiting[m] -= 1
            if not waiting[m]:
                heapq.heappush(heap, (units[m][0], m))
    return order if len(order) == len(units) else None


def _broadcasts(operand, result) -> bool:
    """Whether a kernel producing `result` reads each element of `operand` REUSE times or more."""
    small, big = _elements(operand), _elements(result)
    return small is not None and (big is None or big >= REUSE * small)


def _function(bindings, chain, exported, inputs):
    """The chain as a primitive Relax function of `inputs` returning the exported values."""
    from tvm import relax

    bb = relax.BlockBuilder()
    params = [relax.Var(getattr(v, "name", "const"), v.ty) for v in inputs]
    env = dict(zip(inputs, params))
    with bb.function("chain", params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            for i in chain:
                b = bindings[i]
                call = b.value
                args = [env.get(a, a) for a in call.args[1].fields]
                new = relax.Call(call.op, [call.args[0], relax.Tuple(args)], call.attrs, call.ty_args, call.span)
                env[b.var] = (bb.emit_output if i in exported else bb.emit)(new, name_hint=b.var.name)
        results = [env[bindings[i].var] for i in exported]
        bb.emit_func_output(results[0] if len(results) == 1 else relax.Tuple(results))
    return bb.get()["chain"]


def _name(mod, bindings, chain) -> str:
    names = [mod[bindings[i].value.args[0]].attrs.get("global_symbol") or bindings[i].value.args[0].name_hint
             for i in chain]
    return "fused_" + "_".join(str(n) for n in names)


def _call(bb, gvar, inputs, exported) -> list:
    """The bindings that call the chain's function and give each exported variable its value."""
    from tvm import relax

    call = bb.normalize(relax.Call(gvar, inputs))
    if len(exported) == 1:
        return [relax.VarBinding(exported[0], call)]
    whole = relax.DataflowVar("chain", call.ty)
    return [relax.VarBinding(whole, call)] + [relax.VarBinding(v, bb.normalize(relax.TupleGetItem(whole, k)))
                                              for k, v in enumerate(exported)]
