"""graphc.codegen.threads: a pool of worker threads that lives in the generated module itself.

The same code serves the in-process JIT and exported shared libraries: the workers are POSIX
threads (``pthread_create``), started by ``NAME_set_num_threads(n)`` and kept until it is called
again; kernels hand them work through ``graphc.pool.run(task, ctx, count)``, which calls
``task(ctx, t, count)`` once for every t in 0..count-1, on the calling thread and the workers
together, and returns when all calls have returned.

Protocol (all state is in module globals; orderings are C11's, as LLVM defines them):

- ``work`` packs the dispatch's generation (high 32 bits) and the next unclaimed task index (low
  32 bits). The caller publishes a dispatch by storing ``(gen + 1) << 32 | 1`` after it wrote
  the task, context and count: index 0 is the caller's, so a split runs the same share on the
  same core every call (its data stays in that core's cache) when the workers are on time;
  anyone (the caller too) claims the other indices t with a compare-and-swap
  ``gen<<32 | t -> gen<<32 | t+1``, so each index runs exactly once, and a worker that looks at
  an old generation never claims in a newer one. A successful claim also proves the fields it
  read before are that generation's: the caller rewrites them only after every index of the
  generation has run (``done == count``, release/acquire).
- Workers poll ``work`` for a new generation (SPIN_POLLS times, with ``pause`` on x86), then sleep
  on a condition variable; the caller broadcasts only when ``sleepers`` > 0. The worker counts
  itself as a sleeper and re-checks ``work`` under the mutex, both seq_cst, and the caller stores
  ``work`` then reads ``sleepers``, both seq_cst: one of the two sees the other, so no wake-up
  is lost (Dekker's argument).
- The caller also stores its floating-point control register (``fpmode``) with the task; a
  thread that claims tasks first takes that mode, so a training entry's products are computed
  with subnormals flushed on every thread (codegen/fpenv.py) and results still do not depend
  on the thread count.
- The caller claims tasks like a worker, so a late or descheduled worker costs nothing but its
  share; then it waits for ``done == count``. A second caller while a dispatch runs (say, two
  Python threads calling entry points of one module) runs its tasks alone instead of waiting.

How tasks split the work does not depend on which thread runs them, so results do not depend
on the thread count when the tasks compute disjoint outputs in a fixed order (the GEMM's do:
codegen/gemm.py splits C into blocks, each computed as in the one-thread kernel).

After a fork() the child has none of the workers: ``NAME_forget_threads`` resets the pool to one
thread (the JIT runtime calls it from ``os.register_at_fork``, exported libraries from a
``pthread_atfork`` child handler).

The mutex and condition variable are zero-initialized storage of 128 bytes each: glibc's and
musl's PTHREAD_MUTEX_INITIALIZER / PTHREAD_COND_INITIALIZER are all zeros and smaller than that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from llvmlite import ir

from graphc.ir.errors import ArgumentError

from .fpenv import has_flush_mode, read_mode, write_mode
from .lltypes import I32, I64, PTR, VOID, glue


def thread_count_env(var: str) -> int | None:
    """The thread count in environment variable ``var`` (GRAPHC_THREADS,
    GRAPHC_COMPILE_THREADS); None when unset or blank.

    Raises:
        ArgumentError: set to anything but a whole number >= 1 ("abc", "1.5", "0", "-2"),
            naming the variable and its value (it was ignored silently).
    """
    raw = os.environ.get(var)
    env = (raw or "").strip()
    if not env:
        return None
    if not (env.isascii() and env.isdigit()) or int(env) < 1:
        raise ArgumentError(
            f"{var}={raw!r}: expected a whole number of threads >= 1 (unset it to use every "
            "core this process may run on)"
        )
    return int(env)


def threads_or_cores(var: str) -> int:
    """The thread count in ``var`` (thread_count_env) when set, else the cores this process
    may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that is missing).

    Raises:
        ArgumentError: ``var`` is set but not a whole number >= 1.
    """
    env = thread_count_env(var)
    if env is not None:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


TASK_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])
"""void task(ptr ctx, i64 index, i64 count)"""

MAX_THREADS = 64  # NAME_set_num_threads clamps to this
WORKER_STACK_BYTES = 8 << 20  # each worker's stack (glibc's usual default; musl's is 128 KiB)
SPIN_POLLS = 1 << 15  # a worker polls this many times (~1 ms with pause) before it sleeps
WAIT_POLLS = 1 << 10  # the caller polls `done` this many times between sched_yield calls


@dataclass(frozen=True)
class ThreadPool:
    """The pool's functions in one module."""

    run: ir.Function  # void run(ptr task, ptr ctx, i64 count)
    threads: ir.GlobalVariable  # i64: threads that run tasks (1: the caller alone)
    set_threads: ir.Function | None  # i32 NAME_set_num_threads(i32 n) (None: declared pool)
    get_threads: ir.Function | None  # i32 NAME_get_num_threads()


