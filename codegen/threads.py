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
- Workers poll ``work`` for a new generation (with ``pause`` on x86) for SPIN_NS of wall-clock
  time after their last task, only PROBE_SPIN_NS after a probe's empty task (a probe that the
  scale's refusal made is followed by no work: a pool in the away regime wakes its worker for
  the probes alone), then sleep
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

Work is split only where it pays for the dispatch: the kernels split work of at least a
compile-time minimum (codegen/gemm.py's PARALLEL_MIN_MACS and DIRECT_PARALLEL_MIN,
codegen/kernels.py's PARALLEL_MIN_ELEMENTS, codegen/checks.py's SCAN_PARALLEL_MIN, each measured
between cores that share a cache) times the pool's ``scale``, which the pool derives from a
dispatch cost it measures itself (split_pays):

- ``probe`` times PROBE_ROUNDS empty dispatches (publish, a worker claims and finishes the one
  task, the caller sees ``done``; the caller does not claim it) with ``clock_gettime`` and keeps
  the fastest: cache-line round trips between the threads, plus the protocol. The pool's
  ``cost`` (ns) is the median of the last PROBE_WINDOW probes, so one probe that found the
  worker late (its vCPU not running at that instant) changes nothing; it takes two of three.
- ``scale`` (scale_of) is 1 below FAR_NS: the threads' cores share a cache (70-100 ns
  measured) and the thresholds hold as measured. From FAR_NS the threads sit on cores that do
  not (a VM whose vCPUs move between such cores: 310-390 ns measured); then every line of a
  split operand that crosses between them costs several times more, and only work FAR_SCALE
  times the thresholds is split. Beyond FAR_SCALE * NS_PER_SCALE ns (a worker that is often
  not there) the factor is cost / NS_PER_SCALE: split work stays some 30-90 times what a
  dispatch costs, as the thresholds are at a near cost. The factor stops at MAX_SCALE: a
  product of 2^28 multiply-adds or a loop of 2^27 elements always splits, so no measurement
  puts a large GEMM on one thread. So small work stays on the caller where a dispatch is dear,
  and two threads are not slower than one; large work splits in every regime.
- The pool starts (``NAME_set_num_threads``) with its window at START_NS (near) and one probe;
  then it probes
  once at the first split decision (a split, or one the scale refused: ``declined``) at least
  PROBE_EVERY_NS after the last probe (wall-clock time: the clock is read at each decision on
  work of at least a threshold while the cost is measured), so a process whose threads move
  to other cores follows within about 0.1 s, however few or many decisions it makes. A probe
  costs some PROBE_ROUNDS dispatches (2-10 us; a millisecond or more when the worker does not
  come: then the next waits PROBE_SHARE times as long again, so probes take at most some 1.5%
  of the time) and changes no result: a split computes the same values as the caller alone.
  Its dispatches are not counted by ``NAME_pool_dispatches``.
- ``NAME_pool_dispatch_cost(ns)``: ns > 0 fixes the cost (no more probes; tests and benchmarks
  use it, and the runtime passes GRAPHC_DISPATCH_NS), ns == 0 measures now and goes back to
  probing, ns < 0 reads; returns the cost in ns (0: one thread, never measured).

After a fork() the child has none of the workers: ``NAME_forget_threads`` resets the pool to one
thread (the JIT runtime calls it from ``os.register_at_fork``, exported libraries from a
``pthread_atfork`` child handler).

The mutex and condition variable are zero-initialized storage of 128 bytes each: glibc's and
musl's PTHREAD_MUTEX_INITIALIZER / PTHREAD_COND_INITIALIZER are all zeros and smaller than that.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from llvmlite import ir

from graphc.ir.errors import ArgumentError

from .fpenv import has_flush_mode, read_mode, write_mode
from .lltypes import I32, I64, PTR, VOID, glue
from .loops import counted_loop


def thread_count_env(var: str) -> int | None:
    """The thread count in environment variable ``var`` (GRAPHC_THREADS,
    GRAPHC_COMPILE_THREADS); None when unset or blank.

    Raises:
        ArgumentError: set to anything but a whole number >= 1 ("abc", "1.5", "0", "-2"),
            naming the variable and its value (it was ignored silently).
    """
    return _positive_env(var, "threads", "unset it to use every core this process may run on")


