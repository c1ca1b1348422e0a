"""Parallel loops only where there is work for the threads.

Each `parallel` loop TVM compiles wakes the whole thread pool (`TVMBackendParallelLaunch`
asks every worker, whatever the extent), which costs microseconds: more than the loop itself in
a small kernel (a 2 x 3 x 3 x 112 convolution, a bias add over one frame).

- Static work: after scheduling, `guard_pass` makes a parallel loop serial where its work (the
  iterations of every loop under it, each vector lane counted) is below `MIN_WORK`. Specialized
  small models on AMD EPYC (2 cores; kws-gru, HF RegNet, MobileNetV2, ResNet, T5 encoder, CRNN
  at their smallest zoo sizes): 0.90x the time, geomean of two runs.
- Work over run-time sizes (symbolic dims) is decided when the kernel runs: after lowering,
  `run_time_guard_pass` puts the loop nest twice, parallel where the work is at least
  `RUN_TIME_MIN_WORK`, serial otherwise (TVM's ConvertSSA renames the copy's definitions;
  before lowering TVM 0.27 offers no way to). It runs in Ember's TIR pipeline
  (`tir_pipeline.py`). A bias add over one frame: 5.9 us always parallel, 0.01 us guarded.
"""

from __future__ import annotations

MIN_WORK = 1 << 12  # loop iterations (1 << 14 made some small convolutions slower)


def _work(stmt, static: bool = False):
    """Iterations of the loops in `stmt` (a PrimExpr or int): a loop's extent times its
    body's, a sequence's sum; other statements count once. `static`: a loop of run-time
    extent counts once (after lowering its extent may name a value bound inside `stmt`)."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        extent = stmt.extent if not static or isinstance(stmt.extent, tirx.IntImm) else 1
        return extent * _work(stmt.body, static)
    if isinstance(stmt, tirx.SeqStmt):
        total = 0
        for s in stmt.seq:
            total = total + _work(s, static)
        return total
    if isinstance(stmt, s_tir.SBlockRealize):
        return _work(stmt.block.body, static)
    if isinstance(stmt, tirx.IfThenElse):
        return _work(stmt.then_case, static)
    body = getattr(stmt, "body", None)  # AttrStmt (flat statements: Bind, DeclBuffer have none)
    return _work(body, static) if isinstance(body, tirx.Stmt) else 1


def _serial(loop):
    from tvm import tirx

    return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body,
                    loop.thread_binding, loop.annotations)


def _replace(stmt, how):
    """`stmt` with each parallel loop directly in it (under sequences and attributes, not under
    another loop) replaced by how(loop); `stmt` itself where nothing changed."""
    from tvm import tirx

    if isinstance(stmt, tirx.SeqStmt):
        seq = [_replace(s, how) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.AttrStmt):
        body = _replace(stmt.body, how)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    return how(stmt) if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.PARALLEL else stmt


def _block(block, body):
    from tvm import s_tir

    return s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body, block.init,
                        block.alloc_buffers, block.match_buffers, block.annotations)


def guard_func(func):
    """A scheduled PrimFunc whose parallel loops of statically small work run serially."""
    from tvm import s_tir, tirx
    from tvm.sym import Analyzer

    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize):
        return func
    block = realize.block
    simplify = Analyzer().simplify

    def guarded(lp):
        work = simplify(_work(lp))
        return _serial(lp) if isinstance(work, (int, tirx.IntImm)) and int(work) < MIN_WORK else lp
    body = _replace(block.body, guarded)
    if body.same_as(block.body):
        return func
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, _block(block, body)))


def guard_pass():
    """Module pass: every PrimFunc's parallel loops guarded."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="EmberParallelGuard")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc):
                new = guard_func(func)
                if not new.same_as(func):
                    mod[gv] = new
        return mod

    return _pass


# ---- run-time sizes: after lowering, both loop nests, chosen by the work at run time ----

# loop iterations after lowering, where a vector statement counts once: MIN_WORK over 16 lanes
RUN_TIME_MIN_WORK = MIN_WORK // 16


def _run_time_guarded(loop, simplify):
    """A lowered parallel loop whose work depends on run-time sizes made
    `if work >= RUN_TIME_MIN_WORK: parallel else serial` (the serial copy's definitions repeat
    the parallel one's: ConvertSSA renames them); other loops as they are."""
    from tvm import tirx

    # the loop's own extent times its body's static work (an underestimate where inner
    # extents are run-time values too: those loops then need more rows to go parallel)
    work = simplify(loop.extent * _work(loop.body, static=True))
    if isinstance(work, (int, tirx.IntImm)):
        return loop
    # compared in float64: on an integer condition TVM's analyzer bounds the sizes in the
    # serial branch (work < 256 can mean an extent of 0) and then dies dividing by it
    cond = work.astype("float64") >= tirx.const(RUN_TIME_MIN_WORK, "float64")
    return tirx.IfThenElse(cond, loop, _serial(loop))


def run_time_guard_pass():
    """Host module pass (after MakePackedAPI, where TVM's ConvertSSA applies): `_run_time_guarded`
    on every function's parallel loops, then ConvertSSA."""
    import tvm
    from tvm import tirx
    from tvm.sym import Analyzer

    @tvm.transform.module_pass(opt_level=0, name="EmberRunTimeParallelGuard")
    def _pass(mod, _ctx):
        changed = False
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc):
                simplify = Analyzer().simplify
                body = _replace(func.body, lambda lp: _run_time_guarded(lp, simplify))
                if not body.same_as(func.body):
                    mod[gv] = func.with_body(body)
                    changed = True
        return tirx.transform.ConvertSSA()(mod) if changed else mod

    return _pass
