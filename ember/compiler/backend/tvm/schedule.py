"""Default CPU schedules, applied to every PrimFunc after operator fusion.

- functions holding an ember GEMM or depthwise block (`kernels.py`) get its
  register-blocked schedule, with the fused epilogue (bias, activation,
  residual add) inlined into the tile's writeback;
- every other function gets a generic schedule: elementwise chains inlined,
  outer loops of each remaining block run in parallel and its innermost
  spatial loop vectorized when that is legal.

Functions already scheduled (by a tuning database) are left alone. A
schedule step that TVM refuses leaves that function as it was: correctness
never depends on a schedule.
"""

from __future__ import annotations

from ember.compiler.backend.tvm import kernels, winograd
from ember.compiler.backend.tvm.intrinsics import TILE_SCOPE


def _sch(func):
    from tvm import s_tir

    return s_tir.Schedule(func)


def _extent(sch, loop) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _whole_vectors(sch, loop, lanes: int) -> bool:
    """Whether a loop's extent is a multiple of `lanes` longer than one vector (static), or a
    run-time count of whole vectors (a softmax row's, `kernels.ROW_VECTOR`)."""
    from tvm import tirx
    from tvm.sym import Analyzer

    ext = sch.get(loop).extent
    if isinstance(ext, tirx.IntImm):
        return int(ext) % lanes == 0 and int(ext) > lanes
    return Analyzer().can_prove_equal(tirx.floormod(ext, lanes), 0)


def _inline_epilogue(sch, block) -> None:
    """Fold the elementwise consumers of `block` into it, one after another;
    the other operands they compute first (a residual's dequantization) are
    inlined into them, or the consumer would have two producing blocks. An epilogue
    that forks and joins again (HardSwish: x * clip(x + 3, 0, 6) / 6 reads x twice) is
    first inlined into its last block, which then reads the kernel's output twice."""
    while True:
        _join_forks(sch, block)
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return
        _inline_side_inputs(sch, consumers[0], sch.get(block).name_hint)
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:
            return


def _join_forks(sch, block) -> None:
    """compute_inline the blocks between `block`'s consumers and the one block they all
    lead to, where `block` has more than one consumer."""
    if len(sch.get_consumers(block)) < 2:
        return
    seen, frontier, order = set(), list(sch.get_consumers(block)), []
    while frontier:
        b = frontier.pop(0)
        name = sch.get(b).name_hint
        if name in seen:
            continue
        seen.add(name)
        order.append(b)
        frontier.extend(sch.get_consumers(b))
    for b in order:
        if sch.get_consumers(b):
            try:
                sch.compute_inline(b)
            except Exception:
                continue


def _inline_side_inputs(sch, consumer, main: str) -> None:
    """Inline every block producing an input of `consumer` other than `main`."""
    pending = True
    while pending:
        pending = False
        for p in sch.get_producers(consumer):
            if sch.get(p).name_hint == main:
                continue
            try:
                sch.compute_inline(p)
                pending = True
                break
            except Exception:
                continue