def dispatch_ns_env() -> int | None:
    """GRAPHC_DISPATCH_NS: a fixed cost of one dispatch to the pool in ns, which the pool then
    uses instead of measuring it (split_pays; the tests fix it below FAR_NS so that which work
    splits does not depend on the machine's load); None when unset or blank.

    Raises:
        ArgumentError: set to anything but a whole number >= 1, naming the value.
    """
    hint = "unset it to let the thread pool measure its dispatch cost"
    return _positive_env("GRAPHC_DISPATCH_NS", "nanoseconds", hint)


def pool_call(engine, symbol: str, arg: int) -> int:
    """Call ``int64_t SYMBOL(int64_t arg)`` of the module ``engine`` (an llvmlite execution
    engine) runs, one of its pool's entries (``PREFIX_pool_dispatch_cost``, ``PREFIX_pool_
    observe``), and return its result; 0 when the module has no such symbol (no pool)."""
    addr = engine.get_function_address(symbol)
    return int(ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr)(arg)) if addr else 0


def _positive_env(var: str, unit: str, hint: str) -> int | None:
    """The whole number >= 1 in environment variable ``var``; None when unset or blank."""
    raw = os.environ.get(var)
    env = (raw or "").strip()
    if not env:
        return None
    if not (env.isascii() and env.isdigit()) or int(env) < 1:
        raise ArgumentError(f"{var}={raw!r}: expected a whole number of {unit} >= 1 ({hint})")
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


SCALES = ir.ArrayType(I64, 2)  # the pool's scale: one factor for PRODUCTS, one for LOOPS
TASK_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])
"""void task(ptr ctx, i64 index, i64 count)"""

MAX_THREADS = 64  # NAME_set_num_threads clamps to this
WORKER_STACK_BYTES = 8 << 20  # each worker's stack (glibc's usual default; musl's is 128 KiB)
SPIN_NS = 1_000_000  # a worker polls for this long (wall clock) after its last task, then sleeps
PROBE_SPIN_NS = 50_000  # ... only this long after a probe's empty task (no work followed it)
CLOCK_POLLS = 64  # a spinning worker reads the clock once every this many polls (~4 us here)
# Before (7d32873) the worker polled 2^15 times: 0.85-0.9 ms on the Zen 5 VM, a fraction of
# that on x86 cores whose pause takes 10-40 cycles, and as long after probes. Measured (pool9,
# benchmarks/README.md "Threads"): in 2-thread steps of 784-256-128-10 whose pool kept all work
# on the caller (cost >= 4 us; a busy process on the other vCPU), the worker's CPU time was
# 0.00-0.03 of the wall time before, 0.00-0.02 after, and 2 threads / 1 thread moved with the
# host's load (0.8-1.6 in both builds), not with the spin; after 3 probes the worker used
# 6.3-9.3 ms of CPU before, 2.3-2.5 ms after
WAIT_POLLS = 1 << 10  # the caller polls `done` this many times between sched_yield calls
# The split thresholds' factor from the probed cost of an empty dispatch (scale_of). Measured on
# the 2-core Zen 5 VM (benchmarks/README.md, "Dispatch"): the probe takes 80-100 ns while a
# cache-line round trip between the vCPUs takes 120-160 ns, and the 784-256-128-10 step runs at
# 2 threads in 0.53-0.60 of the 1-thread time; it takes 310-370 ns in the processes whose round
# trip takes 400-1700 ns, where a split step of batch 32 is 1.1-1.25x slower than 1 thread and
# one of batch 128 still 0.7x; where a worker does not come at all for a probe's PROBE_LATE
# rounds (its vCPU is busy), 0.1-0.8 ms, and even batch 512 runs 1.7-1.8x slower split.
FAR_NS = 200  # a probe at least this slow: the threads do not share a cache ...
FAR_SCALE = (64, 64)  # ... and split only work 64x the thresholds (a product of 2^24
# multiply-adds, a loop of 2^23 elements), products and loops (PRODUCTS, LOOPS) alike. With
# all thresholds at x1 there, Adam at batch 512 ran in 0.90 of the x64 time (the W1 update
# split), batch 32 in 1.1-2.4x the 1-thread time; loops at x1 with products at x64 were not
# measured (the update split moves half of W1 between the caches every step)
PRODUCTS, LOOPS = 0, 1
NS_PER_SCALE = 64  # from FAR_SCALE * NS_PER_SCALE ns (4 us) the factor grows with the cost:
# cost / NS_PER_SCALE, so split work stays some 30-90 times the dispatch cost (a threshold's
# work takes 2-6 us on one core, some 30-60 times the 70-100 ns of a near dispatch) ...
MAX_SCALE = 1 << 10  # ... up to this factor (reached from 65 us: a worker that did not come
# within a probe's patience, 0.1-0.8 ms here). Never more: products of 2^28 multiply-adds
# (n = 1024: 2^30, 8 ms on one core) and loops of 2^27 elements always split, whatever a probe
# found; the cb72519 rule's "never split" from one late probe cost n = 1024 1.9x (4ea5449).
PROBE_ROUNDS = 16  # empty dispatches a probe times (it keeps the fastest)
PROBE_PATIENCE = 1 << 10  # polls a probe waits for a worker before it runs the task (4,096
# polls took 0.7 ms on Zen 5, whose pause is long: a late probe cost 1.4 ms, every PROBE_EVERY_NS)
PROBE_LATE = 2  # a probe stops after this many rounds that no worker came to (a busy core)
PROBE_WINDOW = 3  # the cost is the median of the last 3 probes: one late probe changes nothing
PROBE_EVERY_NS = 50_000_000  # a split decision this long after the last probe probes again
PROBE_SHARE = 64  # ... plus 64 times the last probe's own time (a late probe: 0.2-2 ms)
START_NS = FAR_NS // 2  # the cost assumed at the pool's start until probes say otherwise
CLOCK_MONOTONIC = 1  # Linux's clock id (glibc, musl; x86-64 and aarch64)


