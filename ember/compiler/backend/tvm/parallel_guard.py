"""Parallel loops only where there is work for the threads.

Each `parallel` loop TVM compiles wakes the whole thread pool (`TVMBackendParallelLaunch`
asks every worker, whatever the extent), which costs microseconds: more than the loop itself in
a small kernel (a 2 x 3 x 3 x 112 convolution, a bias add over one frame). Ember's schedules
parallelize each kernel's outer loops; after scheduling, this pass makes a parallel loop serial
where its work (the iterations of every loop under it, each vector lane counted) is statically
below `MIN_WORK`. Work over run-time sizes stays parallel: choosing at run time would need the
loop nest twice, with fresh definitions, which TVM 0.27 offers no way to make before lowering.
Measured on AMD EPYC (2 cores), specialized small models (kws-gru, HF RegNet, MobileNetV2,
ResNet, T5 encoder, CRNN at their smallest zoo sizes): 0.90x the time, geomean of two runs.
"""

from __future__ import annotations

MIN_WORK = 1 << 12  # loop iterations (1 << 14 made some small convolutions slower)


def _work(stmt):
    """Iterations of the loops in `stmt` (a PrimExpr or int): a loop's extent times its
    body's, a sequence's sum; other statements count once."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        return stmt.extent * _work(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        total = 0
        for s in stmt.seq:
            total = total + _work(s)
        return total
    if isinstance(stmt, s_tir.SBlockRealize):
        return _work(stmt.block.body)
    if isinstance(stmt, tirx.IfThenElse):
        return _work(stmt.then_case)
    if isinstance(stmt, (tirx.LetStmt, tirx.AttrStmt)) or type(stmt).__name__ in ("DeclBuffer", "Allocate"):
        return _work(stmt.body)
    return 1


def _serial(loop):
    from tvm import tirx

    return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body,
                    loop.thread_binding, loop.annotations)


def _parallel_loops(stmt) -> list:
    """The parallel loops directly in `stmt` (not under another loop)."""
    from tvm import tirx

    if isinstance(stmt, tirx.SeqStmt):
        return [lp for s in stmt.seq for lp in _parallel_loops(s)]
    return [stmt] if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.PARALLEL else []


def _replace(stmt, how):
    """`stmt` with each parallel loop directly in it replaced by how(loop)."""
    from tvm import tirx

    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([_replace(s, how) for s in stmt.seq])
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

    def small(lp) -> bool:
        work = simplify(_work(lp))
        return isinstance(work, (int, tirx.IntImm)) and int(work) < MIN_WORK
    if not any(small(lp) for lp in _parallel_loops(block.body)):
        return func
    body = _replace(block.body, lambda lp: _serial(lp) if small(lp) else lp)
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