def _tail(sch, block, first: int, width: int = 16) -> None:
    """Vectorize the innermost loop of a block nested under `first` loops, in
    chunks of at most `width` lanes (a whole long loop as one vector makes
    LLVM generate enormous vector types), when that is legal."""
    loops = sch.get_loops(block)
    if len(loops) <= first:
        return
    inner = loops[-1]
    ext = _extent(sch, inner)
    if ext is None or ext < 2:
        return
    try:
        if ext > width:
            lanes = next((w for w in (width, width // 2, width // 4) if w > 1 and ext % w == 0), None)
            if lanes is None:
                return
            inner = sch.split(inner, [None, lanes])[1]
        sch.vectorize(inner)
    except Exception:
        pass


WEIGHTS_IN_CACHE = 256 * 1024  # bytes of packed weights a core's L2 keeps beside the streamed rows


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# The decisions the default schedules take by rule and a tuning search may vary (`space`: a list
# the schedule appends the names of the decisions it samples to): sampled instructions in the
# schedule's trace whose default decision is the rule's; `design_space` records their names in the
# trace (DECISIONS_KEY), so a stored record says what it chose. NR (the packed weight panel's width)
# is not among them: the packing is fixed before scheduling.
DECISIONS_KEY = "ember_decisions"


def _choice(sch, default: int, candidates: list[int], name: str, space: list[str]):
    """A sampled value among `candidates` named `name` (appended to `space`), `default` its
    decision. A categorical, not a sampled tile: a tile of 1 would drop loops the recorded
    schedule steps expect (reverse_compute_at makes none for a unit extent), so a trace could
    not replay it."""
    values = sorted(set(candidates) | {default})
    space.append(name)
    return sch.sample_categorical(values, [1.0 / len(values)] * len(values), decision=values.index(default))


def _rows_split(sch, m, mr: int, space: list[str] | None, budget: int = 16):
    """Split the row loop into tiles of `mr` rows: a fixed split, or (`space`, static
    rows) a sampled one among the divisors of the rows up to `budget` (default `mr`)."""
    ext = _extent(sch, m)
    if space is not None and ext and ext % mr == 0 and mr >= 2:
        options = [d for d in range(2, min(budget, ext) + 1) if ext % d == 0]
        return sch.split(m, [None, _choice(sch, mr, options, "rows per register tile", space)])
    return sch.split(m, [None, mr])


def _reduction_unroll(sch, ks: list, space: list[str] | None) -> tuple[list, list]:
    """(`space`, static innermost reduction) That loop split into an outer part and an
    unrolled inner part of a sampled length (default 1: nothing unrolled)."""
    ext = _extent(sch, ks[-1]) if ks else None
    if not (space is not None and ext and ext > 1):
        return ks, []
    options = [u for u in (1, 2, 4, 8) if ext % u == 0]
    ko, ki = sch.split(ks[-1], [None, _choice(sch, 1, options, "reduction steps unrolled", space)])
    return [*ks[:-1], ko], [ki]


def schedule_gemm(sch, block, space: list[str] | None = None) -> None:
    ann = sch.get(block).annotations
    mr, nr = int(ann["ember_mr"]), int(ann["ember_nr"])
    loops = sch.get_loops(block)
    reductions = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type != 0)
    *rows, m, n = loops[:len(loops) - reductions]
    ks = loops[len(loops) - reductions:]
    columns = _extent(sch, n) or 0
    weights = 4 * columns * _product(_extent(sch, k) or 0 for k in ks)
    mo, mi = _rows_split(sch, m, mr, space, budget=max(2, 32 // max(1, nr // 16)))
    no, ni = sch.split(n, [None, nr])
    ks, unrolled = _reduction_unroll(sch, ks, space)
    if not columns:
        # a run-time column count (attention's scores, kernels.batch_matmul): the rows in
        # parallel, the column tiles inside, the last one cut by TVM's LoopPartition
        sch.reorder(*rows, mo, no, *ks, *unrolled, mi, ni)
        sch.annotate(no, "pragma_loop_partition_hint", 1)
        wb = _accumulators(sch, block)
        _register_tile(sch, block, wb, at=no, outer=[_parallel_rows(sch, [*rows, mo])], rows=mi, lanes=ni,
                       reduction=ks[0])
        return
    if 0 < weights <= WEIGHTS_IN_CACHE and columns >= 256:
        # many panels, all in cache: sweep them for each row tile (it stays in L1) rather than
        # reading every input row once per panel
        outer = [*rows, mo, no]
    else:
        # one weight panel (K x NR) stays in cache while the rows stream past it
        outer = [no, *rows, mo]
    sch.reorder(*outer, *ks, *unrolled, mi, ni)
    wb = _accumulators(sch, block)
    _register_tile(sch, block, wb, at=outer[-1], outer=outer, rows=mi, lanes=ni, reduction=ks[0])
    for loop in unrolled:
        sch.unroll(loop)


def schedule_qgemm(sch, block, space: list[str] | None = None) -> None:
    """The int8 and bf16 GEMMs: like `schedule_gemm`, with the reduction in groups of
    the instruction's depth and the innermost step tensorized with the
    target's dot-product instruction (or vectorized int32 loops without
    one): (lanes x 4) for a one-row instruction; for a 2 x 2 one (usmmla),
    (2 rows x 2 columns x 8), its accumulators stored as 2 x 2 blocks."""
    from ember.compiler.backend.tvm.intrinsics import ALL, register

    ann = sch.get(block).annotations
    mr, nr, dot, lanes = (int(ann["ember_mr"]), int(ann["ember_nr"]), str(ann["ember_dot"]),
                          int(ann["ember_lanes"]))
    intrin = next((i for i in ALL if i.name == dot), None)
    pairs = intrin is not None and intrin.rows == 2
    loops = sch.get_loops(block)
    reductions = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type != 0)
    *rows, m, n = loops[:len(loops) - reductions]
    *ks, ki = loops[len(loops) - reductions:]
    if pairs:
        mo, mi, inner = sch.split(m, [None, mr // 2, 2])
        no, nv, ni = sch.split(n, [None, nr // 2, 2])
        sch.reorder(no, *rows, mo, *ks, mi, nv, inner, ni, ki)
    else:
        mo, mi = _rows_split(sch, m, mr, space)
        no, nv, ni = sch.split(n, [None, nr // lanes, lanes])
        inner = ni
        sch.reorder(no, *rows, mo, *ks, mi, nv, ni, ki)
    wb = _accumulators(sch, block, (kernels.CROP, kernels.QFIX))
    if pairs:
        sch.transform_layout(block, ("write", 0), _pair_blocks(len(rows) + 2))
    _register_tile(sch, block, wb, at=mo, outer=[no, *rows, mo], rows=mi, lanes=None, reduction=ks[0])
    sch.unroll(nv)
    if intrin is not None:
        if intrin.llvm_ir:  # the LLVM function the instruction is called through, linked into this kernel
            sch.annotate(sch.get_loops(block)[0], "pragma_import_llvm", intrin.llvm_ir)
        sch.tensorize(inner, register(intrin, int(ann.get("ember_step", 1))))
    else:
        sch.vectorize(ni)


def _accumulators(sch, block, readers: tuple[str, ...] = (kernels.CROP,)):
    """The block that writes a GEMM's register tile out: a cache of its output (in `TILE_SCOPE`), or
    where a crop of padded rows or columns (or an int8 correction, `readers`) follows, that block,
    reading the accumulators directly."""
    wb = sch.cache_write(block, 0, TILE_SCOPE)
    fix = [c for c in sch.get_consumers(wb) if sch.get(c).name_hint.startswith(readers)]
    if not fix:
        return wb
    sch.compute_inline(wb)
    return fix[0]


def _pair_blocks(ndim: int):
    """Index map of an (..., M, N) accumulator to 2 x 2 blocks: (..., M/2, N/2, 2, 2)."""
    from tvm.tirx import IndexMap

    return IndexMap.from_func(lambda *i: (*i[:-2], i[-2] // 2, i[-1] // 2, i[-2] % 2, i[-1] % 2), ndim=ndim)


def _register_tile(sch, block, wb, at, outer, rows, lanes, reduction) -> None:
    """The common tail of the kernel schedules: the accumulator tile's writeback
    (with the fused epilogue folded in) at loop `at`, the `outer` loops fused and
    parallel, `rows` unrolled, `lanes` vectorized, the reduction's init split off."""
    _inline_epilogue(sch, wb)
    sch.reverse_compute_at(wb, at)
    sch.parallel(sch.fuse(*outer))
    sch.unroll(rows)
    if lanes is not None:
        sch.vectorize(lanes)
    init = sch.decompose_reduction(block, reduction)
    _tail(sch, init, 1)
    _tail(sch, wb, 1)
    _schedule_pad(sch, block)


def _schedule_pad(sch, block) -> None:
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(kernels.PAD):
            lp = sch.get_loops(p)
            sch.parallel(sch.fuse(*lp[:2]))
            _tail(sch, p, 1)


def schedule_depthwise(sch, block, space: list[str] | None = None) -> None:
    """A register tile of (pixels along x) x (channels, vectorized), accumulated over the
    window, parallel over output rows. `space`: the tile's pixels (divisors of the width up
    to 16) and channels (1, 2 or 4 vectors) are sampled decisions."""
    # read the input through the padding condition (lane-invariant: it
    # stays a branch, not a masked load) instead of copying it padded
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(kernels.PAD):
            sch.compute_inline(p)
    b, y, x, c, ky, kx = sch.get_loops(block)
    cext = _extent(sch, c) or 1
    lanes = 16 if cext % 16 == 0 else 8 if cext % 8 == 0 else 4 if cext % 4 == 0 else 1
    xext = _extent(sch, x) or 1
    xr = next(r for r in (8, 7, 4, 2, 1) if xext % r == 0)
    vector = lanes > 1
    if space is not None and xr >= 2 and vector and _extent(sch, x) and _extent(sch, c):
        # a tile of 1 pixel is left out: reverse_compute_at makes no loop for it (see _choice)
        xr = _choice(sch, xr, [r for r in range(2, min(16, xext) + 1) if xext % r == 0], "pixels per register tile",
                     space)
        lanes = _choice(sch, lanes, [lanes * v for v in (1, 2, 4) if cext % (lanes * v) == 0],
                        "channels per register tile", space)
    xo, xi = sch.split(x, [None, xr])
    co, ci = sch.split(c, [None, lanes])
    sch.reorder(b, y, xo, co, ky, kx, xi, ci)
    wb = sch.cache_write(block, 0, TILE_SCOPE)
    _register_tile(sch, block, wb, at=co, outer=[b, y], rows=xi, lanes=ci if vector else None, reduction=ky)


def _lane_reduction(sch, name: str, lanes: int = kernels.ROW_VECTOR):
    """Split a row reduction's loop by `lanes` and rfactor it: the partial sums
    become a vectorizable block; returns it (or None when the row is too short)."""
    block = sch.get_sblock(name)
    k = sch.get_loops(block)[-1]
    width = next((w for w in (lanes, lanes // 2, lanes // 4) if w > 1 and _whole_vectors(sch, k, w)), None)
    if width is None:
        return None
    _, ki = sch.split(k, [None, width])
    return sch.rfactor(ki, 0)


def _schedule_rows(sch, block, prefix: str) -> None:
    """Row-wise kernels (softmax, layer norm over the last axis): one parallel
    loop over rows, each row's stages (the blocks named `prefix`...) computed
    under it, reductions summed in vector lanes, elementwise passes vectorized."""
    from tvm import tirx

    stages = [n for n in _blocks(sch) if n.startswith(prefix)][::-1]  # last consumer first
    reductions = [n for n in stages
                  if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(sch.get_sblock(n)).iter_vars)]
    partials = {name: _lane_reduction(sch, name) for name in reductions}
    _inline_epilogue(sch, block)
    *outer, _ = sch.get_loops(block)
    row = _parallel_rows(sch, outer)
    for name in stages:
        sch.compute_at(sch.get_sblock(name), row)
        if partials.get(name) is not None:
            sch.compute_at(partials[name], row)
    sch.parallel(row)
    for partial in partials.values():
        if partial is not None:  # under the row: (lanes, steps); steps outside, lanes vectorized
            lanes, steps = sch.get_loops(partial)[-2:]
            sch.reorder(steps, lanes)
            sch.vectorize(lanes)
            if _extent(sch, steps) is None:  # a run-time count of steps, maybe none: start the lanes before
                sch.decompose_reduction(partial, steps)
    for name in stages:
        if name not in reductions:
            _row_tail(sch, sch.get_sblock(name), row)
        elif name in reductions and partials.get(name) is None:
            loops = sch.get_loops(sch.get_sblock(name))
            if len(loops) > 1 and _extent(sch, loops[-1]) is None:  # a run-time count, maybe 0: init first
                sch.decompose_reduction(sch.get_sblock(name), loops[-1])
    _row_tail(sch, block, row)


def _row_tail(sch, block, row, lanes: int = kernels.ROW_VECTOR) -> None:
    """Vectorize an elementwise pass over a row (the innermost loop of `block`, under the loop
    `row`; nothing for a per-row stage, whose innermost loop is `row` itself). A row of whole
    vectors: as `_tail`. Another is cut at its last whole vector: the whole vectors without a
    predicate, then the rest (a split alone leaves a predicate on every lane,
    and TVM's vectorizer turns such a loop into scalar code: 5x the time over 799 columns). A
    static length is cut here (`loop_partition`); a run-time one by TVM's LoopPartition pass, told
    by `pragma_loop_partition_hint` (the primitive refuses run-time extents; the pass misses a
    static loop, whose variable TVM's NarrowDataType renames away from the hint first)."""
    from tvm import tirx

    inner = sch.get_loops(block)[-1]
    if sch.get(inner).same_as(sch.get(row)):
        return
    ext = sch.get(inner).extent
    static = isinstance(ext, tirx.IntImm)
    if static and (int(ext) % lanes == 0 or int(ext) <= lanes):
        _tail(sch, block, 1)
        return
    if static:
        main, _ = sch.loop_partition(inner, [int(ext) // lanes * lanes, None])
        sch.vectorize(sch.split(main, [None, lanes])[1])
        return
    vectors, inner = sch.split(inner, [None, lanes])
    sch.annotate(vectors, "pragma_loop_partition_hint", 1)
    sch.vectorize(inner)


def _parallel_rows(sch, loops):
    """The loop to run rows in parallel over: `loops` fused. A fused loop binds its parts by
    division and remainder, which must be by constants (quasi-affine) for `parallel`: with
    run-time extents, at most one of them is fused (moved first), the others stay serial
    outside (a batch, typically 1, before attention's run-time sequence of rows)."""
    symbolic = [lp for lp in loops if _extent(sch, lp) is None]
    if len(loops) > 1 and symbolic:
        serial, fused = symbolic[:-1], [symbolic[-1], *(lp for lp in loops if _extent(sch, lp) is not None)]
        sch.reorder(*serial, *fused)
        loops = fused
    return sch.fuse(*loops) if len(loops) > 1 else loops[0]


def schedule_softmax(sch, block) -> None:
    """Softmax over the last axis: per row the maximum, the exponentials
    (vectorized, kept), their sum and the quotient."""
    _schedule_rows(sch, block, kernels.SOFTMAX_STAGES)


def schedule_layer_norm(sch, block) -> None:
    """Layer norm over the last axis: per row the sum, mean, squared deviations,
    1/sqrt, then the normalization (vectorized)."""
    _schedule_rows(sch, block, kernels.LAYERNORM_STAGES)


# Characters of TVMScript a consumer's expression may reach by inlining a producer it reads
# more than once.
INLINE_BUDGET = 4000


def _inline_elementwise(sch, blocks) -> None:
    """compute_inline each block that allows it, except where a consumer reads it more than
    once and would then grow past INLINE_BUDGET. A NaN-keeping Relu reads its operand twice
    (a select), so each inlined level doubles the expression: n of them in one fused chain
    held 2**n copies, and TVM's lowering took minutes from 8 on. Such a producer keeps a
    buffer of its own; an operand read once only adds its size. Sizes are characters of
    each block's own TIR, printed before any inlining, plus what gets inlined into it (blocks
    come in order, so a block's readers still read it as they were written)."""
    import re

    named = [(sch.get(b).name_hint, b) for b in blocks]
    text = {n: str(sch.get(b).body) for n, b in named}
    size = {n: len(t) for n, t in text.items()}
    for me, b in named:
        writes = sch.get(b).writes
        if len(writes) != 1:
            continue
        buffer = re.compile(rf"(?<![\w.]){re.escape(str(writes[0].source))}\[")
        reads = {c: len(buffer.findall(text.get(c, ""))) or 1
                 for c in (sch.get(rv).name_hint for rv in sch.get_consumers(b))}
        if any(n > 1 and size.get(c, 0) + n * size[me] > INLINE_BUDGET for c, n in reads.items()):
            continue
        try:
            sch.compute_inline(b)
        except Exception:
            continue
        for c, n in reads.items():
            size[c] = size.get(c, 0) + n * size[me]


def _reduce_across_rows(sch, block, lanes: int = 16) -> bool:
    """A reduction whose kept innermost axis is the input's contiguous one (NHWC's
    global pooling, a mean over H and W): the reduction loops go outside that axis,
    which runs as vectors over contiguous memory, in chunks the threads share. The
    loop order the tensor expression gives walks memory with a stride of a row."""
    from tvm import tirx

    node = sch.get(block)
    ivs = node.iter_vars
    kinds = [iv.iter_type for iv in ivs]
    if tirx.IterVar.CommReduce not in kinds or len(node.reads) != 1:
        return False
    nspatial = kinds.index(tirx.IterVar.CommReduce)
    loops = sch.get_loops(block)
    if (nspatial == 0 or len(loops) != len(ivs) or any(k != tirx.IterVar.CommReduce for k in kinds[nspatial:])):
        return False
    last = node.reads[0].region[-1]
    inner = _extent(sch, loops[nspatial - 1])
    if not (last.min.same_as(ivs[nspatial - 1].var) and _extent_is_one(last.extent)
            and inner is not None and inner % lanes == 0):
        return False
    outer, vec = sch.split(loops[nspatial - 1], [None, lanes])
    sch.reorder(*loops[:nspatial - 1], outer, *loops[nspatial:], vec)
    par = sch.fuse(*loops[:nspatial - 1], outer) if nspatial > 1 else outer
    sch.parallel(par)
    sch.vectorize(vec)
    return True


def _transpose_tiles(sch, block, tile: int = 8) -> bool:
    """A transpose (one read, whose contiguous axis is not the output's): tiles of
    tile x tile elements, so that each tile reads `tile` whole cache lines of the
    input and writes `tile` of the output (the plain order reads one element per
    cache line: NCHW -> NHWC of a 64-channel map ran at a tenth of copy speed)."""
    from tvm import tirx

    node = sch.get(block)
    ivs = node.iter_vars
    loops = sch.get_loops(block)
    if (len(node.reads) != 1 or len(node.writes) != 1 or len(loops) != len(ivs) or len(ivs) < 2
            or any(iv.iter_type != tirx.IterVar.DataPar for iv in ivs)):
        return False
    read, write = node.reads[0].region[-1], node.writes[0].region[-1]
    if not (_extent_is_one(read.extent) and _extent_is_one(write.extent) and write.min.same_as(ivs[-1].var)):
        return False
    src = next((i for i, iv in enumerate(ivs[:-1]) if read.min.same_as(iv.var)), None)
    extents = [_extent(sch, lp) for lp in loops]
    if src is None or any(extents[i] is None or extents[i] % tile for i in (src, len(ivs) - 1)):
        return False
    r_o, r_i = sch.split(loops[src], [None, tile])
    w_o, w_i = sch.split(loops[-1], [None, tile])
    outer = [lp for i, lp in enumerate(loops[:-1]) if i != src]
    sch.reorder(*outer, r_o, w_o, r_i, w_i)
    sch.parallel(sch.fuse(*outer, r_o, w_o))
    sch.vectorize(w_i)
    return True


def _extent_is_one(extent) -> bool:
    return getattr(extent, "value", None) == 1


def schedule_generic(sch) -> None:
    """Inline elementwise blocks, then run each remaining block's outer
    spatial loops in parallel and vectorize its innermost loop."""
    root = sch.get_sblock("root")
    # an opaque block (hand-written TIR: sorts, NMS) may read a buffer in ways
    # inlining does not see; then nothing is inlined (TVM's NMS broke otherwise)
    opaque = any(not sch.get(b).iter_vars for b in sch.get_child_blocks(root))
    if not opaque:
        _inline_elementwise(sch, list(sch.get_child_blocks(root)))
    for b in sch.get_child_blocks(root):
        if _reduce_across_rows(sch, b) or _transpose_tiles(sch, b):
            continue
        _parallel_block(sch, b)


def _parallel_block(sch, b) -> None:
    """A block's outer spatial loops fused and parallel (enough of them to give the threads
    work), and its innermost loop vectorized where all its loops are spatial."""
    from tvm import tirx

    loops = sch.get_loops(b)
    spatial = []
    for lp, iv in zip(loops, sch.get(b).iter_vars):
        if iv.iter_type != tirx.IterVar.DataPar:
            break
        spatial.append(lp)
    if not spatial:
        return
    try:
        outer, total = [], 1
        for lp in spatial[:-1] if len(spatial) > 1 else spatial:
            outer.append(lp)
            total *= _extent(sch, lp) or 1
            if total >= 64:
                break
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    except Exception:
        return
    if len(spatial) == len(loops) and len(spatial) > 1:
        _tail(sch, b, 1)


def _untouched(sch, block) -> bool:
    """Whether a block's loops are all as legalization wrote them: serial, none annotated."""
    from tvm import tirx

    loops = sch.get_loops(block)
    return bool(loops) and all(sch.get(lp).kind == tirx.ForKind.SERIAL and not sch.get(lp).annotations
                               for lp in loops)


def _schedule_rest(sch) -> None:
    """The blocks a kernel's schedule left as they were, after it: an epilogue that broadcasts the
    kernel's output over a larger map (an SE block's gate, a 1x1 convolution of the pooled map,
    times the feature map) cannot fold into the tile's writeback, and ran as serial scalar loops,
    one pass over the map per op. They are inlined into one another and run like the generic
    schedule's blocks."""
    root = sch.get_sblock("root")
    rest = [b for b in sch.get_child_blocks(root) if _untouched(sch, b)]
    names = {sch.get(b).name_hint for b in rest}
    _inline_elementwise(sch, [b for b in rest if sch.get_consumers(b)
                              and all(sch.get(c).name_hint in names for c in sch.get_consumers(b))])
    for b in sch.get_child_blocks(root):
        if _untouched(sch, b):
            _parallel_block(sch, b)


def schedule_winograd(sch, block, space: list[str] | None = None) -> None:
    """The three stages: input transform parallel over tiles (positions
    unrolled, channels vectorized, padding read in place), the GEMM as
    `schedule_gemm`, the output transform with its epilogue parallel
    over output rows (r, s unrolled, channels vectorized)."""
    root = sch.get_sblock("root")
    blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(root)}
    out = blocks[winograd.OUTPUT]
    schedule_gemm(sch, block, space)
    tv = blocks[winograd.INPUT]
    for p in sch.get_producers(tv):
        if sch.get(p).name_hint.startswith(kernels.PAD):
            sch.compute_inline(p)
    a, b, p, c = sch.get_loops(tv)
    sch.reorder(p, a, b, c)
    sch.parallel(p)
    sch.unroll(a)
    sch.unroll(b)
    _tail(sch, tv, 3)

    _inline_epilogue(sch, out)
    bi, yy, xx, k = sch.get_loops(out)
    ty, r = sch.split(yy, [None, winograd.M])
    tx, s = sch.split(xx, [None, winograd.M])
    sch.reorder(bi, ty, tx, r, s, k)
    sch.parallel(sch.fuse(bi, ty))
    sch.unroll(r)
    sch.unroll(s)
    if (_extent(sch, k) or 0) > 1:
        _tail(sch, out, 5)


def _blocks(sch) -> list[str]:
    root = sch.get_sblock("root")
    return [sch.get(b).name_hint for b in sch.get_child_blocks(root)]


_KERNELS = ((winograd.GEMM, schedule_winograd), (kernels.QGEMM, schedule_qgemm), (kernels.GEMM, schedule_gemm),
            (kernels.DEPTHWISE, schedule_depthwise), (kernels.SOFTMAX, schedule_softmax),
            (kernels.LAYERNORM, schedule_layer_norm))
_SPACES = (winograd.GEMM, kernels.QGEMM, kernels.GEMM, kernels.DEPTHWISE)  # the kernels whose schedules have decisions


def _kernel(names: list[str]):
    """The Ember kernel a function holds, as (block name, its schedule), or None."""
    for kind, fn in _KERNELS:
        main = [n for n in names if n.startswith(kind)]
        if len(main) == 1:
            return main[0], fn
    return None


def default_schedule(func):
    """Ember's default schedule of one PrimFunc as a Schedule (its trace can
    be stored as a tuning record), or None if nothing applies."""
    try:
        sch = _sch(func)
        names = _blocks(sch)
    except Exception:
        return None
    kernel = _kernel(names)
    if kernel is not None:
        try:
            kernel[1](sch, sch.get_sblock(kernel[0]))
            _schedule_rest(sch)
            return sch
        except Exception:
            sch = _sch(func)  # a failed step may leave the schedule half-applied
    try:
        schedule_generic(sch)
        return sch
    except Exception:
        return None


def has_design_space(func) -> bool:
    """Whether a PrimFunc holds a kernel whose schedule `design_space` can vary."""
    try:
        kernel = _kernel(_blocks(_sch(func)))
    except Exception:
        return False
    return kernel is not None and kernel[0].startswith(_SPACES)


def design_space(sch):
    """MetaSchedule's space of Ember's schedule for one kernel (a ScheduleFn): the default
    schedule with its decisions as sampled instructions whose default decisions are the
    rule's, so a search explores variants of the kernel and starts from the default. The
    decisions' names are an annotation of the function's root block (DECISIONS_KEY; the kernel's
    own block may be gone, replaced by a tensor intrinsic's)."""
    name, fn = _kernel(_blocks(sch))
    taken: list[str] = []
    fn(sch, sch.get_sblock(name), space=taken)
    _schedule_rest(sch)
    if taken:
        sch.annotate(sch.get_sblock("root"), DECISIONS_KEY, ";".join(taken))
    return sch


def decisions(trace) -> list[tuple[str, int]]:
    """(name, value) of each decision sampled in a trace, in order; empty for a trace
    without them (a default schedule's)."""
    values = [int(inst.attrs[0][int(trace.decisions[inst])]) for inst in trace.insts
              if inst.kind.name == "SampleCategorical"]
    names = next((str(inst.inputs[1]).strip('"').split(";") for inst in trace.insts
                  if inst.kind.name == "Annotate" and inst.attrs and str(inst.attrs[0]) == DECISIONS_KEY), [])
    return list(zip(names, values)) if len(names) == len(values) else [("", v) for v in values]


def choice_mutator():
    """MetaSchedule's mutator for Ember's decisions (TVM's mutate tiles, unroll and
    parallel annotations, not plain categorical choices): one decision moved to
    another of its candidates."""
    import random

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.mutator import PyMutator

    @derived_object
    class MutateChoice(PyMutator):
        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, trace, rand_state):
            insts = [i for i in trace.insts if i.kind.name == "SampleCategorical" and len(i.attrs[0]) > 1]
            if not insts:
                return None
            rng = random.Random(int(rand_state))
            inst = rng.choice(insts)
            current = int(trace.decisions[inst])
            new = rng.choice([k for k in range(len(inst.attrs[0])) if k != current])
            return trace.with_decision(inst, new, remove_postproc=True)

        def clone(self):
            return MutateChoice()

    return MutateChoice()


def schedule_func(func):
    """Schedule one PrimFunc; returns the scheduled function (or the original)."""
    sch = default_schedule(func)
    return func if sch is None else sch.mod["main"].with_attr("tirx.is_scheduled", True)


def default_schedule_pass(counts: dict[str, int] | None = None, schedule=None):
    """A module pass scheduling every not-yet-scheduled PrimFunc with
    `schedule` (PrimFunc -> PrimFunc; default: Ember's CPU schedule); `counts`
    (if given) receives how many functions were already scheduled ("tuned")
    and how many got the default schedule ("default")."""
    schedule = schedule or schedule_func
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="EmberDefaultSchedule")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if func.attrs and func.attrs.get("ember.hand_scheduled", False):
                continue  # written with its loops (ember_ops' checks): neither tuned nor default
            if func.attrs and func.attrs.get("tirx.is_scheduled", False):
                if counts is not None:
                    counts["tuned"] = counts.get("tuned", 0) + 1
                continue
            if counts is not None:
                counts["default"] = counts.get("default", 0) + 1
            updates[gv] = schedule(func)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass


_CROPS: dict[tuple[str, int], bool] = {}


def crop_schedules(rows, mr: int) -> bool:
    """Whether a GEMM over a run-time count of `rows` padded to `mr` (kernels.run_time_rows) and
    cropped back takes Ember's schedule: a one-column probe, remembered per row expression. TVM
    cannot show that rows padded from a UNet decoder's width, (w // 4) * 2, cover the crop's, and
    refuses the whole kernel's schedule (TVM's generic kernel: 18x slower); such a count keeps
    the predicated tile. A static count: True."""
    from tvm import te, tirx

    if isinstance(rows, (int, tirx.IntImm)):
        return True
    key = (str(rows), mr)
    if key not in _CROPS:
        a, w = te.placeholder((rows, 1), name="a"), te.placeholder((1, 1, 16), name="w")
        gemm = kernels.matmul_packed(a, w, mr, 8)  # padded rows, cropped rows and columns
        sch = _sch(te.create_prim_func([a, w, gemm]))
        try:
            schedule_gemm(sch, sch.get_sblock(kernels.GEMM))
            _CROPS[key] = True
        except Exception:
            _CROPS[key] = False
    return _CROPS[key]