def task_function(
    module: ir.Module, name: str, types: list[ir.Type], nounwind: bool = False
) -> tuple[ir.Function, ir.IRBuilder, list[ir.Value], ir.Value, ir.Value]:
    """``void NAME(ptr ctx, i64 t, i64 count)`` (internal glue; TASK_TYPE, what the pool
    calls) whose context is a struct of values of ``types``: the function, its builder after
    loading them, the values, t and count. The kernels' tasks and the GEMM's share it."""
    ctx_type = ir.LiteralStructType(types)
    task = ir.Function(module, TASK_TYPE, name=name)
    task.linkage = "internal"
    if nounwind:
        task.attributes.add("nounwind")
    glue(task)
    tb = ir.IRBuilder(task.append_basic_block("entry"))
    cp, t, count = task.args
    fields = [
        tb.load(
            tb.gep(
                cp, [ir.Constant(I32, 0), ir.Constant(I32, k)], inbounds=True, source_etype=ctx_type
            ),
            typ=ft,
        )
        for k, ft in enumerate(types)
    ]
    return task, tb, fields, t, count


def scale_of(cost_ns: int, kind: int = PRODUCTS) -> int:
    """The factor on the split thresholds of ``kind`` (PRODUCTS, LOOPS) for a dispatch cost in
    ns (the median of the last PROBE_WINDOW probes): 1 below FAR_NS, else cost_ns //
    NS_PER_SCALE clamped to FAR_SCALE[kind] .. MAX_SCALE (the pool computes the same in its
    generated code)."""
    if cost_ns < FAR_NS:
        return 1
    return min(MAX_SCALE, max(FAR_SCALE[kind], cost_ns // NS_PER_SCALE))


@dataclass(frozen=True)
class ThreadPool:
    """The pool's functions in one module."""

    run: ir.Function  # void run(ptr task, ptr ctx, i64 count)
    threads: ir.GlobalVariable  # i64: threads that run tasks (1: the caller alone)
    scale: ir.GlobalVariable  # [2 x i64]: the split thresholds' factors (scale_of the cost)
    declined: ir.Function  # void declined(): a split the scale refused (counts toward a probe)
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
            g[f"{prefix}.pool.scale"],
            g[f"{prefix}.pool.declined"],
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
    declined = g.get(f"{prefix}.pool.declined") or ir.Function(
        module, ir.FunctionType(VOID, []), name=f"{prefix}.pool.declined"
    )
    threads, scale = (
        g.get(f"{prefix}.pool.{n}") or ir.GlobalVariable(module, t, name=f"{prefix}.pool.{n}")
        for n, t in (("threads", I64), ("scale", SCALES))
    )
    threads.align = scale.align = 8
    return ThreadPool(run, threads, scale, declined, None, None)


def split_pays(
    b: ir.IRBuilder, pool: ThreadPool, work: ir.Value, threshold: int, kind: int | None = PRODUCTS
) -> tuple[ir.Value, ir.Value]:
    """(threads, split) at ``b``: the pool's thread count (i64) and whether ``work`` (i64, in
    the unit ``threshold`` was measured in) is worth a dispatch: more than one thread and
    work >= threshold * the pool's measured scale for ``kind`` (PRODUCTS, LOOPS). Work at or
    above ``threshold`` that the scale keeps on the caller counts toward the next probe
    (``declined``). ``kind`` None: work >= threshold itself (no scale, never ``declined``)."""
    threads = b.load_atomic(pool.threads, "monotonic", 8, typ=I64)
    if kind is not None:
        at = b.gep(pool.scale, [ir.Constant(I64, 0), ir.Constant(I64, kind)], source_etype=SCALES)
        scale = b.load_atomic(at, "monotonic", 8, typ=I64)
    limit = ir.Constant(I64, threshold)
    big = b.and_(b.icmp_signed(">", threads, ir.Constant(I64, 1)), b.icmp_signed(">=", work, limit))
    if kind is None:
        return threads, big
    split = b.and_(big, b.icmp_signed(">=", work, b.mul(limit, scale)), name="split")
    with b.if_then(b.and_(big, b.not_(split)), likely=False):
        b.call(pool.declined, [])
    return threads, split


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The module's function ``name`` (an external one, a libc call or an LLVM intrinsic),
    declared with that type the first time it is asked for."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def relax(b: ir.IRBuilder, module: ir.Module) -> None:
    """A spin-wait hint (x86 ``pause``): lets the other hyperthread run, saves power."""
    if _is_x86(module):
        b.call(declare(module, "llvm.x86.sse2.pause", VOID, []), [])


class _PoolEmitter:
    def __init__(self, module: ir.Module, prefix: str) -> None:
        self.m, self.prefix, self.sym = module, prefix, f"{prefix}.pool."

    # -- globals and declarations --------------------------------------------------------------

    def var(self, name: str, typ: ir.Type, init=0, align: int = 8) -> ir.GlobalVariable:
        g = ir.GlobalVariable(self.m, typ, name=self.sym + name)
        g.linkage = "internal"
        g.initializer = ir.Constant(typ, init) if not isinstance(init, ir.Constant) else init
        g.align = align
        return g

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return declare(self.m, name, ret, args)

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
        # the split thresholds' factor, the cost (ns: the median of the last PROBE_WINDOW
        # probes, kept in `window`, the next one written at `slot` mod PROBE_WINDOW), whether
        # the cost was fixed from outside, when the next probe is due (CLOCK_MONOTONIC ns), and
        # the dispatches probes made (NAME_pool_dispatches leaves them out)
        self.scale = self.var("scale", SCALES, ir.Constant(SCALES, [1, 1]))
        self.scale.linkage, self.scale.storage_class = "", "hidden"
        self.cost = self.var("cost", I64)
        self.fixed = self.var("fixed", I64)
        self.window = self.var("window", ir.ArrayType(I64, PROBE_WINDOW), [0] * PROBE_WINDOW)
        self.slot = self.var("slot", I64)
        self.next_at = self.var("next_at", I64, align=64)
        self.probes = self.var("probes", I64)
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
        self.clock = self.declare("clock_gettime", I32, [I32, PTR])
        self.claim_fn = self.emit_claim()
        self.empty = ir.Function(self.m, TASK_TYPE, name=self.sym + "empty")  # a probe's task
        self.empty.linkage = "internal"
        glue(self.empty)
        ir.IRBuilder(self.empty.append_basic_block("entry")).ret_void()
        worker = self.emit_worker()
        self.probe_fn = self.emit_probe()
        declined = self.emit_declined()
        run = self.emit_run()
        set_threads = self.emit_set_threads(worker)
        get_threads, b = self.function(f"{self.prefix}_get_num_threads", I32, [], internal=False)
        glue(get_threads)  # called once in a while, not per step
        b.ret(b.trunc(b.load_atomic(self.threads, "monotonic", 8), I32))
        # i64 NAME_pool_dispatches(): dispatches that woke the pool so far (the generation in
        # `work` less the probes', mod 2^32). Tests use it to check that small work stays on
        # the caller; the libraries do not export it (aot.object_module makes it internal).
        _dispatches, b = self.function(f"{self.prefix}_pool_dispatches", I64, [], internal=False)
        glue(_dispatches)  # called once in a while, not per step
        gen = self.gen_of(b, b.load_atomic(self.work, "monotonic", 8, typ=I64))
        probes = b.load_atomic(self.probes, "monotonic", 8, typ=I64)
        b.ret(b.and_(b.sub(gen, probes), ir.Constant(I64, 0xFFFFFFFF)))
        self.emit_dispatch_cost()
        self.emit_forget_threads()
        return ThreadPool(run, self.threads, self.scale, declined, set_threads, get_threads)

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
        relax(b, self.m)

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
        null, zero = ir.Constant(PTR, None), ir.Constant(I64, 0)
        ts = self.entry_alloca(b, ir.ArrayType(I64, 2), "ts")
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
        spin = b.phi(I64, name="spin")
        spin.add_incoming(ir.Constant(I64, SPIN_NS), entry)
        b.branch(poll)

        # the spin's deadline is set at the first clock reading, CLOCK_POLLS polls in: no clock
        # call between a task's end and the first poll for the next dispatch
        b.position_at_end(poll)
        polls = b.phi(I64, name="polls")
        polls.add_incoming(zero, top)
        deadline = b.phi(I64, name="deadline")
        deadline.add_incoming(zero, top)
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
        tick = b.icmp_unsigned("==", b.and_(more, ir.Constant(I64, CLOCK_POLLS - 1)), zero)
        clock = b.append_basic_block("clock")
        b.cbranch(tick, clock, poll)
        polls.add_incoming(more, again)
        deadline.add_incoming(deadline, again)
        b.position_at_end(clock)
        now = self.now_ns(b, ts)
        first = b.icmp_unsigned("==", deadline, zero)
        polls.add_incoming(more, clock)
        deadline.add_incoming(b.select(first, b.add(now, spin), deadline), clock)
        b.cbranch(b.or_(first, b.icmp_signed("<", now, deadline)), poll, sleep)

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
        # after a probe's round the worker spins only PROBE_SPIN_NS: a probe the scale's
        # refusal made (declined) is followed by no work, and the long spin then took a core
        # the caller or another process needed; a probe before a split is followed at once
        probed = b.icmp_unsigned(
            "==", b.load_atomic(self.task, "monotonic", 8, typ=PTR), self.empty
        )
        short, long_ = ir.Constant(I64, PROBE_SPIN_NS), ir.Constant(I64, SPIN_NS)
        spin.add_incoming(b.select(probed, short, long_), b.block)
        seen.add_incoming(gen_now, b.block)
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
        with b.if_then(self.probe_due(b), likely=False):
            b.call(self.probe_fn, [])
        gen = self.publish(b, task, ctx, count)
        b.call(task, [ctx, zero, count])
        b.atomic_rmw("add", self.done, one, "release")
        b.call(self.claim_fn, [gen])
        self.wait_done(b, count)
        _store_atomic(b, zero, self.busy, "release", 8)
        b.ret_void()
        return fn

    def publish(self, b: ir.IRBuilder, task: ir.Value, ctx: ir.Value, count: ir.Value):
        """Hand ``count`` tasks to the workers (the caller holds ``busy``); index 0 is the
        caller's. Returns the dispatch's generation."""
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
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
        return gen

    def wait_done(
        self, b: ir.IRBuilder, count: ir.Value, late: tuple[ir.Value, ir.Value] | None = None
    ) -> None:
        """Wait until ``count`` tasks of the current dispatch have finished (a sched_yield
        every WAIT_POLLS polls: a worker may be queued on this core). With ``late`` = (gen,
        lates), a probe's wait: after PROBE_PATIENCE polls the caller runs what is left itself
        (a worker that started after the publish takes it for an old generation and would never
        claim it; that round's time is then not the fastest) and counts the round in ``lates``
        (an i64 on the stack)."""
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
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
        every = b.and_(nxt, ir.Constant(I64, WAIT_POLLS - 1))
        with b.if_then(b.icmp_unsigned("==", every, zero), likely=False):
            b.call(self.yield_, [])
        polls.add_incoming(nxt, b.block)
        if late is None:
            b.branch(head)
            b.position_at_end(out)
            return
        gen, lates = late
        gave_up = b.append_basic_block("wait.late")
        b.cbranch(b.icmp_signed("<", nxt, ir.Constant(I64, PROBE_PATIENCE)), head, gave_up)
        b.position_at_end(gave_up)
        b.store(b.add(b.load(lates, typ=I64), one), lates)
        b.call(self.claim_fn, [gen])
        self.wait_done(b, count)
        b.branch(out)
        b.position_at_end(out)

    # -- measured dispatch cost ---------------------------------------------------------------------

    def now_ns(self, b: ir.IRBuilder, ts: ir.Value) -> ir.Value:
        """CLOCK_MONOTONIC in ns (``ts``: 16 bytes of stack for the struct timespec)."""
        b.call(self.clock, [ir.Constant(I32, CLOCK_MONOTONIC), ts])
        sec = b.load(ts, typ=I64)
        nsec = b.load(b.gep(ts, [ir.Constant(I64, 1)], source_etype=I64), typ=I64)
        return b.add(b.mul(sec, ir.Constant(I64, 1_000_000_000)), nsec)

    def probe_due(self, b: ir.IRBuilder) -> ir.Value:
        """i1, at a split or declined split: whether a probe is due (the cost is measured, not
        fixed, and PROBE_EVERY_NS have passed since the last probe). Wall-clock time, not a
        count of decisions: a pool that makes few decisions (one per 8 ms GEMM) still probes
        every PROBE_EVERY_NS, and one that makes many does not probe more often. The clock is
        read only while the cost is measured (a vDSO call, some 20 ns, per split decision on
        work of at least a threshold: microseconds)."""
        due_p = self.entry_alloca(b, I64, "due")
        b.store(ir.Constant(I64, 0), due_p)
        fixed = b.load_atomic(self.fixed, "monotonic", 8, typ=I64)
        with b.if_then(b.icmp_unsigned("==", fixed, ir.Constant(I64, 0))):
            now = self.now_ns(b, self.entry_alloca(b, ir.ArrayType(I64, 2), "ts"))
            at = b.load_atomic(self.next_at, "monotonic", 8, typ=I64)
            b.store(b.zext(b.icmp_signed(">=", now, at), I64), due_p)
        return b.trunc(b.load(due_p, typ=I64), ir.IntType(1))

    @staticmethod
    def entry_alloca(b: ir.IRBuilder, typ: ir.Type, name: str) -> ir.Value:
        """An alloca of ``typ`` in the function's entry block, typed ``ptr``."""
        with b.goto_entry_block():
            p = b.alloca(typ, name=name)
        p.type = PTR  # llvmlite types an alloca as `typ*`; LLVM has only `ptr`
        return p

    def emit_probe(self) -> ir.Function:
        """void probe(): time PROBE_ROUNDS empty dispatches that only the workers run; keep the
        fastest as ``cost`` and derive ``scale`` (scale_of). The caller holds ``busy`` and the
        pool has workers."""
        fn, b = self.function(self.sym + "probe", VOID, [])
        fn.attributes.add("noinline")
        glue(fn)  # once every PROBE_EVERY_NS at most
        empty = self.empty
        ts = self.entry_alloca(b, ir.ArrayType(I64, 2), "ts")
        best_p, lates_p, ran_p = (self.entry_alloca(b, I64, n) for n in ("best", "lates", "ran"))
        for p, v in ((best_p, 1 << 62), (lates_p, 0), (ran_p, 0)):
            b.store(ir.Constant(I64, v), p)
        threads = b.load_atomic(self.threads, "monotonic", 8, typ=I64)
        one = ir.Constant(I64, 1)
        rounds = ir.Constant(I64, PROBE_ROUNDS)
        began = self.now_ns(b, ts)
        # an untimed first round wakes a worker that sleeps (SPIN_NS after its last task): the
        # wake-up (a futex, hundreds of us on the loaded VM) is not the cost of a dispatch, and
        # counted it kept a pool that splits nothing (so its worker sleeps) in the away regime
        gen = self.publish(b, empty, ir.Constant(PTR, None), threads)
        b.atomic_rmw("add", self.done, one, "release")
        self.wait_done(b, threads, (gen, lates_p))
        b.store(ir.Constant(I64, 0), lates_p)
        b.store(one, ran_p)
        with counted_loop(b, ir.Constant(I64, 0), rounds, name="probe"):
            # after PROBE_LATE rounds that no worker came to, the rest are skipped: the other
            # core is busy, and the cost (that long wait) says so
            lates = b.load(lates_p, typ=I64)
            with b.if_then(b.icmp_signed("<", lates, ir.Constant(I64, PROBE_LATE))):
                t0 = self.now_ns(b, ts)
                gen = self.publish(b, empty, ir.Constant(PTR, None), threads)
                b.atomic_rmw("add", self.done, one, "release")  # index 0: the caller's, empty
                self.wait_done(b, threads, (gen, lates_p))
                took = b.sub(self.now_ns(b, ts), t0)
                best = b.load(best_p, typ=I64)
                b.store(b.select(b.icmp_signed("<", took, best), took, best), best_p)
                b.store(b.add(b.load(ran_p, typ=I64), one), ran_p)
        best = b.load(best_p, typ=I64)
        b.atomic_rmw("add", self.probes, b.load(ran_p, typ=I64), "monotonic")
        self.record(b, best, ts, began)
        b.ret_void()
        return fn

    def record(
        self, b: ir.IRBuilder, best: ir.Value, ts: ir.Value, began: ir.Value | None = None
    ) -> ir.Value:
        """A probe's fastest round ``best`` (ns) goes into the window; the cost becomes the
        window's median, the scale scale_of(cost), the next probe due PROBE_EVERY_NS from now
        plus PROBE_SHARE times the probe's own time (it began at ``began``, ns), so probes
        that wait for a worker that is not there take at most some 1/PROBE_SHARE of the time
        (``ts``: stack for a timespec). Returns the cost."""
        zero = ir.Constant(I64, 0)
        slot = b.load(self.slot, typ=I64)
        b.store(b.add(slot, ir.Constant(I64, 1)), self.slot)
        i = b.urem(slot, ir.Constant(I64, PROBE_WINDOW))
        b.store(best, b.gep(self.window, [zero, i]))
        vals = [
            b.load(b.gep(self.window, [zero, ir.Constant(I64, k)]), typ=I64)
            for k in range(PROBE_WINDOW)
        ]
        cost = self.median(b, *vals)
        _store_atomic(b, cost, self.cost, "monotonic", 8)
        self.store_scale(b, cost)
        now = self.now_ns(b, ts)
        due = b.add(now, ir.Constant(I64, PROBE_EVERY_NS))
        if began is not None:
            due = b.add(due, b.mul(b.sub(now, began), ir.Constant(I64, PROBE_SHARE)))
        _store_atomic(b, due, self.next_at, "monotonic", 8)
        return cost

    @staticmethod
    def median(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        """median3 of three i64 values, in generated code."""

        def lo(p: ir.Value, q: ir.Value) -> ir.Value:
            return b.select(b.icmp_signed("<", p, q), p, q)

        def hi(p: ir.Value, q: ir.Value) -> ir.Value:
            return b.select(b.icmp_signed("<", p, q), q, p)

        return hi(lo(x, y), lo(hi(x, y), z))

    def store_scale(self, b: ir.IRBuilder, cost: ir.Value) -> None:
        """scale[kind] = scale_of(cost, kind), in generated code."""
        near = b.icmp_signed("<", cost, ir.Constant(I64, FAR_NS))
        linear = b.sdiv(cost, ir.Constant(I64, NS_PER_SCALE))
        top = ir.Constant(I64, MAX_SCALE)
        linear = b.select(b.icmp_signed(">", linear, top), top, linear)
        for kind, factor in enumerate(FAR_SCALE):
            low = ir.Constant(I64, factor)
            k = b.select(b.icmp_signed("<", linear, low), low, linear)
            k = b.select(near, ir.Constant(I64, 1), k)
            at = b.gep(self.scale, [ir.Constant(I64, 0), ir.Constant(I64, kind)])
            _store_atomic(b, k, at, "monotonic", 8)

    def try_probe(self, b: ir.IRBuilder, times: int = 1) -> None:
        """Probe ``times`` times now if the pool has workers and no dispatch runs (else leave
        it)."""
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        threads = b.load_atomic(self.threads, "monotonic", 8, typ=I64)
        with b.if_then(b.icmp_signed(">", threads, one)):
            got = b.extract_value(b.cmpxchg(self.busy, zero, one, "acquire", "monotonic"), 1)
            with b.if_then(got):
                for _ in range(times):
                    b.call(self.probe_fn, [])
                _store_atomic(b, zero, self.busy, "release", 8)

    def probe_unless_fixed(self, b: ir.IRBuilder) -> None:
        """At the pool's start, unless the cost was fixed: the window holds START_NS (cores
        that share a cache: the thresholds as measured) but one probe, so the split decisions
        move only when two probes agree. The new workers may not run yet (pthread_create
        returns first: all 3 probes right after it found them late, 0.7 ms, on the loaded
        2-core VM), and the pool's previous workers' costs do not count."""
        fixed = b.load_atomic(self.fixed, "monotonic", 8, typ=I64)
        with b.if_then(b.icmp_unsigned("==", fixed, ir.Constant(I64, 0))):
            for k in range(PROBE_WINDOW):
                at = b.gep(self.window, [ir.Constant(I64, 0), ir.Constant(I64, k)])
                b.store(ir.Constant(I64, START_NS), at)
            self.try_probe(b)

    def emit_declined(self) -> ir.Function:
        """void declined(): a split that the scale kept on the caller; a probe is due here too
        (probe_due), so a pool whose scale keeps all work on the caller still notices when
        dispatches get cheap."""
        fn, b = self.function(self.sym + "declined", VOID, [], internal=False)
        fn.linkage = "hidden"  # printed where LLVM expects the visibility: external, hidden
        fn.attributes.add("noinline")
        glue(fn)
        with b.if_then(self.probe_due(b), likely=False):
            self.try_probe(b)
        b.ret_void()
        return fn

    def emit_dispatch_cost(self) -> None:
        """i64 NAME_pool_dispatch_cost(i64 ns): ns > 0 fixes the cost of a dispatch at ns (no
        probes from then on), 0 measures it now and probes again from then on, < 0 only reads.
        Returns the cost in ns (0 while the pool has never had workers). Tests and benchmarks
        use it; the libraries do not export it (aot.object_module makes it internal)."""
        fn, b = self.function(f"{self.prefix}_pool_dispatch_cost", I64, [I64], internal=False)
        glue(fn)  # called once in a while, not per step
        ns = fn.args[0]
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        with b.if_else(b.icmp_signed(">", ns, zero)) as (fix, other):
            with fix:
                _store_atomic(b, one, self.fixed, "monotonic", 8)
                _store_atomic(b, ns, self.cost, "monotonic", 8)
                for k in range(PROBE_WINDOW):
                    b.store(ns, b.gep(self.window, [zero, ir.Constant(I64, k)]))
                self.store_scale(b, ns)
            with other, b.if_then(b.icmp_signed("==", ns, zero)):
                _store_atomic(b, zero, self.fixed, "monotonic", 8)
                self.try_probe(b, PROBE_WINDOW)
        b.ret(b.load_atomic(self.cost, "monotonic", 8, typ=I64))
        # i64 NAME_pool_observe(i64 ns): take ns as a probe's result (the window, its median,
        # the scale) and measure from then on; returns the cost. For tests of the median: a
        # late probe cannot be produced on demand. Not exported by the libraries.
        fn, b = self.function(f"{self.prefix}_pool_observe", I64, [I64], internal=False)
        glue(fn)
        _store_atomic(b, zero, self.fixed, "monotonic", 8)
        b.ret(self.record(b, fn.args[0], self.entry_alloca(b, ir.ArrayType(I64, 2), "ts")))

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
        self.probe_unless_fixed(b)
        with b.if_then(have_attr):
            b.call(self.attr_destroy, [attr])
        b.ret(rc)
        b.position_at_end(out)
        with b.if_then(have_attr):
            b.call(self.attr_destroy, [attr])
        _store_atomic(b, n, self.threads, "release", 8)
        self.probe_unless_fixed(b)
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
