"""The ``NAME_train_epoch`` entry: a whole epoch of mini-batches in one native call.

ABI (JIT and shared library alike)::

    int32_t NAME_train_epoch(void *params, void *state, void *workspace,
                             void *const *inputs, void *const *outputs, int64_t n,
                             const int64_t *order, int64_t batch,
                             void *const *staging, T *losses, int64_t scan)

``inputs`` are laid out as for ``NAME_train_step`` but hold the whole data set (``n`` rows for
every input with a batch dimension; unbatched inputs such as ``lr`` as usual). ``order`` is a
permutation (or any selection) of ``n`` row indexes; the epoch runs ``ceil(n / batch)`` steps,
step ``s`` on the rows ``order[s*batch : min(n, (s+1)*batch)]``, which it gathers into
``staging[i]`` (``batch`` rows, one buffer per batched input slot; the pointer of an unbatched
slot is ignored) before calling ``NAME_train_step`` on them. ``workspace`` must hold
``Schedule.workspace_bytes(batch)`` bytes. The loss of step ``s`` is stored in ``losses[s]``
(``T`` is the loss's dtype). Returns 0, or 3 when an index of ``order`` lies outside ``0..n-1``
(the steps before it have run), or ``ERR_NONFINITE_LOSS`` right after the first step whose loss
is NaN or infinite (``losses[s]`` holds it; that step's update has run, no later step has), or
the nonzero code of a failed step.

With ``scan`` nonzero the epoch runs ``NAME_train_step``'s value checks (codegen/checks.py):
those of unbatched inputs (the learning rate) once before the first step, those of batched
inputs on each row as the gather copies it (one pass that copies and tests), and it returns
the checked entry's ``CHECK_BASE + slot`` (the first failing slot in the checks' order) before
the step of a failing batch, the steps before it having run. ``Model.fit`` scans its data this
way in its first epoch instead of reading the whole data set once more up front, and undoes
the steps before a rejection from the copy of the parameters and optimizer state it makes at
every epoch's start. With ``scan`` zero (or an entry without checks) nothing is tested.

Each step is the very same call the per-step path makes, on the same gathered rows, so an epoch
gives bit-identical parameters and losses to ``ceil(n / batch)`` calls of ``NAME_train_step``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llvmlite import ir

from graphc.ir.plan import Schedule
from graphc.ir.types import BATCH, DTYPE_INFO

from .checks import CHECK_BASE, InputCheck, copy_scanner, emit_input_checks, scanner
from .lltypes import F64, I1, I8, I32, I64, LL, PTR, VOID, glue, i64
from .loops import counted_loop, loop
from .threads import declare

EPOCH_TYPE = ir.FunctionType(I32, [PTR, PTR, PTR, PTR, PTR, I64, PTR, I64, PTR, PTR, I64])
ERR_INDEX = 3
ERR_NONFINITE_LOSS = 900  # an internal code of this entry (the JIT's fit), never a step's


def _memcpy(module: ir.Module) -> ir.Function:
    return declare(module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])


def emit_train_epoch(
    module: ir.Module,
    fname: str,
    step: ir.Function,
    sched: Schedule,
    checks: list[InputCheck] | tuple = (),
    pool: Any = None,
    home: ir.Module | None = None,
) -> ir.Function:
    """Emit ``fname`` (see the module docstring) looping ``step`` (the entry's body, without
    its scans) over gathered mini-batches; ``checks``: the entry's value checks, run when
    ``scan`` is nonzero; ``pool``: the module's threads (for the scans of unbatched inputs);
    ``home``: the module defining the scan functions (default: ``module``)."""
    g = sched.graph
    fn = glue(ir.Function(module, EPOCH_TYPE, name=fname))  # per step: a gather and a call
    names = (
        "params",
        "state",
        "workspace",
        "inputs",
        "outputs",
        "n",
        "order",
        "batch",
        "staging",
        "losses",
        "scan",
    )
    for a, nm in zip(fn.args, names):
        a.name = nm
    params, state, ws, inputs, outputs, n, order, batch, staging, losses, scan = fn.args
    loss_t = LL[g[sched.output_slots[0]].type.dtype]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    memcpy = _memcpy(module)
    args_ptr, batched, _ = _stage_inputs(b, g, sched.input_slots, inputs, staging)
    bad = fn.append_basic_block("bad_index")
    slot_of = {v: i for i, v in enumerate(sched.input_slots)}
    # checks of batched inputs (rows along axis 0) run in the gather; the others once, here
    row_checks: dict[int, InputCheck] = {}
    once = []
    for c in checks:
        t = g[c.name].type
        if t.shape and t.shape[0] == BATCH:
            row_checks[slot_of[c.name]] = c
            continue
        count: ir.Value = i64(1)
        for d in t.shape:
            count = b.mul(count, n if d == BATCH else i64(int(d)))
        once.append((slot_of[c.name], c, t.dtype, count))
    scan_on = b.icmp_signed("!=", scan, i64(0), name="scan_on")
    if once:
        with b.if_then(scan_on):
            emit_input_checks(b, module, once, inputs, pool, home)
    flags = []
    if row_checks:
        with b.goto_entry_block():
            flags = [(s, b.alloca(I32, name=f"bad{s}")) for s in sorted(row_checks)]
    batched_slots = [
        i
        for i, v in enumerate(sched.input_slots)
        if g[v].type.shape and g[v].type.shape[0] == BATCH
    ]
    steps = b.sdiv(b.add(n, b.sub(batch, i64(1))), batch, name="steps")
    with loop(b, steps, name="s") as s:
        lo = b.mul(s, batch, name="lo")
        rest = b.sub(n, lo)
        nb = b.select(b.icmp_signed("<", rest, batch), rest, batch, name="nb")
        if not row_checks:
            _gather_rows(b, fn, memcpy, order, lo, nb, n, batched, bad)
        else:
            with b.if_else(scan_on) as (then, otherwise):
                with then:
                    for _, f in flags:
                        b.store(ir.Constant(I32, 0), f)
                    scanned = _scanned_rows(
                        module, g, batched_slots, batched, row_checks, flags, home
                    )
                    _gather_rows(b, fn, memcpy, order, lo, nb, n, scanned, bad)
                    for slot, f in flags:  # the checked entry's order: the first slot failing
                        with b.if_then(
                            b.icmp_unsigned("!=", b.load(f, typ=I32), ir.Constant(I32, 0)),
                            likely=False,
                        ):
                            b.ret(ir.Constant(I32, CHECK_BASE + slot))
                with otherwise:
                    _gather_rows(b, fn, memcpy, order, lo, nb, n, batched, bad)
        rc = b.call(step, [params, state, ws, args_ptr, outputs, nb], name="rc")
        _return_if_nonzero(b, fn, rc, "step")
        out0 = b.load(b.gep(outputs, [i64(0)], source_etype=PTR), typ=PTR, name="loss_ptr")
        loss = b.load(out0, typ=loss_t, name="loss")
        b.store(loss, b.gep(losses, [s], inbounds=True, source_etype=loss_t))
        # loss - loss is 0 exactly when the loss is finite (NaN for NaN and +-Inf)
        finite = b.fcmp_ordered("==", b.fsub(loss, loss), ir.Constant(loss_t, 0.0), name="finite")
        stop_bb = fn.append_basic_block("nonfinite_loss")
        next_bb = fn.append_basic_block("next_step")
        b.cbranch(finite, next_bb, stop_bb)
        b.position_at_end(stop_bb)
        b.ret(ir.Constant(I32, ERR_NONFINITE_LOSS))
        b.position_at_end(next_bb)
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, ERR_INDEX))
    return fn


# ---------------------------------------------------------------- the data-parallel epoch

# void reduce(int64_t step, int64_t rows): the caller's all-reduce between the two entries
REDUCE_TYPE = ir.FunctionType(VOID, [I64, I64])
EPOCH_SPLIT_TYPE = ir.FunctionType(
    I32, [PTR, PTR, PTR, PTR, PTR, I64, PTR, I64, PTR, I64, I64, I64, I64, PTR, PTR, PTR, I64, PTR]
)
ERR_REDUCE = 901  # the reduce call-out did not say go on: the entry stopped before the update
ERR_DECIDE = 902  # the native all-reduce's summed flags ask the caller to decide (see CTL)

# The native all-reduce of ranks sharing memory (``ctl`` of NAME_train_epoch_split, int64
# words; ``ctl[CTL_FAST]`` 0: the call-out at every step instead). Addresses are of the
# shared-memory window's slots (runtime.distributed.WindowReduce) unless said otherwise.
CTL_FAST = 0  # 1: the native step below
CTL_TICKET = 1  # the last barrier ticket (in / out: every rank runs the same barriers)
CTL_ARRIVED = 2  # int64 arrival counters, one per rank, CTL_LINE bytes apart
CTL_FLAGS = 3  # void *[ranks]: each rank's FLAGS flags (the gradients' dtype)
CTL_GRADS = 4  # void *[ranks]: element 0 of each rank's flat update gradient
CTL_LOSSES = 5  # double[steps]: this rank's share of each global step's loss (caller's memory)
CTL_STOP = 6  # int64: nonzero when a stop was requested (caller's memory, signal handler)
CTL_NONFINITE = 7  # 1: a non-finite summed loss stops (stop_on_nonfinite)
CTL_SUMMED = 8  # FLAGS values: the flags summed over the ranks (caller's memory)
CTL_LO, CTL_HI = 9, 10  # the flat update's elements this rank updates (all of them)
CTL_GRAD, CTL_GRAD_BYTES = 11, 12  # this rank's grad region, zeroed when it has no rows
CTL_SHARD = 13  # NAME_apply_update_shard's address
# double[steps] (caller's memory) or 0: step s's loss_scale and loss share factor scales[s]
# instead of count / big (a mean over the rows a loss keeps: runtime.distributed.kept_scales);
# read by the call-out path too
CTL_SCALES = 14
CTL_WORDS = 15
CTL_LINE = 128  # bytes between counters: no false sharing on 128-byte lines or line pairs
FLAGS = 4  # [non-finite losses, loss share, stop requests, rejected rows]: runtime.distributed


def emit_train_epoch_split(
    module: ir.Module,
    fname: str,
    grads: ir.Function,
    update: ir.Function,
    gsched: Schedule,
    checks: list[InputCheck] | tuple = (),
    home: ir.Module | None = None,
) -> ir.Function:
    """Emit ``fname``, the data-parallel epoch of one rank: steps of ``NAME_train_grads``, a
    call-out that all-reduces the grad region, and ``NAME_apply_update``. ABI::

        int32_t NAME_train_epoch_split(void *params, void *state, void *workspace,
            void *const *inputs, void *const *outputs, int64_t n, const int64_t *order,
            int64_t batch, void *const *staging, int64_t ranks, int64_t rank,
            int64_t first_step, int64_t end_step, void *const *update_inputs,
            void (*reduce)(int64_t step, int64_t rows), int64_t *at, int64_t scan,
            int64_t *ctl)

    ``inputs``/``outputs``: train_grads' slots, the batched inputs holding all ``n`` rows (as
    for ``NAME_train_epoch``); its ``loss_scale`` and ``row0`` slots point at scalars this
    entry writes before each step. Global step ``s`` (``first_step <= s < end_step``) covers
    ``order[s*batch : min(n, (s+1)*batch)]`` (``big`` rows); this rank takes the ``rank``-th
    of ``ranks`` nearly equal consecutive slices of it (runtime.distributed.shard: ``first``,
    ``count``), gathers those rows into ``staging`` and calls train_grads on them with
    loss_scale = count / big (rounded from double, as numpy does; ``scales[s]`` when
    ``ctl[CTL_SCALES]`` holds their address) and row0 = first (none when
    ``count`` is 0: the rank contributes nothing). Then ``at[1] = 0`` and ``reduce(s, count)``,
    which sets ``at[1]`` to 1 to run apply_update (inputs ``update_inputs``, no outputs) and
    go on, to 2 to go on without it (the call-out applied the update itself: each rank a
    shard, NAME_apply_update_shard); left 0, the entry stops with ERR_REDUCE before the
    update. (A flag in memory,
    not a return value: a Python call-out that raises before its first statement, as a signal
    handler can, returns an undefined value through ctypes but leaves the flag at 0.)
    ``at[0]`` holds the step being run. Returns 0,
    ERR_INDEX (a row index outside 0..n-1), ERR_REDUCE or the nonzero code of an entry.

    With ``scan`` nonzero, the gather copies the rows of every batched input that has one of
    ``checks`` (train_grads' value checks, codegen/checks.py) through its scanner (one pass
    that copies and tests, as NAME_train_epoch's scan). A failing row does not end the call
    here, since the other ranks are waiting in the all-reduce of that step: the rank skips
    train_grads, stores ``CHECK_BASE + slot`` (the first failing slot in the checks' order)
    in ``at[2]`` (0 otherwise; the caller zeroes it) and calls ``reduce`` as usual, which
    carries the rejection to every rank and answers stop (runtime.distributed). Checks of
    unbatched inputs are not run (the entry writes loss_scale and row0 itself).
    With ``ctl[CTL_FAST]`` nonzero (ranks sharing memory, spinning waits) each step runs its
    all-reduce natively instead of calling ``reduce`` (see emit_native_reduce): the rank's
    flags into its slot, a barrier of atomic counters, the flags summed in rank order, the
    update summed over the slots (NAME_apply_update_shard over all elements), a second
    barrier; a summed flag (a rank's rows rejected, a stop requested, a non-finite loss with
    ``ctl[CTL_NONFINITE]``) ends the call before the update with ERR_DECIDE, ``at[0]`` the
    step, the sums in ``ctl[CTL_SUMMED]``'s memory, for the caller to decide as its call-out
    would have; ``at[1]`` is 3 while the update runs (a nonzero code returned then is the
    update's).
    Also emits ``NAME_reduce_slots`` (emit_reduce_slots) for the params' dtype, which the
    call-out uses when the ranks share memory.
    """
    g = gsched.graph
    fn = glue(ir.Function(module, EPOCH_SPLIT_TYPE, name=fname))
    names = (
        "params", "state", "workspace", "inputs", "outputs", "n", "order", "batch", "staging",
        "ranks", "rank", "first_step", "end_step", "update_inputs", "reduce", "at", "scan",
        "ctl",
    )  # fmt: skip
    for a, nm in zip(fn.args, names):
        a.name = nm
    params, state, ws, inputs, outputs, n, order, batch, staging = fn.args[:9]
    ranks, rank, first_step, end_step, update_inputs, reduce_fn, at, scan, ctl = fn.args[9:]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    memcpy = _memcpy(module)
    no_outputs = b.alloca(PTR, size=1, name="no_outputs")
    step_inputs, batched, srcs = _stage_inputs(b, g, gsched.input_slots, inputs, staging)
    if "loss_scale" not in srcs:
        raise ValueError(f"{fname}: train_grads has no loss_scale input")
    scale_ptr, scale_t = srcs["loss_scale"], LL[g["loss_scale"].type.dtype]
    row0_ptr = srcs.get("row0")
    bad = fn.append_basic_block("bad_index")
    reduce_call = _callee(reduce_fn, REDUCE_TYPE)
    # row checks of batched inputs, run in the gather when ``scan`` is nonzero
    slot_of = {v: i for i, v in enumerate(gsched.input_slots)}
    batched_slots = [
        i
        for i, v in enumerate(gsched.input_slots)
        if g[v].type.shape and g[v].type.shape[0] == BATCH
    ]
    row_checks = {
        slot_of[c.name]: c
        for c in checks
        if g[c.name].type.shape and g[c.name].type.shape[0] == BATCH
    }
    flags: list[tuple[int, ir.Value]] = []
    scanned: list[tuple[Any, ...]] = []
    param_dtypes = {nd.type.dtype for nd in g.nodes if nd.op == "param"}
    native_reduce = len(param_dtypes) == 1  # the flags and gradients share one dtype
    memset = _memset(module)
    if row_checks:
        with b.goto_entry_block():
            flags = [(sl, b.alloca(I32, name=f"bad{sl}")) for sl in sorted(row_checks)]
        scanned = _scanned_rows(module, g, batched_slots, batched, row_checks, flags, home)
    with loop(b, b.sub(end_step, first_step), name="j") as j:
        s = b.add(first_step, j, name="s")
        b.store(s, at)
        lo = b.mul(s, batch, name="lo")
        rest = b.sub(n, lo)
        big = b.select(b.icmp_signed("<", rest, batch), rest, batch, name="big")
        # shard(big, ranks, rank): the first big % ranks slices hold one row more
        q, r_ = b.sdiv(big, ranks, name="q"), b.srem(big, ranks, name="r")
        more = b.icmp_signed("<", rank, r_)
        first = b.add(b.mul(rank, q), b.select(more, rank, r_), name="first")
        count = b.add(q, b.zext(more, I64), name="count")
        has_rows = fn.append_basic_block("has_rows")
        reduce_bb = fn.append_basic_block("reduce")
        b.cbranch(b.icmp_signed(">", count, i64(0)), has_rows, reduce_bb)
        b.position_at_end(has_rows)
        base = b.add(lo, first, name="base")
        if not row_checks:
            _gather_rows(b, fn, memcpy, order, base, count, n, batched, bad)
        else:
            with b.if_else(b.icmp_signed("!=", scan, i64(0))) as (then, otherwise):
                with then:
                    for _, f in flags:
                        b.store(ir.Constant(I32, 0), f)
                    _gather_rows(b, fn, memcpy, order, base, count, n, scanned, bad)
                    code: ir.Value = i64(0)  # the first failing slot wins: built from the last
                    for slot, f in reversed(flags):
                        hit = b.icmp_unsigned("!=", b.load(f, typ=I32), ir.Constant(I32, 0))
                        code = b.select(hit, i64(CHECK_BASE + slot), code)
                    with b.if_then(b.icmp_signed("!=", code, i64(0)), likely=False):
                        b.store(code, b.gep(at, [i64(2)], inbounds=True, source_etype=I64))
                        b.branch(reduce_bb)  # no train_grads: the step is not applied
                with otherwise:
                    _gather_rows(b, fn, memcpy, order, base, count, n, batched, bad)
        # as numpy: count / big in double (or the caller's scales[s]), then rounded to the
        # scale's type
        ratio = _step_scale(b, ctl, s, b.fdiv(b.sitofp(count, F64), b.sitofp(big, F64)))
        b.store(ratio if scale_t == F64 else b.fptrunc(ratio, scale_t), scale_ptr)
        if row0_ptr is not None:
            b.store(first, row0_ptr)
        rc = b.call(grads, [params, state, ws, step_inputs, outputs, count], name="rc")
        _return_if_nonzero(b, fn, rc, "grads")
        b.branch(reduce_bb)
        b.position_at_end(reduce_bb)
        go_ptr = b.gep(at, [i64(1)], inbounds=True, source_etype=I64)
        b.store(i64(0), go_ptr)
        done_bb = fn.append_basic_block("updated")
        callout_bb = fn.append_basic_block("call_out")
        if native_reduce:
            fast_bb = fn.append_basic_block("native_reduce")
            b.cbranch(b.icmp_signed("!=", _word(b, ctl, CTL_FAST), i64(0)), fast_bb, callout_bb)
            b.position_at_end(fast_bb)
            emit_native_reduce(
                b, fn, ctl, s, count, big, outputs, g[gsched.output_slots[0]].type.dtype,
                (params, state, ws, update_inputs, ranks, rank, at), memset,
                next(iter(param_dtypes)),
            )  # fmt: skip
            b.branch(done_bb)
        else:
            b.branch(callout_bb)
        b.position_at_end(callout_bb)
        b.call(reduce_call, [s, count])
        go = b.load(go_ptr, typ=I64, name="go")
        stop_bb, upd_bb = fn.append_basic_block("reduce_stop"), fn.append_basic_block("update")
        b.cbranch(b.icmp_signed("==", go, i64(0)), stop_bb, upd_bb)
        b.position_at_end(stop_bb)
        b.ret(ir.Constant(I32, ERR_REDUCE))
        b.position_at_end(upd_bb)
        with b.if_then(b.icmp_signed("==", go, i64(1))):  # 2: the call-out updated
            rc = b.call(update, [params, state, ws, update_inputs, no_outputs, i64(1)], name="urc")
            _return_if_nonzero(b, fn, rc, "update")
        b.branch(done_bb)
        b.position_at_end(done_bb)
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, ERR_INDEX))
    # the all-reduce of the gradients through shared memory, for the same ranks
    dtypes = {n.type.dtype for n in g.nodes if n.op == "param"}
    if len(dtypes) == 1:
        emit_reduce_slots(module, fname.removesuffix("_train_epoch_split") + "_reduce_slots",
                          dtypes.pop())  # fmt: skip
    return fn


def _memset(module: ir.Module) -> ir.Function:
    return declare(module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])


def _step_scale(b: ir.IRBuilder, ctl: ir.Value, s: ir.Value, default: ir.Value) -> ir.Value:
    """``scales[s]`` (double) when ``ctl[CTL_SCALES]`` holds an address, else ``default``."""
    with b.goto_entry_block():
        slot = b.alloca(F64, name="step_scale")
    b.store(default, slot)
    addr = _word(b, ctl, CTL_SCALES)
    with b.if_then(b.icmp_signed("!=", addr, i64(0))):
        at = b.gep(b.inttoptr(addr, PTR), [s], inbounds=True, source_etype=F64)
        b.store(b.load(at, typ=F64), slot)
    return b.load(slot, typ=F64)


def _word(b: ir.IRBuilder, ctl: ir.Value, i: int) -> ir.Value:
    return b.load(b.gep(ctl, [i64(i)], inbounds=True, source_etype=I64), typ=I64)


def _addr(b: ir.IRBuilder, ctl: ir.Value, i: int) -> ir.Value:
    return b.inttoptr(_word(b, ctl, i), PTR)


def _slot_ptr(b: ir.IRBuilder, table: ir.Value, j: ir.Value) -> ir.Value:
    return b.load(b.gep(table, [j], inbounds=True, source_etype=PTR), typ=PTR)


def emit_native_barrier(b: ir.IRBuilder, fn: ir.Function, ctl: ir.Value, ranks, rank) -> None:
    """A barrier of the ranks sharing memory: ticket = ++ctl[CTL_TICKET]; this rank's arrival
    counter (CTL_LINE bytes apart from the others: no false sharing) set to the ticket with
    release order, then every counter polled with acquire order until it reaches the ticket
    (``pause`` between polls on x86, ``sched_yield`` every WAIT_POLLS polls, as the thread
    pool's waits, so that ranks
    sharing a core still progress). What a rank stored before its arrival is visible to every
    rank after the barrier (release / acquire: the window's unified memory model)."""
    from .threads import WAIT_POLLS, _store_atomic, relax

    module = b.module
    tp = b.gep(ctl, [i64(CTL_TICKET)], inbounds=True, source_etype=I64)
    ticket = b.add(b.load(tp, typ=I64), i64(1), name="ticket")
    b.store(ticket, tp)
    base = _word(b, ctl, CTL_ARRIVED)

    def counter(j: ir.Value) -> ir.Value:
        return b.inttoptr(b.add(base, b.mul(j, i64(CTL_LINE))), PTR)

    _store_atomic(b, ticket, counter(rank), "release", 8)
    yield_fn = declare(module, "sched_yield", I32, [])
    with loop(b, ranks, name="peer") as j:
        head = fn.append_basic_block("barrier_poll")
        wait = fn.append_basic_block("barrier_wait")
        done = fn.append_basic_block("barrier_arrived")
        pre = b.block
        b.branch(head)
        b.position_at_end(head)
        n = b.phi(I64, name="polls")
        n.add_incoming(i64(0), pre)
        seen = b.load_atomic(counter(j), "acquire", 8, typ=I64)
        b.cbranch(b.icmp_signed(">=", seen, ticket), done, wait)
        b.position_at_end(wait)
        relax(b, module)
        nxt = b.add(n, i64(1))
        with b.if_then(b.icmp_signed("==", b.and_(nxt, i64(WAIT_POLLS - 1)), i64(0))):
            b.call(yield_fn, [])
        n.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)


def emit_native_reduce(
    b: ir.IRBuilder,
    fn: ir.Function,
    ctl: ir.Value,
    s: ir.Value,
    count: ir.Value,
    big: ir.Value,
    outputs: ir.Value,
    loss_dtype: str,
    entry: tuple[ir.Value, ...],
    memset: ir.Function,
    dtype: str,
) -> None:
    """One step's all-reduce and update among ranks sharing memory, without the call-out (see
    emit_train_epoch_split and CTL): the arithmetic of runtime.distributed's call-out, bit
    for bit. This rank's share of the loss, ``loss * count / big`` in double (``loss *
    scales[s]`` with ``ctl[CTL_SCALES]``; 0 and a zeroed grad region without rows), goes to
    ``losses[s]``; its flags (non-finite share, the share,
    a stop requested, ``at[2]`` rejected rows) to its slot; barrier; the flags summed over
    the slots in rank order into ``summed``; ERR_DECIDE returned when the caller must decide;
    else NAME_apply_update_shard over elements ``lo..hi`` (the gradient summed over the slots
    as it is read) and a second barrier, after which every rank may write its slot again."""
    params, state, ws, update_inputs, ranks, rank, at = entry
    ft, lt = LL[dtype], LL[loss_dtype]
    has = b.icmp_signed(">", count, i64(0))
    loss_ptr = b.load(b.gep(outputs, [i64(0)], inbounds=True, source_etype=PTR), typ=PTR)
    loss = b.load(loss_ptr, typ=lt)
    lossd = loss if lt == F64 else b.fpext(loss, F64)
    share = b.fdiv(b.fmul(lossd, b.sitofp(count, F64)), b.sitofp(big, F64), name="share")
    kept = b.icmp_signed("!=", _word(b, ctl, CTL_SCALES), i64(0))  # loss * scales[s]
    share = b.select(kept, b.fmul(lossd, _step_scale(b, ctl, s, share)), share)
    share = b.select(has, share, ir.Constant(F64, 0.0))
    with b.if_then(b.not_(has)):  # no rows here: this rank adds nothing to the sum
        b.call(memset, [_addr(b, ctl, CTL_GRAD), ir.Constant(I8, 0), _word(b, ctl, CTL_GRAD_BYTES),
                        ir.Constant(I1, 0)])  # fmt: skip
    b.store(share, b.gep(_addr(b, ctl, CTL_LOSSES), [s], inbounds=True, source_etype=F64))

    def flag(cond: ir.Value) -> ir.Value:
        return b.select(cond, ir.Constant(ft, 1.0), ir.Constant(ft, 0.0))

    def finite(x: ir.Value) -> ir.Value:  # x - x == 0 exactly when x is finite
        return b.fcmp_ordered("==", b.fsub(x, x), ir.Constant(x.type, 0.0))

    rejected = b.load(b.gep(at, [i64(2)], inbounds=True, source_etype=I64), typ=I64)
    stop = b.load(_addr(b, ctl, CTL_STOP), typ=I64)
    table = _addr(b, ctl, CTL_FLAGS)
    mine = _slot_ptr(b, table, rank)
    values = [
        flag(b.not_(finite(share))),
        b.fptrunc(share, ft) if ft != F64 else share,
        flag(b.icmp_signed("!=", stop, i64(0))),
        flag(b.icmp_signed("!=", rejected, i64(0))),
    ]
    for i, v in enumerate(values):
        b.store(v, b.gep(mine, [i64(i)], inbounds=True, source_etype=ft))
    emit_native_barrier(b, fn, ctl, ranks, rank)
    first = _slot_ptr(b, table, i64(0))
    with b.goto_entry_block():
        acc = [b.alloca(ft, name=f"sum{i}") for i in range(FLAGS)]
    for i in range(FLAGS):
        b.store(b.load(b.gep(first, [i64(i)], inbounds=True, source_etype=ft), typ=ft), acc[i])
    with loop(b, ranks, name="slot", start=1) as j:  # rank order, as the call-out's sum
        other = _slot_ptr(b, table, j)
        for i in range(FLAGS):
            x = b.load(b.gep(other, [i64(i)], inbounds=True, source_etype=ft), typ=ft)
            b.store(b.fadd(b.load(acc[i], typ=ft), x), acc[i])
    got = [b.load(a, typ=ft) for a in acc]
    out = _addr(b, ctl, CTL_SUMMED)
    for i, v in enumerate(got):
        b.store(v, b.gep(out, [i64(i)], inbounds=True, source_etype=ft))
    zero = ir.Constant(ft, 0.0)
    loss_sum = got[1] if ft == F64 else b.fpext(got[1], F64)
    nonfinite = b.and_(
        b.icmp_signed("!=", _word(b, ctl, CTL_NONFINITE), i64(0)),
        b.or_(b.fcmp_ordered(">", got[0], zero), b.not_(finite(loss_sum))),
    )
    decide = b.or_(
        b.or_(b.fcmp_ordered(">", got[3], zero), b.fcmp_ordered(">", got[2], zero)), nonfinite
    )
    with b.if_then(decide, likely=False):
        b.ret(ir.Constant(I32, ERR_DECIDE))
    shard = _callee(_addr(b, ctl, CTL_SHARD), SHARD_TYPE)
    phase = b.gep(at, [i64(1)], inbounds=True, source_etype=I64)
    b.store(i64(3), phase)  # a nonzero code returned now is the update's (see at[1])
    rc = b.call(shard, [params, state, ws, update_inputs, _word(b, ctl, CTL_LO),
                        _word(b, ctl, CTL_HI), _addr(b, ctl, CTL_GRADS), ranks])  # fmt: skip
    _return_if_nonzero(b, fn, rc, "update")
    b.store(i64(0), phase)
    emit_native_barrier(b, fn, ctl, ranks, rank)


# void NAME_reduce_slots(void *const *srcs, int64_t k, void *const *dsts, int64_t m,
#                        int64_t lo, int64_t hi)
REDUCE_SLOTS_TYPE = ir.FunctionType(VOID, [PTR, I64, PTR, I64, I64, I64])
REDUCE_BLOCK = 512  # elements summed per pass over the slots (a 2-4 KiB stack buffer)


def emit_reduce_slots(module: ir.Module, fname: str, dtype: str) -> ir.Function:
    """Emit ``fname``, a rank's part of an all-reduce through shared memory::

        void NAME_reduce_slots(void *const *srcs, int64_t k, void *const *dsts, int64_t m,
                               int64_t lo, int64_t hi)

    ``srcs[0..k-1]``: the ranks' vectors of ``dtype`` values (in an MPI shared-memory window,
    runtime.distributed.WindowReduce). For every index ``lo <= i < hi`` it computes
    ``s = ((srcs[0][i] + srcs[1][i]) + ...) + srcs[k-1][i]`` (that order, no reassociation:
    every rank that sums index i gets the same bits) and stores ``s`` at ``i`` of each of
    ``dsts[0..m-1]`` (which may be sources). By blocks of REDUCE_BLOCK elements through a stack
    buffer holding the running sum, so that each pass is a plain loop LLVM vectorizes."""
    t = LL[dtype]
    fn = ir.Function(module, REDUCE_SLOTS_TYPE, name=fname)
    for a, nm in zip(fn.args, ("srcs", "k", "dsts", "m", "lo", "hi")):
        a.name = nm
    srcs, k, dsts, m, lo, hi = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc = b.alloca(t, size=REDUCE_BLOCK, name="acc")
    total = b.sub(hi, lo, name="total")
    blocks = b.sdiv(b.add(total, i64(REDUCE_BLOCK - 1)), i64(REDUCE_BLOCK), name="blocks")

    def vec(table: ir.Value, j: ir.Value, start: ir.Value) -> ir.Value:
        base = b.load(b.gep(table, [j], source_etype=PTR), typ=PTR, name="vec")
        return b.gep(base, [start], inbounds=True, source_etype=t, name="part")

    def at(p: ir.Value, i: ir.Value) -> ir.Value:
        return b.gep(p, [i], inbounds=True, source_etype=t)

    with loop(b, blocks, name="blk") as blk:
        start = b.add(lo, b.mul(blk, i64(REDUCE_BLOCK)), name="start")
        left = b.sub(hi, start)
        n = b.select(b.icmp_signed("<", left, i64(REDUCE_BLOCK)), left, i64(REDUCE_BLOCK), name="n")
        first = vec(srcs, i64(0), start)
        with b.if_else(b.icmp_signed(">", k, i64(1))) as (pair, alone):
            with pair:  # the first add in the first pass: one pass less over the block
                second = vec(srcs, i64(1), start)
                with loop(b, n, name="i01") as i:
                    s = b.fadd(b.load(at(first, i), typ=t), b.load(at(second, i), typ=t))
                    b.store(s, at(acc, i))
            with alone, loop(b, n, name="i0") as i:
                b.store(b.load(at(first, i), typ=t), at(acc, i))
        with loop(b, k, name="j", start=2) as j:
            src = vec(srcs, j, start)
            with loop(b, n, name="i1") as i:
                s = b.fadd(b.load(at(acc, i), typ=t), b.load(at(src, i), typ=t), name="s")
                b.store(s, at(acc, i))
        with loop(b, m, name="jw") as j:
            dst = vec(dsts, j, start)
            with loop(b, n, name="i2") as i:
                b.store(b.load(at(acc, i), typ=t), at(dst, i))
    b.ret_void()
    return fn


def _return_if_nonzero(b: ir.IRBuilder, fn: ir.Function, rc: ir.Value, what: str) -> None:
    """Emit: return ``rc`` when it is nonzero, else go on (blocks ``WHAT_failed``/``WHAT_ok``)."""
    fail_bb, ok_bb = fn.append_basic_block(f"{what}_failed"), fn.append_basic_block(f"{what}_ok")
    b.cbranch(b.icmp_signed("!=", rc, ir.Constant(I32, 0)), fail_bb, ok_bb)
    b.position_at_end(fail_bb)
    b.ret(rc)
    b.position_at_end(ok_bb)


def _callee(value: ir.Value, ftype: ir.FunctionType):
    from .threads import _Callee

    return _Callee(value, ftype)


def _stage_inputs(
    b: ir.IRBuilder, g: Any, slots: list[str], inputs: ir.Value, staging: ir.Value
) -> tuple[ir.Value, list[tuple[int, ir.Value, ir.Value]], dict[str, ir.Value]]:
    """Emit the step's input pointer table: inputs[i] for an unbatched slot, staging[i] for a
    batched one. Returns (the table, [(row bytes, data, stage)] of the batched slots, the
    unbatched slots' pointers by name)."""
    table = b.alloca(PTR, size=max(1, len(slots)), name="step_inputs")
    batched: list[tuple[int, ir.Value, ir.Value]] = []
    srcs: dict[str, ir.Value] = {}
    for i, name in enumerate(slots):
        t = g[name].type
        src = b.load(b.gep(inputs, [i64(i)], source_etype=PTR), typ=PTR, name=f"in{i}")
        if t.shape and t.shape[0] == BATCH:
            stage = b.load(b.gep(staging, [i64(i)], source_etype=PTR), typ=PTR, name=f"stage{i}")
            batched.append((t.size(1) * t.itemsize, src, stage))
            src = stage
        else:
            srcs[name] = src
        b.store(src, b.gep(table, [i64(i)], source_etype=PTR))
    return table, batched, srcs


def _scanned_rows(
    module: ir.Module,
    g: Any,
    batched_slots: list[int],
    batched: list[tuple[Any, ...]],
    row_checks: dict[int, InputCheck],
    flags: list[tuple[int, ir.Value]],
    home: ir.Module | None,
) -> list[tuple[Any, ...]]:
    """``batched`` (the gather's (row bytes, source, stage) per batched slot) with each slot's
    row check attached: (scanner, check, dtype, its failure flag), or None where the slot has
    no check (_gather_rows copies those rows as they are)."""
    flag_of = dict(flags)
    out: list[tuple[Any, ...]] = []
    for slot, (rb, src, stage) in zip(batched_slots, batched):
        c = row_checks.get(slot)
        if c is None:
            out.append((rb, src, stage, None))
            continue
        dt = g[c.name].type.dtype
        scanners = copy_scanner(module, c.kind, dt, home), scanner(module, c.kind, dt, home)
        out.append((rb, src, stage, (*scanners, c, dt, flag_of[slot])))
    return out


# Rows of GATHER_GROUP_MIN_BYTES or more are gathered GATHER_GROUP at a time, 64-byte pieces
# of the group's rows in turn, so that as many of the data set's rows stream from memory at
# once (each row its own sequential run, which the hardware prefetcher follows). Measured on
# the 2-core Xeon this project benchmarks on (1 thread, 60,000 shuffled rows of 3,136 bytes in
# batches of 128, a 188 MB data set beyond the caches; C, medians of 3): a memcpy per row 30
# ms per epoch (the read-only stream of the same bytes 16.7 ms), 2 rows at a time 32.6, 4
# 22.5, 8 21.1; a software prefetch of the next row(s) instead 26.8 (1 row ahead) to 31.6.
GATHER_GROUP = 8
GATHER_GROUP_MIN_BYTES = 512
_GATHER_PIECE = 64  # bytes per vector copied: a cache line


def _gather_group(module: ir.Module) -> ir.Function:
    """``void graphc.gather_rows.G(i8 *dst, i64 row_bytes, const i8 *src_0 .. src_{G-1})``:
    copies G rows of ``row_bytes`` bytes each to G consecutive rows at ``dst``, in turns of
    two 64-byte pieces per row (two, so that LLVM's loop-idiom pass cannot read a store as
    one memcpy of a whole row), the last ``row_bytes % 128`` bytes of each by memcpy."""
    name = f"graphc.gather_rows.{GATHER_GROUP}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(VOID, [PTR, I64] + [PTR] * GATHER_GROUP)
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    glue(fn)
    dst, rb, *srcs = fn.args
    dst.name, rb.name = "dst", "row_bytes"
    for k, a in enumerate(srcs):
        a.name = f"src{k}"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vt = ir.VectorType(I32, _GATHER_PIECE // 4)
    turn = 2 * _GATHER_PIECE
    trips = b.udiv(rb, i64(turn), name="trips")
    dsts = [
        b.gep(dst, [b.mul(rb, i64(k))], inbounds=True, source_etype=I8) for k in range(len(srcs))
    ]
    with loop(b, trips, name="piece") as t:
        off = b.mul(t, i64(turn))
        for half in (0, _GATHER_PIECE):
            at = b.add(off, i64(half)) if half else off
            for s_row, d_row in zip(srcs, dsts):
                v = b.load(b.gep(s_row, [at], inbounds=True, source_etype=I8), typ=vt, align=1)
                b.store(v, b.gep(d_row, [at], inbounds=True, source_etype=I8), align=1)
    done = b.mul(trips, i64(turn), name="done")
    tail = b.sub(rb, done, name="tail")
    memcpy = _memcpy(module)
    with b.if_then(b.icmp_signed(">", tail, i64(0))):
        for s_row, d_row in zip(srcs, dsts):
            s_at = b.gep(s_row, [done], inbounds=True, source_etype=I8)
            d_at = b.gep(d_row, [done], inbounds=True, source_etype=I8)
            b.call(memcpy, [d_at, s_at, tail, ir.Constant(I1, 0)])
    b.ret_void()
    return fn


def _gather_rows(
    b: ir.IRBuilder,
    fn: ir.Function,
    memcpy: ir.Function,
    order: ir.Value,
    base: ir.Value,
    count: ir.Value,
    n: ir.Value,
    batched: Sequence[tuple[Any, ...]],
    bad: ir.Block,
) -> None:
    """Emit: for r < count, copy row order[base + r] of every batched input (row bytes,
    data, stage[, scan]) to row r of its stage; an index outside 0..n-1 branches to ``bad``.
    A scan (copy_scanner function, scanner function, check, dtype, i32 flag pointer) copies
    the row through the copy-scanner instead of memcpy and ORs its result into the flag.

    Inputs whose rows are GATHER_GROUP_MIN_BYTES or longer are copied GATHER_GROUP rows at a
    time (_gather_group) and their scan, if any, then tests the group where it was copied to
    (in L1: the same elements, the same OR); the rest row by row."""
    wide = [e for e in batched if e[0] >= GATHER_GROUP_MIN_BYTES]
    rest_from: ir.Value = i64(0)
    if wide:
        group = _gather_group(b.module)
        groups = b.sdiv(count, i64(GATHER_GROUP), name="groups")
        with loop(b, groups, name="rg") as q:
            r0 = b.mul(q, i64(GATHER_GROUP), name="r0")
            rows, inside = [], None
            for k in range(GATHER_GROUP):
                r = b.add(r0, i64(k)) if k else r0
                row = _row_index(b, order, base, r)
                ok = b.and_(b.icmp_signed(">=", row, i64(0)), b.icmp_signed("<", row, n))
                inside = ok if inside is None else b.and_(inside, ok)
                rows.append((r, row))
            ok_bb = fn.append_basic_block("group_ok")
            b.cbranch(inside, ok_bb, bad)
            b.position_at_end(ok_bb)
            for rb, src, stage, *scan in wide:
                srcs = [
                    b.gep(src, [b.mul(row, i64(rb))], inbounds=True, source_etype=I8)
                    for _, row in rows
                ]
                d_ptr = b.gep(stage, [b.mul(r0, i64(rb))], inbounds=True, source_etype=I8)
                b.call(group, [d_ptr, i64(rb), *srcs])
                if scan and scan[0] is not None:
                    _, scanner, chk, dt, flag = scan[0]
                    elems = GATHER_GROUP * (rb // DTYPE_INFO[dt].itemsize)
                    hit = b.call(scanner, [d_ptr, i64(elems), i64(chk.bound), i64(chk.lowest)])
                    b.store(b.or_(b.load(flag, typ=I32), hit), flag)
            narrow = [e for e in batched if e[0] < GATHER_GROUP_MIN_BYTES]
            for r, row in rows if narrow else ():
                _copy_row(b, memcpy, row, r, narrow)
        rest_from = b.mul(groups, i64(GATHER_GROUP), name="rest_from")
    with counted_loop(b, rest_from, count, name="r") as r:
        row = _row_index(b, order, base, r.iv)
        ok_bb = fn.append_basic_block("row_ok")
        inside = b.and_(b.icmp_signed(">=", row, i64(0)), b.icmp_signed("<", row, n))
        b.cbranch(inside, ok_bb, bad)
        b.position_at_end(ok_bb)
        _copy_row(b, memcpy, row, r.iv, batched)


def _row_index(b: ir.IRBuilder, order: ir.Value, base: ir.Value, r: ir.Value) -> ir.Value:
    """order[base + r], the data set's row that row r of the batch takes."""
    at = b.gep(order, [b.add(base, r)], inbounds=True, source_etype=I64)
    return b.load(at, typ=I64, name="row")


def _copy_row(
    b: ir.IRBuilder,
    memcpy: ir.Function,
    row: ir.Value,
    r: ir.Value,
    batched: Sequence[tuple[Any, ...]],
) -> None:
    """Row ``row`` of every input in ``batched`` to row ``r`` of its stage (see _gather_rows)."""
    for rb, src, stage, *scan in batched:
        s_ptr = b.gep(src, [b.mul(row, i64(rb))], inbounds=True, source_etype=I8)
        d_ptr = b.gep(stage, [b.mul(r, i64(rb))], inbounds=True, source_etype=I8)
        if not scan or scan[0] is None:
            b.call(memcpy, [d_ptr, s_ptr, i64(rb), ir.Constant(I1, 0)])
            continue
        copy, _, chk, dt, flag = scan[0]
        elems = rb // DTYPE_INFO[dt].itemsize
        hit = b.call(copy, [d_ptr, s_ptr, i64(elems), i64(chk.bound), i64(chk.lowest)])
        b.store(b.or_(b.load(flag, typ=I32), hit), flag)


# ---------------------------------------------------------------- the sharded update

# int32_t NAME_apply_update_shard(void *params, void *state, void *workspace,
#     void *const *inputs, int64_t lo, int64_t hi, void *const *grads, int64_t ranks)
SHARD_TYPE = ir.FunctionType(I32, [PTR, PTR, PTR, PTR, I64, I64, PTR, I64])
SHARD_ALIGN = 64  # shard bounds are multiples of this many bytes of elements (cache lines)
SHARD_BLOCK = 1024  # elements summed, then updated, per pass (in L1: ~4 KiB per operand)
SUMMED_RANKS = 4  # up to this many ranks, the update sums the gradients in registers


@dataclass(frozen=True)
class ShardPlan:
    """How ``NAME_apply_update`` splits by elements (update_shard_plan): its one flat update
    kernel (fuse_optimizer: every param's elements, padding included, in one loop) at index
    ``kernel`` of the schedule runs over ``elements`` values of ``itemsize`` bytes; element
    ``i`` of every full-size operand and result lies at ``offset + i * itemsize`` of its
    region (``buffers``: (region, offset) pairs, "param", "grad" or "state"); every other
    kernel reads and writes scalars only (the step counter, Adam's bias corrections)."""

    kernel: int
    elements: int
    itemsize: int
    buffers: tuple[tuple[str, int], ...]

    def offset(self, region: str) -> int:
        """The byte offset of element 0 in ``region`` (the first such buffer's)."""
        return next(off for reg, off in self.buffers if reg == region)

    def bounds(self, parts: int, index: int) -> tuple[int, int]:
        """Elements [lo, hi) of shard ``index`` of ``parts``: nearly equal runs of whole
        SHARD_ALIGN-byte lines (the last one shorter), so that no two shards share a line."""
        line = max(1, SHARD_ALIGN // self.itemsize)
        first, count = _shard(-(-self.elements // line), parts, index)
        return min(self.elements, first * line), min(self.elements, (first + count) * line)


def _shard(total: int, parts: int, index: int) -> tuple[int, int]:
    q, r = divmod(total, parts)
    return index * q + min(index, r), q + (1 if index < r else 0)


def update_shard_plan(sched: Schedule) -> ShardPlan | None:
    """The ShardPlan of an ``apply_update`` schedule, or None when it cannot run by shards:
    no single flat update kernel, another kernel touching a value of more than one element
    (a gradient-norm clip reads every gradient), or a full-size buffer outside the param,
    grad and state regions."""
    from .kernels import distinct_buffers

    g = sched.graph
    flats = [i for i, k in enumerate(sched.kernels) if k.elements and k.kind == "elementwise"]
    if len(flats) != 1:
        return None
    kidx = flats[0]
    for i, k in enumerate(sched.kernels):
        if i == kidx:
            continue
        vals = set(k.nodes) | {x for nd in k.nodes for x in g[nd].inputs}
        if any(g[v].type.size(1) != 1 or g[v].type.is_batched for v in vals):
            return None
    kernel = sched.kernels[kidx]
    shape = g[kernel.nodes[-1]].type.shape
    if g[kernel.nodes[-1]].type.size(1) <= 1:
        return None
    buffers = []
    for v in distinct_buffers(sched, shard_values(sched, kernel)):
        buf = sched.buffers[v]
        if g[v].type.shape != shape:
            if g[v].type.size(1) != 1:
                return None
            continue  # a scalar operand: the same pointer for every shard
        if buf.region not in ("param", "grad", "state") or buf.offset_row:
            return None
        buffers.append((buf.region, buf.offset))
    regions = {reg for reg, _ in buffers}
    if not {"param", "grad"} <= regions:
        return None
    itemsize = g[kernel.nodes[-1]].type.itemsize
    return ShardPlan(kidx, kernel.elements, itemsize, tuple(buffers))


def shard_values(sched: Schedule, kernel: Any) -> list[str]:
    """The kernel's values (operands, then each node), as ModuleBuilder lists them."""
    g = sched.graph
    values: list[str] = []
    for name in kernel.nodes:
        for i in g[name].inputs:
            if i not in values:
                values.append(i)
        values.append(name)
    return values