def thread_pool(module: ir.Module, prefix: str) -> ThreadPool:
    """The module's pool, emitted on first use; ``prefix`` names the exported functions
    ``PREFIX_set_num_threads(int32 n) -> int32`` (0, or pthread_create's error code after
    starting as many workers as it could) and ``PREFIX_get_num_threads() -> int32``, and the
    pool's own symbols ``PREFIX.pool.*``. ``run`` and ``threads`` have hidden external linkage,
    so that another module of the same program can use them (declare_thread_pool)."""
    g = module.globals
    if f"{prefix}.pool.run" in g and not g[f"{prefix}.pool.run"].is_declaration:
        return ThreadPool(
            g[f"{prefix}.pool.run"],
            g[f"{prefix}.pool.threads"],
            g[f"{prefix}_set_num_threads"],
            g[f"{prefix}_get_num_threads"],
        )
    return _PoolEmitter(module, prefix).emit()


def declare_thread_pool(module: ir.Module, prefix: str) -> ThreadPool:
    """``run`` and ``threads`` of the pool that another module of the program defines
    (thread_pool(other, prefix)): for code compiled separately and linked with it."""
    g = module.globals
    run = g.get(f"{prefix}.pool.run") or ir.Function(
        module, ir.FunctionType(VOID, [PTR, PTR, I64]), name=f"{prefix}.pool.run"
    )
    threads = g.get(f"{prefix}.pool.threads")
    if threads is None:
        threads = ir.GlobalVariable(module, I64, name=f"{prefix}.pool.threads")
        threads.align = 8
    return ThreadPool(run, threads, None, None)


class _PoolEmitter:
    def __init__(self, module: ir.Module, prefix: str) -> None:
        self.m, self.prefix, self.sym = module, prefix, f"{prefix}.pool."
        self.pause = _is_x86(module)

    # -- globals and declarations --------------------------------------------------------------

    def var(self, name: str, typ: ir.Type, init=0, align: int = 8) -> ir.GlobalVariable:
        g = ir.GlobalVariable(self.m, typ, name=self.sym + name)
        g.linkage = "internal"
        g.initializer = ir.Constant(typ, init) if not isinstance(init, ir.Constant) else init
        g.align = align
        return g

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        if name in self.m.globals:
            return self.m.globals[name]
        return ir.Function(self.m, ir.FunctionType(ret, args), name=name)

    def function(self, name: str, ret: ir.Type, args: list[ir.Type], internal: bool = True):
        fn = ir.Function(self.m, ir.FunctionType(ret, args), name=name)
        if internal:
            fn.linkage = "internal"
        fn.attributes.add("nounwind")
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def emit(self) -> ThreadPool:
        # `work` and `done` are written by every thread: each on a cache line of its own.
        self.work = self.var("work", I64, align=64)
        self.done = self.var("done", I64, align=64)
        self.task = self.var("task", PTR, ir.Constant(PTR, None), align=64)
        self.ctx = self.var("ctx", PTR, ir.Constant(PTR, None))
        self.count = self.var("count", I64)
        # the dispatching thread's floating-point control register, which the workers take
        # for its tasks (a training entry flushes subnormals: codegen/fpenv.py)
        self.flush = has_flush_mode(self.m)
        self.fpmode = self.var("fpmode", I64)
        self.threads = self.var("threads", I64, 1)
        self.threads.linkage, self.threads.storage_class = "", "hidden"  # external, hidden
        self.sleepers = self.var("sleepers", I64, align=64)
        self.stop = self.var("stop", I64)
        self.busy = self.var("busy", I64)
        self.workers = self.var("workers", I64)
        self.tids = self.var("tids", ir.ArrayType(I64, MAX_THREADS), None)
        storage = ir.ArrayType(I64, 16)
        self.mutex = self.var("mutex", storage, None, align=16)
        self.cond = self.var("cond", storage, None, align=16)
        self.lock = self.declare("pthread_mutex_lock", I32, [PTR])
        self.unlock = self.declare("pthread_mutex_unlock", I32, [PTR])
        self.wait = self.declare("pthread_cond_wait", I32, [PTR, PTR])
        self.broadcast = self.declare("pthread_cond_broadcast", I32, [PTR])
        self.create = self.declare("pthread_create", I32, [PTR, PTR, PTR, PTR])
        # pthread_attr_t: 56 bytes (glibc, musl on 64-bit), 64 (glibc aarch64); 128 reserved
        self.attr = self.var("attr", ir.ArrayType(I64, 16), None, align=16)
        self.attr_init = self.declare("pthread_attr_init", I32, [PTR])
        self.attr_stack = self.declare("pthread_attr_setstacksize", I32, [PTR, I64])
        self.attr_destroy = self.declare("pthread_attr_destroy", I32, [PTR])
        self.join = self.declare("pthread_join", I32, [I64, PTR])
        self.yield_ = self.declare("sched_yield", I32, [])
        self.claim_fn = self.emit_claim()
        worker = self.emit_worker()
        run = self.emit_run()
        set_threads = self.emit_set_threads(worker)
        get_threads, b = self.function(f"{self.prefix}_get_num_threads", I32, [], internal=False)
        glue(get_threads)  # called once in a while, not per step
        b.ret(b.trunc(b.load_atomic(self.threads, "monotonic", 8), I32))
        # i64 NAME_pool_dispatches(): dispatches that woke the pool so far (the generation in
        # `work`, mod 2^32). Tests use it to check that small work stays on the caller; the
        # libraries do not export it (aot.object_module makes it internal).
        _dispatches, b = self.function(f"{self.prefix}_pool_dispatches", I64, [], internal=False)
        glue(_dispatches)  # called once in a while, not per step
        b.ret(self.gen_of(b, b.load_atomic(self.work, "monotonic", 8, typ=I64)))
        self.emit_forget_threads()
        return ThreadPool(run, self.threads, set_threads, get_threads)

    def emit_forget_threads(self) -> None:
        """void NAME_forget_threads(void): for the child of a fork(), which has none of the
        parent's workers: back to one thread, with a fresh mutex and condition variable (the
        parent may have held them at the fork), without joining anything. Call it only there
        (the runtime does, through os.register_at_fork; libraries through pthread_atfork)."""
        _fn, b = self.function(f"{self.prefix}_forget_threads", VOID, [], internal=False)
        glue(_fn)  # called once in a while, not per step
        zero = ir.Constant(I64, 0)
        for var in (self.workers, self.sleepers, self.stop, self.busy):
            _store_atomic(b, zero, var, "monotonic", 8)
        _store_atomic(b, ir.Constant(I64, 1), self.threads, "monotonic", 8)
        for storage in (self.mutex, self.cond):
            b.store(ir.Constant(storage.value_type, None), storage)
        b.ret_void()

    # -- small helpers ---------------------------------------------------------------------------

    def relax(self, b: ir.IRBuilder) -> None:
        """A spin-wait hint (x86 ``pause``): lets the other hyperthread run, saves power."""
        if self.pause:
            b.call(self.declare("llvm.x86.sse2.pause", VOID, []), [])

    @staticmethod
    def gen_of(b: ir.IRBuilder, w: ir.Value) -> ir.Value:
        return b.lshr(w, ir.Constant(I64, 32))

    def wake_all(self, b: ir.IRBuilder) -> None:
        b.call(self.lock, [self.mutex])
        b.call(self.broadcast, [self.cond])
        b.call(self.unlock, [self.mutex])

    # -- claim: run unclaimed tasks of one generation ----------------------------------------------

    def emit_claim(self) -> ir.Function:
        """void claim(i64 gen): claim and run task indices of dispatch `gen` until none is left."""
        fn, b = self.function(self.sym + "claim", VOID, [I64])
        fn.attributes.add("noinline")
        gen = fn.args[0]
        task = b.load_atomic(self.task, "monotonic", 8, typ=PTR)
        ctx = b.load_atomic(self.ctx, "monotonic", 8, typ=PTR)
        count = b.load_atomic(self.count, "monotonic", 8, typ=I64)
        if self.flush:  # run the tasks under the dispatcher's mode (stored with task: see run)
            write_mode(b, self.m, b.load_atomic(self.fpmode, "monotonic", 8, typ=I64))
        first = b.load_atomic(self.work, "acquire", 8, typ=I64)
        entry = b.block
        head = b.append_basic_block("head")
        try_ = b.append_basic_block("try")
        run = b.append_basic_block("run")
        out = b.append_basic_block("out")
        b.branch(head)
        b.position_at_end(head)
        w = b.phi(I64, name="w")
        w.add_incoming(first, entry)
        index = b.and_(w, ir.Constant(I64, 0xFFFFFFFF), name="index")
        mine = b.and_(
            b.icmp_unsigned("==", self.gen_of(b, w), gen), b.icmp_unsigned("<", index, count)
        )
        b.cbranch(mine, try_, out)
        b.position_at_end(try_)
        pair = b.cmpxchg(self.work, w, b.add(w, ir.Constant(I64, 1)), "acq_rel", "acquire")
        now, ok = b.extract_value(pair, 0), b.extract_value(pair, 1)
        w.add_incoming(now, try_)
        b.cbranch(ok, run, head)
        b.position_at_end(run)
        b.call(_Callee(task, TASK_TYPE), [ctx, index, count])
        b.atomic_rmw("add", self.done, ir.Constant(I64, 1), "release")
        after = b.load_atomic(self.work, "acquire", 8, typ=I64)
        w.add_incoming(after, run)
        b.branch(head)
        b.position_at_end(out)
        b.ret_void()
        return fn

    # -- worker thread ---------------------------------------------------------------------------

    def emit_worker(self) -> ir.Function:
        """ptr worker(ptr): poll, sleep, claim; returns when `stop` is set."""
        fn, b = self.function(self.sym + "worker", PTR, [PTR])
        null = ir.Constant(PTR, None)
        start = self.gen_of(b, b.load_atomic(self.work, "acquire", 8, typ=I64))
        entry = b.block
        top = b.append_basic_block("top")
        poll = b.append_basic_block("poll")
        again = b.append_basic_block("again")
        sleep = b.append_basic_block("sleep")
        wait_head = b.append_basic_block("wait.head")
        wait_body = b.append_basic_block("wait.body")
        woke = b.append_basic_block("woke")
        run = b.append_basic_block("run")
        finish = b.append_basic_block("finish")
        b.branch(top)

        b.position_at_end(top)
        seen = b.phi(I64, name="seen")
        seen.add_incoming(start, entry)
        b.branch(poll)

        b.position_at_end(poll)
        polls = b.phi(I64, name="polls")
        polls.add_incoming(ir.Constant(I64, 0), top)
        gen = self.gen_of(b, b.load_atomic(self.work, "acquire", 8, typ=I64))
        stopped = b.icmp_unsigned(
            "!=", b.load_atomic(self.stop, "acquire", 8, typ=I64), ir.Constant(I64, 0)
        )
        with b.if_then(stopped, likely=False):
            b.ret(null)
        new = b.icmp_unsigned("!=", gen, seen)
        b.cbranch(new, run, again)

        b.position_at_end(again)
        self.relax(b)
        more = b.add(polls, ir.Constant(I64, 1))
        polls.add_incoming(more, again)
        b.cbranch(b.icmp_unsigned("<", more, ir.Constant(I64, SPIN_POLLS)), poll, sleep)

        b.position_at_end(sleep)
        b.call(self.lock, [self.mutex])
        b.atomic_rmw("add", self.sleepers, ir.Constant(I64, 1), "seq_cst")
        b.branch(wait_head)
        b.position_at_end(wait_head)
        g2 = self.gen_of(b, b.load_atomic(self.work, "seq_cst", 8, typ=I64))
        halt = b.icmp_unsigned(
            "!=", b.load_atomic(self.stop, "seq_cst", 8, typ=I64), ir.Constant(I64, 0)
        )
        b.cbranch(b.and_(b.icmp_unsigned("==", g2, seen), b.not_(halt)), wait_body, woke)
        b.position_at_end(wait_body)
        b.call(self.wait, [self.cond, self.mutex])
        b.branch(wait_head)
        b.position_at_end(woke)
        b.atomic_rmw("sub", self.sleepers, ir.Constant(I64, 1), "seq_cst")
        b.call(self.unlock, [self.mutex])
        b.cbranch(halt, finish, run)

        b.position_at_end(run)
        gen_now = self.gen_of(b, b.load_atomic(self.work, "acquire", 8, typ=I64))
        b.call(self.claim_fn, [gen_now])
        seen.add_incoming(gen_now, run)
        b.branch(top)

        b.position_at_end(finish)
        b.ret(null)
        return fn

    # -- dispatch ---------------------------------------------------------------------------------

    def emit_run(self) -> ir.Function:
        """void run(ptr task, ptr ctx, i64 count): task(ctx, t, count) for t < count, in parallel."""
        fn, b = self.function(self.sym + "run", VOID, [PTR, PTR, I64], internal=False)
        fn.linkage = "hidden"  # printed where LLVM expects the visibility: external, hidden
        task, ctx, count = fn.args
        task = _Callee(task, TASK_TYPE)
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        threads = b.load_atomic(self.threads, "monotonic", 8, typ=I64)
        serial = b.append_basic_block("serial")
        try_ = b.append_basic_block("try")
        go = b.append_basic_block("go")
        b.cbranch(
            b.or_(b.icmp_signed("<=", count, one), b.icmp_signed("<=", threads, one)), serial, try_
        )

        b.position_at_end(try_)
        got = b.extract_value(b.cmpxchg(self.busy, zero, one, "acquire", "monotonic"), 1)
        b.cbranch(got, go, serial)

        b.position_at_end(serial)
        pre = b.block
        head = b.append_basic_block("serial.head")
        body = b.append_basic_block("serial.body")
        done_serial = b.append_basic_block("serial.done")
        b.branch(head)
        b.position_at_end(head)
        t = b.phi(I64, name="t")
        t.add_incoming(zero, pre)
        b.cbranch(b.icmp_signed("<", t, count), body, done_serial)
        b.position_at_end(body)
        b.call(task, [ctx, t, count])
        t.add_incoming(b.add(t, one), body)
        b.branch(head)
        b.position_at_end(done_serial)
        b.ret_void()

        b.position_at_end(go)
        _store_atomic(b, task, self.task, "monotonic", 8)
        _store_atomic(b, ctx, self.ctx, "monotonic", 8)
        _store_atomic(b, count, self.count, "monotonic", 8)
        if self.flush:
            _store_atomic(b, read_mode(b, self.m), self.fpmode, "monotonic", 8)
        _store_atomic(b, zero, self.done, "monotonic", 8)
        old = b.load_atomic(self.work, "monotonic", 8, typ=I64)
        gen = b.and_(b.add(self.gen_of(b, old), one), ir.Constant(I64, 0xFFFFFFFF), name="gen")
        # index 0 is claimed by the caller in the same store: with one worker per core, each
        # thread then runs the same share of a split every call (the GEMV's columns of B stay
        # in that core's L2), unless a worker is late and the caller claims its share too
        _store_atomic(b, b.or_(b.shl(gen, ir.Constant(I64, 32)), one), self.work, "seq_cst", 8)
        asleep = b.load_atomic(self.sleepers, "seq_cst", 8, typ=I64)
        with b.if_then(b.icmp_signed(">", asleep, zero), likely=False):
            self.wake_all(b)
        b.call(task, [ctx, zero, count])
        b.atomic_rmw("add", self.done, one, "release")
        b.call(self.claim_fn, [gen])
        # wait for tasks other threads claimed
        pre = b.block
        head = b.append_basic_block("wait.head")
        body = b.append_basic_block("wait.body")
        out = b.append_basic_block("wait.out")
        b.branch(head)
        b.position_at_end(head)
        polls = b.phi(I64, name="polls")
        polls.add_incoming(zero, pre)
        finished = b.load_atomic(self.done, "acquire", 8, typ=I64)
        b.cbranch(b.icmp_signed(">=", finished, count), out, body)
        b.position_at_end(body)
        self.relax(b)
        nxt = b.add(polls, one)
        with b.if_then(b.icmp_signed(">=", nxt, ir.Constant(I64, WAIT_POLLS)), likely=False):
            b.call(self.yield_, [])
        polls.add_incoming(
            b.select(b.icmp_signed(">=", nxt, ir.Constant(I64, WAIT_POLLS)), zero, nxt), b.block
        )
        b.branch(head)
        b.position_at_end(out)
        _store_atomic(b, zero, self.busy, "release", 8)
        b.ret_void()
        return fn

    # -- thread count -------------------------------------------------------------------------------

    def emit_set_threads(self, worker: ir.Function) -> ir.Function:
        """i32 NAME_set_num_threads(i32 n): join the workers, start n - 1 new ones (n clamped to
        1..MAX_THREADS). Not to be called while an entry point of this module runs."""
        fn, b = self.function(f"{self.prefix}_set_num_threads", I32, [I32], internal=False)
        glue(fn)  # called once in a while, not per step
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        n = b.sext(fn.args[0], I64)
        n = b.select(b.icmp_signed("<", n, one), one, n)
        n = b.select(
            b.icmp_signed(">", n, ir.Constant(I64, MAX_THREADS)),
            ir.Constant(I64, MAX_THREADS),
            n,
            name="n",
        )
        _store_atomic(b, one, self.threads, "monotonic", 8)
        running = b.load_atomic(self.workers, "monotonic", 8, typ=I64)
        with b.if_then(b.icmp_signed(">", running, zero)):
            _store_atomic(b, one, self.stop, "seq_cst", 8)
            self.wake_all(b)
            pre = b.block
            head = b.append_basic_block("join.head")
            body = b.append_basic_block("join.body")
            out = b.append_basic_block("join.out")
            b.branch(head)
            b.position_at_end(head)
            i = b.phi(I64, name="i")
            i.add_incoming(zero, pre)
            b.cbranch(b.icmp_signed("<", i, running), body, out)
            b.position_at_end(body)
            tid = b.load(b.gep(self.tids, [zero, i], inbounds=True), typ=I64)
            b.call(self.join, [tid, ir.Constant(PTR, None)])
            i.add_incoming(b.add(i, one), body)
            b.branch(head)
            b.position_at_end(out)
            _store_atomic(b, zero, self.stop, "seq_cst", 8)
            _store_atomic(b, zero, self.workers, "monotonic", 8)
        # start n - 1 workers, each with a stack of WORKER_STACK_BYTES: a worker packs a GEMM
        # block's operands on its stack (up to 384 KiB; codegen/gemm.py's emit_packed),
        # above musl's 128 KiB default
        attr = self.attr
        have_attr = b.icmp_signed("==", b.call(self.attr_init, [attr]), ir.Constant(I32, 0))
        with b.if_then(have_attr):
            b.call(self.attr_stack, [attr, ir.Constant(I64, WORKER_STACK_BYTES)])
        attr_arg = b.select(have_attr, attr, ir.Constant(PTR, None))
        pre = b.block
        head = b.append_basic_block("start.head")
        body = b.append_basic_block("start.body")
        started = b.append_basic_block("start.ok")
        failed = b.append_basic_block("start.failed")
        out = b.append_basic_block("start.out")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name="k")
        i.add_incoming(zero, pre)
        b.cbranch(b.icmp_signed("<", i, b.sub(n, one)), body, out)
        b.position_at_end(body)
        slot = b.gep(self.tids, [zero, i], inbounds=True)
        rc = b.call(self.create, [slot, attr_arg, worker, ir.Constant(PTR, None)])
        b.cbranch(b.icmp_signed("==", rc, ir.Constant(I32, 0)), started, failed)
        b.position_at_end(started)
        nxt = b.add(i, one)
        _store_atomic(b, nxt, self.workers, "monotonic", 8)
        i.add_incoming(nxt, started)
        b.branch(head)
        b.position_at_end(failed)  # run with the workers that did start
        _store_atomic(b, b.add(i, one), self.threads, "release", 8)
        with b.if_then(have_attr):
            b.call(self.attr_destroy, [attr])
        b.ret(rc)
        b.position_at_end(out)
        with b.if_then(have_attr):
            b.call(self.attr_destroy, [attr])
        _store_atomic(b, n, self.threads, "release", 8)
        b.ret(ir.Constant(I32, 0))
        return fn


def _store_atomic(
    b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, ordering: str, align: int
) -> None:
    """An atomic store (llvmlite's IRBuilder.store_atomic still compares typed pointees)."""
    b._insert(ir.instructions.StoreAtomicInstr(b.block, value, ptr, ordering, align))


class _Callee:
    """A function pointer with its function type, which llvmlite's call() reads from the callee."""

    def __init__(self, value: ir.Value, function_type: ir.FunctionType) -> None:
        self.value, self.function_type, self.type = value, function_type, value.type

    def get_reference(self) -> str:
        return self.value.get_reference()


def _is_x86(module: ir.Module) -> bool:
    """Whether the module is built for x86 (its triple, set by whoever builds it for a target;
    never the host's: a library cross-compiled on x86 for aarch64 must not use ``pause``)."""
    return str(module.triple).startswith(("x86_64", "i386", "i686"))
