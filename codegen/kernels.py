"""Kernel emitters: one LLVM function per scheduled kernel, and the entry points that call them.

Entry-point ABI (JIT and shared library alike)::

    int32_t NAME_ENTRY(void *params, void *state, void *workspace,
                       void *const *inputs, void *const *outputs, int64_t n)

``params``/``state`` are the model's flat persistent regions, ``workspace`` holds the gradients
and the arena (``Schedule.workspace_bytes(n)`` bytes, 64-byte aligned), ``inputs``/``outputs``
are arrays of pointers in the order of ``Schedule.input_slots``/``output_slots``, ``n`` is the
batch size. Returns 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Graph, Node
from graphc.ir.ops import OPS, normalize_axes
from graphc.ir.ops.linalg import batched_dims, matmul_dims
from graphc.ir.plan import Buffer, Kernel, Schedule, gemm_result
from graphc.ir.types import BATCH, TensorType

from . import vmath
from .gemm import BLOCKS_PER_THREAD, PARALLEL_MIN_MACS
from .lltypes import F64, I32, I64, LL, PTR, VOID, glue, i64, vconst
from .loops import counted_loop, loop, loop_nest
from .lower import lower_elementwise
from .threads import LOOPS, ThreadPool, declare, split_pays, task_function

ENTRY_TYPE = ir.FunctionType(I32, [PTR, PTR, PTR, PTR, PTR, I64])


def storage_key(buf: Buffer) -> tuple:
    return (buf.region, buf.offset, buf.offset_row, buf.slot)


def llname(name: str) -> str:
    return name.replace("%", "v").replace(".", "_")


class KernelContext:
    """The LLVM function of one kernel: a pointer argument per distinct buffer, then ``n``."""

    def __init__(
        self,
        module: ir.Module,
        fname: str,
        sched: Schedule,
        values: list[str],
        extra_ptrs: int = 0,
        pool: ThreadPool | None = None,
    ):
        self.module, self.pool = module, pool  # pool: the module's threads, for large loops
        # a flat update kernel that loops over its n argument's elements instead of all of
        # them (its full-size pointers point at the shard's first element)
        self.shard = False
        # values loaded as the sum of several pointers' elements, in their order (the flat
        # update's gradient summed over the ranks' slots: ModuleBuilder._call_shard)
        self.summed: dict[str, list[ir.Value]] = {}
        # matmul kernels: (kernel, dtype, ta, tb, epilogue, operands) -> (GEMM function, args)
        self.gemm_for: Callable[..., tuple[ir.Function, list[str]]] | None = None
        self.sched = sched
        self.g = sched.graph
        self.key_of = {
            v: storage_key(sched.buffers[v])
            for v in values
            if sched.buffers[v].region not in ("inline", "fused")
        }
        keys = [self.key_of[v] for v in distinct_buffers(sched, values)]
        self.keys = keys
        ftype = ir.FunctionType(VOID, [PTR] * (len(keys) + extra_ptrs) + [I64])
        self.fn = ir.Function(module, ftype, name=fname)
        self.fn.linkage = "internal"
        self.extra = list(self.fn.args[len(keys) : len(keys) + extra_ptrs])
        for a in self.fn.args[:-1]:
            a.add_attribute("noalias")
        self.n = self.fn.args[-1]
        self.n.name = "n"
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))

    def ptr(self, value: str) -> ir.Value:
        try:
            return self.fn.args[self.keys.index(self.key_of[value])]
        except KeyError:
            raise CodegenError(f"kernel has no buffer for value {value}") from None

    def dim(self, d) -> ir.Value:
        return self.n if d == BATCH else i64(d)

    def count(self, shape) -> ir.Value:
        """The product of ``shape`` (ints and N) as the i64 instructions ``1 * d0 * d1 ...``:
        an instruction even where every dim is an int, so flat_loop does not take it for a
        small constant count (folding it as ``product`` does would move the fixed-shape loops
        of a training step from their range helper into the kernel: other code)."""
        out: ir.Value = i64(1)
        for d in shape:
            out = self.b.mul(out, self.dim(d), flags=("nsw",))
        return out

    def product(self, dims) -> ir.Value:
        """The product of ``dims`` (ints and at most one N): a constant, or N times one (the
        GEMM's M, N and K)."""
        fixed = math.prod(d for d in dims if d != BATCH)
        if BATCH not in dims:
            return i64(fixed)
        return self.n if fixed == 1 else self.b.mul(self.n, i64(fixed), flags=("nsw",))

    def load(self, value: str, index: ir.Value) -> ir.Value:
        t = LL[self.g[value].type.dtype]
        total: ir.Value | None = None
        for src in self.summed.get(value, ()):  # ((x0 + x1) + x2) ..., that order
            x = self.b.load(self.b.gep(src, [index], inbounds=True, source_etype=t), typ=t)
            total = x if total is None else self.b.fadd(total, x, name=llname(value))
        if total is not None:
            return total
        p = self.b.gep(self.ptr(value), [index], inbounds=True, source_etype=t)
        return self.b.load(p, typ=t, name=llname(value))

    def store(self, value: str, index: ir.Value, x: ir.Value) -> None:
        t = LL[self.g[value].type.dtype]
        self.b.store(x, self.b.gep(self.ptr(value), [index], inbounds=True, source_etype=t))

    def inline_value(self, node: Node) -> ir.Value:
        t = LL[node.type.dtype]
        if node.op == "const":  # (an i32 constant's value is a whole number: dsl.const)
            v = node.attr("value")
            return ir.Constant(t, int(v) if isinstance(t, ir.IntType) else v)
        if node.op == "size":
            x = self.g[node.inputs[0]].type
            axes = normalize_axes("size", node.attr("axes"), x.rank)
            c = self.count([x.shape[a] for a in axes])
            return self.b.sitofp(c, t, name=llname(node.name))
        raise CodegenError(f"{node.op} is not an inline value")

    def strides(self, shape, iter_shape) -> list[ir.Value | None]:
        """Per iteration axis, the operand's element stride (None where it is broadcast)."""
        out: list[ir.Value | None] = [None] * len(iter_shape)
        off = len(iter_shape) - len(shape)
        acc: ir.Value = i64(1)
        for k in range(len(shape) - 1, -1, -1):
            d = shape[k]
            if d != 1:
                out[off + k] = acc
            acc = self.b.mul(acc, self.dim(d), flags=("nsw",))
        return out


def distinct_buffers(sched: Schedule, values: list[str]) -> list[str]:
    """One value per distinct buffer among ``values``, in order of first appearance (inline
    and fused values have no buffer): the pointer arguments of a kernel, in its order."""
    out: list[str] = []
    seen: set[tuple] = set()
    for v in values:
        buf = sched.buffers[v]
        if buf.region in ("inline", "fused"):
            continue
        k = storage_key(buf)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def is_inline(sched: Schedule, v: str) -> bool:
    return sched.buffers[v].region == "inline"


# ---------------------------------------------------------------------------- elementwise


def emit_elementwise(ctx: KernelContext, kernel: Kernel) -> None:
    g, b = ctx.g, ctx.b
    nodes = [g[x] for x in kernel.nodes]
    members = set(kernel.nodes)
    shape = nodes[-1].type.shape
    for nd in nodes:
        if nd.type.shape != shape:
            raise CodegenError(
                f"fused kernel {kernel.name}: {nd.name} has shape {nd.type}, not {shape}"
            )
    ext: list[str] = []
    for nd in nodes:
        operands = data_operands(nd)
        for i in operands:
            if i not in members and i not in ext:
                ext.append(i)
    scalars: dict[str, ir.Value] = {}
    loaded = [
        v
        for v in ext
        if not is_inline(ctx.sched, v) and not (g[v].type.size(1) == 1 and not g[v].type.is_batched)
    ]
    flat = all(g[v].type.shape == shape for v in loaded)

    def setup() -> None:
        """The operands that are one value for the whole kernel, before the loop."""
        for v in ext:
            if is_inline(ctx.sched, v):
                scalars[v] = ctx.inline_value(g[v])
            elif v not in loaded:
                scalars[v] = ctx.load(v, i64(0))

    def body(index_of: Callable[[str], ir.Value], out_index: ir.Value) -> None:
        vals = dict(scalars)
        # every operand element is loaded before any result of it is stored: the memory plan
        # lets a result overwrite a dying operand of its type (schedule._in_place_aliases)
        for v in loaded:
            vals[v] = ctx.load(v, index_of(v))
        for nd in nodes:
            args = [vals[i] for i in data_operands(nd)]
            vals[nd.name] = lower_elementwise(ctx.b, nd, args, llname(nd.name), index=out_index)
            if nd.name in kernel.stores:
                ctx.store(nd.name, out_index, vals[nd.name])

    if kernel.elements:  # a flat update (fuse_optimizer): every param's elements in one loop
        if not flat:
            raise CodegenError(f"flat update kernel {kernel.name} has broadcast operands")
        # a shard of it (ModuleBuilder.add_update_shard_entry): n elements from the pointers
        count = ctx.n if ctx.shard else i64(kernel.elements)
        flat_loop(ctx, count, lambda i: body(lambda v: i, i), setup)
    elif flat or not shape:
        flat_loop(ctx, ctx.count(shape), lambda i: body(lambda v: i, i), setup)
    else:
        setup()
        strides = {v: ctx.strides(g[v].type.shape, shape) for v in loaded}
        out_strides = ctx.strides(shape, shape)
        nest(ctx, shape, strides, out_strides, body)
    b.ret_void()


# Shorter element loops stay on one thread. Measured with benchmarks/dispatch.py (the SGD update
# of one parameter vector, 2 threads against 1, 2-core Zen 3 under load): 3.4x slower at 2^15
# elements, 1.6x at 2^16, 0.70x at 2^18: the dispatch costs more than a few hundred thousand
# element updates save.
PARALLEL_MIN_ELEMENTS = 1 << 17
PARALLEL_CHUNK = 64  # threads' ranges start at multiples of this many elements (cache lines)
TASKS_PER_THREAD = 4  # a split loop is this many ranges per thread (each >= 1/4 of the minimum)


def flat_loop(
    ctx: KernelContext,
    total: ir.Value,
    body: Callable[[ir.Value], None],
    setup: Callable[[], None],
    min_total: int = PARALLEL_MIN_ELEMENTS,
    chunk: int = PARALLEL_CHUNK,
    measured: bool = True,
) -> None:
    """``setup(); for i in 0..total: body(i)`` in the kernel; with a thread pool, loops of at
    least PARALLEL_MIN_ELEMENTS are split into one contiguous range per thread (a loop whose
    count is a constant below that is written in the kernel itself, as without a pool).

    The body goes into a helper ``KERNEL.range(buffers..., n, lo, hi)`` (same pointer arguments
    as the kernel, so ctx.ptr/load/store work inside it); the kernel calls it over everything, or
    hands the pool a task that calls it over the task's range. Each element is computed by the
    same code at the same index either way, so the results do not depend on the thread count.
    ``min_total`` and ``chunk`` (the split's threshold and unit) default to the elementwise
    loops'; a loop of heavy iterations (a conv's samples) splits from 2 iterations, 1 a chunk,
    and passes ``measured=False``: its threshold does not rise with the pool's measured
    dispatch cost (codegen/threads.py's split_pays), which an iteration outweighs anyway.
    """
    b = ctx.b
    small = isinstance(total, ir.Constant) and total.constant < min_total
    if ctx.pool is None or small:  # small: never split (a scalar kernel: Adam's step count)
        setup()
        with loop(b, total, name="i") as i:
            body(i)
        return
    kernel_fn, kernel_b, kernel_n = ctx.fn, ctx.b, ctx.n
    head = list(kernel_fn.function_type.args)
    range_fn = ir.Function(
        ctx.module, ir.FunctionType(VOID, head + [I64, I64]), name=f"{kernel_fn.name}.range"
    )
    range_fn.linkage = "internal"
    range_fn.attributes.add("nounwind")
    range_fn.attributes.add("noinline")  # one copy of the loop, called by the kernel and task
    for a, src in zip(range_fn.args, kernel_fn.args):
        if isinstance(a.type, ir.PointerType):
            a.add_attribute("noalias")
        a.name = src.name
    lo, hi = range_fn.args[-2:]
    ctx.fn, ctx.n = range_fn, range_fn.args[len(head) - 1]
    ctx.b = rb = ir.IRBuilder(range_fn.append_basic_block("entry"))
    setup()
    with loop(rb, hi, name="i", start=lo) as i:
        body(i)
    rb.ret_void()
    ctx.fn, ctx.b, ctx.n = kernel_fn, kernel_b, kernel_n

    # the task: range t of count, in whole chunks
    task, tb, fields, t, count = task_function(ctx.module, f"{kernel_fn.name}.task", [*head, I64])
    n_total = fields.pop()
    chunks = tb.sdiv(tb.add(n_total, i64(chunk - 1)), i64(chunk))
    per = tb.mul(tb.sdiv(tb.add(chunks, tb.sub(count, i64(1))), count), i64(chunk))
    start = tb.mul(t, per)
    stop = tb.add(start, per)
    clamp = lambda v: tb.select(tb.icmp_signed("<", v, n_total), v, n_total)  # noqa: E731
    tb.call(range_fn, fields + [clamp(start), clamp(stop)])
    tb.ret_void()

    threads, split = split_pays(b, ctx.pool, total, min_total, LOOPS if measured else None)
    with b.if_else(split) as (then, otherwise):
        with then:
            cp = task_context(ctx, [*kernel_fn.args, total])
            # TASKS_PER_THREAD ranges a thread: one that runs late (a busy core) leaves its
            # share to the others
            tasks = b.mul(threads, i64(TASKS_PER_THREAD))
            most = b.sdiv(total, i64(max(min_total // TASKS_PER_THREAD, 1)))
            tasks = b.select(b.icmp_signed("<", most, tasks), most, tasks)
            b.call(ctx.pool.run, [task, cp, tasks])
        with otherwise:
            b.call(range_fn, list(kernel_fn.args) + [i64(0), total])
    glue(kernel_fn)  # the loop is range_fn's


def task_context(ctx: KernelContext, fields: list[ir.Value]) -> ir.Value:
    """A struct of ``fields`` on the kernel's stack (a static alloca in its entry block), filled
    at the builder's place: the context of a pool task (task_function)."""
    b = ctx.b
    ctx_type = ir.LiteralStructType([f.type for f in fields])
    here = b.block
    b.position_at_start(ctx.fn.entry_basic_block)
    cp = b.alloca(ctx_type, name="task.ctx")
    cp.type = PTR  # llvmlite types an alloca as `{...}*`; LLVM has only `ptr`
    b.position_at_end(here)
    for k, v in enumerate(fields):
        at = [ir.Constant(I32, 0), ir.Constant(I32, k)]
        b.store(v, b.gep(cp, at, inbounds=True, source_etype=ctx_type))
    return cp


def nest(
    ctx: KernelContext,
    shape,
    strides: dict[str, list],
    out_strides: list,
    body: Callable[[Callable[[str], ir.Value], ir.Value], None],
) -> None:
    """Loops over ``shape`` (``loops.loop_nest`` with the batch dimension resolved)."""
    loop_nest(ctx.b, [ctx.dim(d) for d in shape], strides, out_strides, body)


# ---------------------------------------------------------------------------- check_numerics

NUMERICS_BASE = 1000  # an entry returns NUMERICS_BASE + i when numerics site i holds a NaN/Inf


def numerics_sites(sched: Schedule) -> list[tuple[str, int]]:
    """(value, kernel index) of every float value a kernel stores, in execution order.

    With ``check_numerics`` the entry scans site ``i`` right after its kernel and returns
    ``NUMERICS_BASE + i`` at the first one holding a NaN or Inf. The runtime computes the same
    list from the schedule to name the node (so a cached object file needs no side table).
    Copy kernels only move values that were checked where they were computed.
    """
    out = []
    for k, kernel in enumerate(sched.kernels):
        if kernel.kind == "copy":
            continue
        for v in kernel.stores:
            if sched.graph[v].type.dtype in ("f32", "f64"):
                out.append((v, k))
    return out


def nonfinite_scanner(module: ir.Module, dtype: str) -> ir.Function:
    """``int64 first_nonfinite(T *p, int64 count)``: index of the first NaN/Inf, or -1.

    x is finite exactly when x - x == 0 (NaN - NaN and Inf - Inf are NaN); without fast-math
    flags LLVM may not fold the subtraction away.
    """
    name = f"graphc.first_nonfinite.{dtype}"
    if name in module.globals:
        return module.globals[name]
    t = LL[dtype]
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, I64]), name=name)
    fn.linkage = "internal"
    p, count = fn.args
    entry, hdr, body, nxt, found, done = (
        fn.append_basic_block(x) for x in ("entry", "hdr", "body", "next", "found", "done")
    )
    b = ir.IRBuilder(entry)
    b.branch(hdr)
    b.position_at_end(hdr)
    i = b.phi(I64, name="i")
    i.add_incoming(i64(0), entry)
    b.cbranch(b.icmp_signed("<", i, count), body, done)
    b.position_at_end(body)
    x = b.load(b.gep(p, [i], inbounds=True, source_etype=t), typ=t, name="x")
    bad = b.fcmp_unordered("uno", b.fsub(x, x), ir.Constant(t, 0.0), name="bad")
    b.cbranch(bad, found, nxt)
    b.position_at_end(nxt)
    i1 = b.add(i, i64(1), name="i1")
    i.add_incoming(i1, nxt)
    b.branch(hdr)
    b.position_at_end(found)
    b.ret(i)
    b.position_at_end(done)
    b.ret(i64(-1))
    return fn


# ---------------------------------------------------------------------------- copies


def emit_copy(ctx: KernelContext, src: str, dst_ptr: ir.Value, count: ir.Value) -> None:
    """dst_ptr[i] = src[i]; an inline ``src`` (a constant, a size: no buffer), as a model's
    output or an update's value, is computed once and stored into every element."""
    b = ctx.b
    t = LL[ctx.g[src].type.dtype]
    inline = ctx.inline_value(ctx.g[src]) if is_inline(ctx.sched, src) else None
    with loop(b, count, name="i") as i:
        x = inline if inline is not None else ctx.load(src, i)
        b.store(x, b.gep(dst_ptr, [i], inbounds=True, source_etype=t))
    b.ret_void()


def emit_fill(ctx: KernelContext, dst: str, x: ir.Value, count: ir.Value) -> None:
    """dst[i] = x for every element: a reshape of an inline value (a constant, a size)."""
    b = ctx.b
    with loop(b, count, name="i") as i:
        ctx.store(dst, i, x)
    b.ret_void()


def emit_reshape(ctx: KernelContext, node: Node) -> None:
    """A reshape that is not an alias: a copy of its operand, or a fill with an inline value."""
    n = ctx.count(node.type.shape)
    x = node.inputs[0]
    if is_inline(ctx.sched, x):
        emit_fill(ctx, node.name, ctx.inline_value(ctx.g[x]), n)
    else:
        emit_copy(ctx, x, ctx.ptr(node.name), n)


def emit_transpose(ctx: KernelContext, node: Node) -> None:
    """y[r, c] = x[c, r]."""
    b = ctx.b
    rows, cols = (ctx.dim(d) for d in node.type.shape)
    with loop(b, rows, name="r") as r, loop(b, cols, name="c") as c:
        x = ctx.load(node.inputs[0], b.add(b.mul(c, rows), r))
        ctx.store(node.name, b.add(b.mul(r, cols), c), x)
    b.ret_void()


def emit_batched_matmul(ctx: KernelContext, kernel: Kernel) -> None:
    """C = op(A) @ op(B) per position of the leading axes (op ``batched_matmul``): one call of
    the module's GEMM (codegen/gemm.py, from ``ctx.gemm_for`` as for a matmul kernel without
    epilogue) per matrix of the stack, with A, B and C offset to that position's matrices (an
    operand broadcast along a leading axis stays in place: stride 0). Every element is summed
    as graphc's GEMM sums it (blocks of KC along K on the packed path), so a stack's products
    carry the error of the matmul of the same M, N, K.

    Threads: a stack whose multiply-adds pay for a split (split_pays, PRODUCTS: at least
    PARALLEL_MIN_MACS times the pool's scale) is split into runs of whole matrices, up to
    BLOCKS_PER_THREAD runs a thread (_stack_task), when it holds at least 2 matrices, or 2 a
    thread where each is a product of PARALLEL_MIN_MACS or more; otherwise such products
    split their own C between the threads (the GEMM's split: a dispatch a matrix). A GEMM
    that runs in a run of the stack finds the pool busy and runs alone. Either way each
    matrix is computed by the same code as by one thread, so results do not depend on the
    thread count."""
    g, b = ctx.g, ctx.b
    mm, _tail, dtype, ta, tb, _ext = matmul_parts(g, kernel)
    an, bn = mm.inputs
    at, bt = g[an].type, g[bn].type
    lead, m, k, p = batched_dims(at, bt, ta, tb)
    assert ctx.gemm_for is not None  # set by the module builder for GEMM kernels
    gemm, _ = ctx.gemm_for(kernel, dtype, ta, tb, [], [])
    sa, sb = _lead_strides(at, len(lead)), _lead_strides(bt, len(lead))
    et = LL[dtype]

    # KERNEL.items(A, B, C, work, n, lo, hi): the matrices lo..hi of the stack
    items_fn = ir.Function(
        ctx.module, ir.FunctionType(VOID, [PTR] * 4 + [I64] * 3), name=f"{ctx.fn.name}.items"
    )
    items_fn.linkage = "internal"
    glue(items_fn)  # a loop of GEMM calls
    ib = ir.IRBuilder(items_fn.append_basic_block("entry"))
    pa, pb, pc, work, n, lo, hi = items_fn.args
    dim = lambda d: n if d == BATCH else i64(d)  # noqa: E731
    with loop(ib, hi, name="item", start=lo) as i:
        oa, ob, rest = i64(0), i64(0), i
        for axis in range(len(lead) - 1, -1, -1):  # i's position along each leading axis
            at_axis = rest if axis == 0 else ib.urem(rest, dim(lead[axis]))
            if axis:
                rest = ib.udiv(rest, dim(lead[axis]))
            oa = ib.add(oa, ib.mul(at_axis, i64(sa[axis])))
            ob = ib.add(ob, ib.mul(at_axis, i64(sb[axis])))
        oc = ib.mul(i, i64(m * p))
        mats = [
            ib.gep(q, [o], inbounds=True, source_etype=et)
            for q, o in ((pa, oa), (pb, ob), (pc, oc))
        ]
        ib.call(gemm, [i64(m), i64(p), i64(k), *mats, work])
    ib.ret_void()

    items = ctx.count(lead)
    args = [ctx.ptr(an), ctx.ptr(bn), ctx.ptr(mm.name), ctx.extra[0], ctx.n]
    if ctx.pool is None:
        b.call(items_fn, [*args, i64(0), items])
        b.ret_void()
        return
    threads, split = split_pays(b, ctx.pool, b.mul(items, i64(m * p * k)), PARALLEL_MIN_MACS)
    # a stack of products that split themselves splits only from 2 matrices a thread (fewer
    # would leave a thread idle for a whole product); smaller products from 2 in all
    fewest = b.mul(threads, i64(2)) if m * p * k >= PARALLEL_MIN_MACS else i64(2)
    with b.if_else(b.and_(split, b.icmp_signed(">=", items, fewest))) as (then, otherwise):
        with then:
            pself = declare(ctx.module, "pthread_self", I64, [])
            fields = [*args, items, b.call(pself, [], name="caller")]
            cp = task_context(ctx, fields)
            runs = b.mul(threads, i64(BLOCKS_PER_THREAD))
            runs = b.select(b.icmp_signed("<", items, runs), items, runs, name="runs")
            task = _stack_task(ctx, items_fn, [f.type for f in fields], pself)
            b.call(ctx.pool.run, [task, cp, runs])
        with otherwise:
            b.call(items_fn, [*args, i64(0), items])
    b.ret_void()


def _stack_task(
    ctx: KernelContext, items_fn: ir.Function, types: list[ir.Type], pself: ir.Function
) -> ir.Function:
    """``void KERNEL.task(ptr ctx, i64 t, i64 count)`` of emit_batched_matmul: the matrices of
    run t of count (near-equal runs of the stack), through ``items_fn``. The context is
    {A, B, C, work, n, items, the calling thread's pthread_t}: a run on the calling thread
    (whose stack may be small) gives its GEMMs the work buffer, one on a worker a null one,
    so that the GEMM packs into its own stack (WORKER_STACK_BYTES), as codegen/gemm.py's
    tasks do: no two threads share a buffer."""
    task, tb, fields, t, count = task_function(ctx.module, f"{ctx.fn.name}.task", types)
    (pa, pb, pc, work, n, items, caller) = fields
    per = tb.sdiv(tb.add(items, tb.sub(count, i64(1))), count)
    clamp = lambda v: tb.select(tb.icmp_signed("<", v, items), v, items)  # noqa: E731
    lo = clamp(tb.mul(t, per))
    hi = clamp(tb.add(lo, per))
    on_caller = tb.icmp_unsigned("==", tb.call(pself, []), caller)
    own = tb.select(on_caller, work, ir.Constant(PTR, None))
    tb.call(items_fn, [pa, pb, pc, own, n, lo, hi])
    tb.ret_void()
    return task


def _lead_strides(t: TensorType, lead: int) -> list[int]:
    """The element strides of a stack ``t`` [.., R, S] along each of ``lead`` leading axes of
    the product (its own right-aligned with them): 0 where ``t`` has none or size 1 there
    (broadcast), else the size of what follows that axis in ``t``."""
    out = [0] * lead
    own = t.rank - 2
    for axis in range(own):
        if t.shape[axis] != 1:  # what follows holds no N (only axis 0 may be N)
            out[lead - own + axis] = math.prod(int(d) for d in t.shape[axis + 1 :])
    return out


# ---------------------------------------------------------------------------- reductions

ACC64_MAX = 4096  # outputs up to this many elements accumulate in a float64 buffer on the stack


# (initial value, combine) of each reduction: sum/mean add, max/min keep NaN (llvm.maximum/minimum)
_REDUCE_INIT = {"sum": 0.0, "mean": 0.0, "max": float("-inf"), "min": float("inf")}


def _combine(b: ir.IRBuilder, op: str, acc: ir.Value, v: ir.Value, reassoc: bool = False):
    if op == "max":
        return vmath.fmax(b, acc, v)
    if op == "min":
        return vmath.fmin(b, acc, v)
    return b.fadd(acc, v, flags=("reassoc", "nsz") if reassoc else ())


def _sums_in_f64(g: Graph, node: Node) -> bool:
    """Whether reduction ``node`` accumulates in float64 (see emit_reduce)."""
    return (
        node.op in ("sum", "mean")  # max and min are exact in any type
        and node.type.dtype == "f32"
        and g[node.inputs[0]].type.rank > 0
        and not node.type.is_batched
        and node.type.size(1) <= ACC64_MAX
    )


def _rows_in_f64(g: Graph, node: Node) -> bool:
    """Whether float32 reduction ``node``, with a batched output [N, ...] of at most ACC64_MAX
    elements per row, sums more than ROW_CHUNK terms (or a count unknown at compile time) into
    each output: emit_reduce then accumulates each row's outputs in float64."""
    if node.op not in ("sum", "mean") or node.type.dtype != "f32" or _sums_in_f64(g, node):
        return False
    xt = g[node.inputs[0]].type
    if xt.rank < 2 or xt.shape[0] != BATCH or not node.type.is_batched:
        return False
    if node.type.shape[0] != BATCH or node.type.size(1) > ACC64_MAX:
        return False
    axes = normalize_axes(node.op, node.attr("axes"), xt.rank)
    if 0 in axes:
        return False
    terms = 1
    for a in axes:
        d = xt.shape[a]
        if not isinstance(d, int):
            return True
        terms *= d
    return terms > ROW_CHUNK


def middle_sum(g: Graph, node: Node) -> tuple[int, int, int | None] | None:
    """(a, b, R) when float32 reduction ``node`` sums (or averages) one contiguous block of
    axes a..b that leaves the innermost axis out, over R > ROW_CHUNK terms (None: a count
    that includes the batch size N, known only at run time), into an output that emit_reduce
    would otherwise accumulate in float32 (more than ACC64_MAX elements per row, or per
    call when N is reduced): x viewed as [P, R, M], summed over R in float64 tiles of at
    most ACC64_MAX outputs (_middle_sums). None otherwise."""
    if node.op not in ("sum", "mean") or node.type.dtype != "f32":
        return None
    if _sums_in_f64(g, node) or _rows_in_f64(g, node) or column_sum(g, node):
        return None
    xt = g[node.inputs[0]].type
    axes = normalize_axes(node.op, node.attr("axes"), xt.rank)
    if not axes or xt.rank - 1 in axes or list(axes) != list(range(axes[0], axes[-1] + 1)):
        return None
    if not all(isinstance(xt.shape[a], int) for a in range(axes[-1] + 1, xt.rank)):
        return None
    block = [xt.shape[a] for a in axes]
    if not all(isinstance(d, int) for d in block):
        return (axes[0], axes[-1], None)  # the batch axis among them: a run-time count
    r = math.prod(int(d) for d in block)
    return (axes[0], axes[-1], r) if r > ROW_CHUNK else None


def _middle_sums(ctx: KernelContext, node: Node, a: int, last: int, r: int | None) -> None:
    """out[p, m] = sum_k x[p, k, m] (times 1/R for a mean) over x viewed as [P, R, M] (P the
    axes before ``a``, R those from ``a`` to ``last``, M the rest): for each p, M in tiles of
    at most ACC64_MAX columns, each tile's sums accumulated in a float64 stack buffer over the
    R terms (each step reads the tile's contiguous columns) and rounded once. The float32
    accumulation it replaces drifted like a long float32 row did (a mean over axis 1 of
    [N, 8192, 4100] values ~0.1 was 8e-5 off)."""
    b, g = ctx.b, ctx.g
    x = node.inputs[0]
    xt = g[x].type
    m = math.prod(int(d) for d in xt.shape[last + 1 :])
    tile = min(m, ACC64_MAX)
    t = LL[node.type.dtype]
    with b.goto_entry_block():
        acc = b.alloca(F64, size=tile, name="acc64")
        acc.type = PTR  # llvmlite types an alloca as `double*`; LLVM has only `ptr`
    rv = i64(r) if r is not None else ctx.count(list(xt.shape[a : last + 1]))
    inv = None
    if node.op == "mean":
        inv = b.fdiv(ir.Constant(F64, 1.0), b.sitofp(rv, F64), name="inv_count")
    outer = ctx.count(list(xt.shape[:a]))
    with loop(b, outer, name="p") as p:
        xp = b.mul(p, b.mul(rv, i64(m), flags=("nsw",)), flags=("nsw",))
        op_ = b.mul(p, i64(m), flags=("nsw",))
        with counted_loop(b, i64(0), i64(m), tile, name="mt") as mt:
            hi = b.add(mt.iv, i64(tile), flags=("nsw",))
            hi = b.select(b.icmp_signed("<", hi, i64(m)), hi, i64(m), name="mt.hi")
            width = b.sub(hi, mt.iv, flags=("nsw",))
            with loop(b, width, name="z") as j:
                b.store(ir.Constant(F64, 0.0), b.gep(acc, [j], inbounds=True, source_etype=F64))
            base = b.add(xp, mt.iv, flags=("nsw",))
            with loop(b, rv, name="k") as k:
                row = b.add(base, b.mul(k, i64(m), flags=("nsw",)), flags=("nsw",))
                with loop(b, width, name="j") as j:
                    v = b.fpext(ctx.load(x, b.add(row, j, flags=("nsw",))), F64)
                    q = b.gep(acc, [j], inbounds=True, source_etype=F64)
                    b.store(b.fadd(b.load(q, typ=F64), v), q)
            out = b.add(op_, mt.iv, flags=("nsw",))
            with loop(b, width, name="w") as j:
                v = b.load(b.gep(acc, [j], inbounds=True, source_etype=F64), typ=F64)
                if inv is not None:
                    v = b.fmul(v, inv)
                ctx.store(node.name, b.add(out, j, flags=("nsw",)), b.fptrunc(v, t))
    b.ret_void()


def column_sum(g: Graph, node: Node) -> bool:
    """Whether reduction ``node`` sums (or averages) float32 [rows, C] over its rows in
    float64: _column_sums, written as it runs."""
    if node.op not in ("sum", "mean") or g[node.inputs[0]].type.rank != 2:
        return False
    axes = normalize_axes(node.op, node.attr("axes"), 2)
    return axes == (0,) and _sums_in_f64(g, node)


def emit_reduce(ctx: KernelContext, node: Node) -> None:
    """sum/mean/max/min over axes: set the accumulators (0 or -+inf), accumulate, scale by
    1/count for mean.

    When the innermost axis is reduced, it is summed in a register with reassociation allowed
    (the vectorizer then keeps several partial sums: a blocked summation).

    Accuracy: float32 reductions whose output has a compile-time size of at most ACC64_MAX
    elements (every reduction over the batch axis, and sums to a scalar) accumulate in float64
    (a stack buffer) and round once at the end, so a sum of n float32 values is within about
    n * 2^-53 (relative to the sum of magnitudes) plus one float32 rounding of the exact sum,
    instead of n * 2^-24 for sequential float32 accumulation. A batch-sized output (a sum
    over features for every row) that adds more than ROW_CHUNK terms per element and has at
    most ACC64_MAX elements per row does the same row by row (_rows_in_f64: a float64 buffer
    of one row's outputs, rounded into the row when it is done). Other outputs stay in
    float32; a row longer than ROW_CHUNK elements is then summed in chunks added in float64
    (_chunked_row_sum), and a block of reduced axes before the innermost (kept) one with more
    than ROW_CHUNK terms (or the batch axis N among them) is summed in float64 tiles of the
    output (middle_sum); only reduced axes that are not one contiguous block add their terms
    into the float32 output one after another. (Before, a mean of 2^23 float32 values 0.1 along a row
    gave 0.09975, and over axes (1, 2) of [N, 2^22, 2] 0.0960.)
    """
    b, g = ctx.b, ctx.g
    x = node.inputs[0]
    xt = g[x].type
    t = LL[node.type.dtype]
    axes = normalize_axes(node.op, node.attr("axes"), xt.rank)
    out_count = ctx.count(node.type.shape)
    const_count = None if node.type.is_batched else node.type.size(1)
    rows64 = _rows_in_f64(g, node)
    wide = _sums_in_f64(g, node) or rows64
    at = F64 if wide else t  # the accumulation type
    middle = middle_sum(g, node)
    if middle is not None:  # a long reduced axis before kept inner ones: float64 tiles
        _middle_sums(ctx, node, *middle)
        return
    if column_sum(g, node):  # a bias gradient: sums down the columns
        inv = None
        if node.op == "mean":
            c = ctx.count([xt.shape[0]])
            inv = b.fdiv(ir.Constant(at, 1.0), b.sitofp(c, at), name="inv_count")
        _column_sums(ctx, x, node.name, int(xt.shape[1]), inv)
        b.ret_void()
        return
    per_row = node.type.size(1)  # rows64: one row's outputs (N = 1)
    if wide:
        with b.goto_entry_block():
            dst = b.alloca(at, size=per_row if rows64 else const_count, name="acc64")
            dst.type = PTR  # llvmlite types an alloca as `double*`; LLVM has only `ptr`
    else:
        dst = ctx.ptr(node.name)
    azero = ir.Constant(at, _REDUCE_INIT[node.op])

    def widen(v: ir.Value) -> ir.Value:
        return b.fpext(v, at) if wide else v

    if not rows64:
        with loop(b, out_count, name="z") as i:
            b.store(azero, b.gep(dst, [i], inbounds=True, source_etype=at))
    if xt.rank == 0:
        ctx.store(node.name, i64(0), ctx.load(x, i64(0)))
    else:
        kept = [d for k, d in enumerate(xt.shape) if k not in axes]
        kept_strides = ctx.strides(kept, kept)
        out_strides: list = []
        j = 0
        for k in range(xt.rank):
            if k in axes:
                out_strides.append(None)
            else:
                out_strides.append(kept_strides[j])
                j += 1
        x_strides = ctx.strides(xt.shape, xt.shape)
        last = xt.rank - 1
        acc = None
        if last in axes:
            with b.goto_entry_block():
                acc = b.alloca(at, name="acc")

        def rec(axis: int, xi: ir.Value, oi: ir.Value) -> None:
            if axis == last:
                if last in axes and _row_chunked(node, xt.shape[axis], wide):
                    total = _chunked_row_sum(ctx, x, xi, ctx.dim(xt.shape[axis]), acc, at)
                    p = b.gep(dst, [oi], inbounds=True, source_etype=at)
                    b.store(_combine(b, node.op, b.load(p, typ=at), total), p)
                elif last in axes:
                    b.store(azero, acc)
                    with loop(b, ctx.dim(xt.shape[axis]), name=f"r{axis}") as i:
                        v = widen(ctx.load(x, b.add(xi, i, flags=("nsw",))))
                        b.store(_combine(b, node.op, b.load(acc, typ=at), v, True), acc)
                    p = b.gep(dst, [oi], inbounds=True, source_etype=at)
                    b.store(_combine(b, node.op, b.load(p, typ=at), b.load(acc, typ=at)), p)
                else:
                    with loop(b, ctx.dim(xt.shape[axis]), name=f"r{axis}") as i:
                        v = widen(ctx.load(x, b.add(xi, i, flags=("nsw",))))
                        p = b.gep(
                            dst, [b.add(oi, i, flags=("nsw",))], inbounds=True, source_etype=at
                        )
                        b.store(_combine(b, node.op, b.load(p, typ=at), v), p)
                return
            with loop(b, ctx.dim(xt.shape[axis]), name=f"r{axis}") as i:
                # ctx.strides gives None for a size-1 axis (i is 0 there): no offset to add
                xs = x_strides[axis]
                nxi = xi if xs is None else b.add(xi, b.mul(i, xs, flags=("nsw",)), flags=("nsw",))
                s = out_strides[axis]
                noi = oi if s is None else b.add(oi, b.mul(i, s, flags=("nsw",)), flags=("nsw",))
                rec(axis + 1, nxi, noi)

        if rows64:  # row by row: its outputs in float64 (dst), rounded once into the row
            inv = None
            if node.op == "mean":
                c = ctx.count([xt.shape[a] for a in axes])
                inv = b.fdiv(ir.Constant(at, 1.0), b.sitofp(c, at), name="inv_count")
            with loop(b, ctx.dim(xt.shape[0]), name="rw") as r:
                with loop(b, i64(per_row), name="rz") as j:
                    b.store(azero, b.gep(dst, [j], inbounds=True, source_etype=at))
                rec(1, b.mul(r, x_strides[0], flags=("nsw",)), i64(0))
                base = b.mul(r, i64(per_row), flags=("nsw",))
                with loop(b, i64(per_row), name="rf") as j:
                    v = b.load(b.gep(dst, [j], inbounds=True, source_etype=at), typ=at)
                    if inv is not None:
                        v = b.fmul(v, inv)
                    ctx.store(node.name, b.add(base, j, flags=("nsw",)), b.fptrunc(v, t))
            b.ret_void()
            return
        rec(0, i64(0), i64(0))
    inv = None
    if node.op == "mean":
        c = ctx.count([xt.shape[a] for a in axes])
        inv = b.fdiv(ir.Constant(at, 1.0), b.sitofp(c, at), name="inv_count")
    if wide or inv is not None:
        with loop(b, out_count, name="m") as i:
            v = b.load(b.gep(dst, [i], inbounds=True, source_etype=at), typ=at)
            if inv is not None:
                v = b.fmul(v, inv)
            ctx.store(node.name, i, b.fptrunc(v, t) if wide else v)
    b.ret_void()


# A float32 sum along a row (the innermost axis, batched output: not in float64, see
# emit_reduce) keeps its register partial sums (reassociated: the vectorizer's lanes times its
# interleave) over at most this many elements, then adds them into a float64 total: a row of
# 2^23 float32 values 0.1 summed 0.09975 per element in float32 registers (2.5e-3 relative),
# within one float32 rounding with the chunks. Rows of at most ROW_CHUNK elements known at
# compile time are summed as before (one chunk: the same code and the same bits).
ROW_CHUNK = 4096


def _row_chunked(node: Node, length: int | str, wide: bool) -> bool:
    """Whether emit_reduce sums ``node``'s rows of ``length`` elements in chunks."""
    if node.op not in ("sum", "mean") or wide or node.type.dtype != "f32":
        return False
    return not isinstance(length, int) or length > ROW_CHUNK


def _sum_in_f64_chunks(
    b: ir.IRBuilder, n: ir.Value, acc: ir.Value, at: ir.Type, add: Callable[[ir.Value], None]
) -> ir.Value:
    """Blocked summation over the indices [0, n): for each chunk of ROW_CHUNK indices the
    ``at`` stack slot ``acc`` is zeroed and ``add(i)`` accumulates element i into it (the
    chunk reassociated in registers), then the chunk's sum is added in float64; the float64
    total is rounded once to ``at``. The error bound grows with ROW_CHUNK + n / ROW_CHUNK
    terms instead of n (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 4.2:
    blocked summation)."""
    with b.goto_entry_block():
        total = b.alloca(F64, name="acc.chunks")
    b.store(ir.Constant(F64, 0.0), total)
    with counted_loop(b, i64(0), n, ROW_CHUNK, name="rc") as ch:
        hi = b.add(ch.iv, i64(ROW_CHUNK), flags=("nsw",))
        hi = b.select(b.icmp_signed("<", hi, n), hi, n, name="rc.hi")
        b.store(ir.Constant(at, 0.0), acc)
        with loop(b, hi, name="rcs", start=ch.iv) as i:
            add(i)
        part = b.fpext(b.load(acc, typ=at), F64)
        b.store(b.fadd(b.load(total, typ=F64), part), total)
    return b.fptrunc(b.load(total, typ=F64), at)


def _chunked_row_sum(
    ctx: KernelContext, x: str, xi: ir.Value, n: ir.Value, acc: ir.Value, at: ir.Type
) -> ir.Value:
    """sum_{i < n} x[xi + i] as the float64 sum of float32 sums of ROW_CHUNK elements each
    (each chunk reassociated in registers, as emit_reduce's row loop), rounded once to ``at``
    (_sum_in_f64_chunks). ``acc``: emit_reduce's float32 row accumulator (a stack slot)."""
    b = ctx.b

    def add(i: ir.Value) -> None:
        v = ctx.load(x, b.add(xi, i, flags=("nsw",)))
        b.store(b.fadd(b.load(acc, typ=at), v, flags=("reassoc", "nsz")), acc)

    return _sum_in_f64_chunks(b, n, acc, at, add)


COLSUM_BLOCK = 32  # columns whose float64 sums a column-sum kernel keeps in registers
COLSUM_SCALARS = 8  # columns left over from the blocks: summed this many at a time


def _column_sums(ctx: KernelContext, x: str, out: str, cols: int, inv: ir.Value | None) -> None:
    """out[j] = sum_i x[i, j] (times ``inv``, a float64, for a mean) for x [rows, cols] float32,
    summed in float64 and rounded once (a bias gradient: the column sums of a batch of output
    gradients).

    Blocks of COLSUM_BLOCK columns keep their sums in registers down all rows (vectors of 16
    float64: 4 zmm or 8 ymm registers); the columns left over (cols % COLSUM_BLOCK) keep one
    scalar each, COLSUM_SCALARS columns per pass down the rows. Every column is summed row
    after row from 0, as emit_reduce's general loop does, so the result is the same to the
    bit. The general loop reads and writes a float64 buffer for every element: the 512 x 256
    bias gradient of the 784-256-128-10 step took 19.7 us (with the call) where this takes
    11.5 us (one Xeon core, AVX-512; 512 x 128: 4.5 and 5.1 us, within noise). Blocks of 64
    and 128 columns ran 10.0 and 8.4 us on AVX-512, but would spill on the 16 registers of
    AVX2. Its loops are written as they should run (marked against LLVM's vectorizer and
    unroller), and the sums go straight to ``out``: no float64 buffer to clear and copy.
    """
    b = ctx.b
    half = 16  # float64 lanes per carried vector
    f32 = LL["f32"]
    vf, vd = ir.VectorType(f32, half), ir.VectorType(F64, half)
    rows = ctx.dim(ctx.g[x].type.shape[0])
    src, dst = ctx.ptr(x), ctx.ptr(out)
    full = cols - cols % COLSUM_BLOCK

    def finish(v: ir.Value) -> ir.Value:
        if inv is not None:
            scale = inv
            if isinstance(v.type, ir.VectorType):
                scale = b.insert_element(ir.Constant(vd, None), inv, ir.Constant(I32, 0))
                zeros = vconst(ir.VectorType(I32, half), 0)
                scale = b.shuffle_vector(scale, scale, zeros)
            v = b.fmul(v, scale)
        return b.fptrunc(v, vf if isinstance(v.type, ir.VectorType) else f32)

    if full:
        zero = vconst(vd, 0.0)
        with counted_loop(b, i64(0), i64(full), COLSUM_BLOCK, name="cb") as cb:
            carried = [zero] * (COLSUM_BLOCK // half)
            with counted_loop(b, i64(0), rows, 1, name="cr", carried=carried) as cr:
                base = b.add(b.mul(cr.iv, i64(cols), flags=("nsw",)), cb.iv, flags=("nsw",))
                sums = []
                for h, acc in enumerate(cr.carried):
                    p = b.gep(src, [b.add(base, i64(h * half))], inbounds=True, source_etype=f32)
                    sums.append(b.fadd(acc, b.fpext(b.load(p, typ=vf, align=4), vd)))
                cr.carried = sums
            for h, acc in enumerate(cr.final):  # once per block: a vector store per vector
                p = b.gep(dst, [b.add(cb.iv, i64(h * half))], inbounds=True, source_etype=f32)
                b.store(finish(acc), p, align=4)
    for lo in range(full, cols, COLSUM_SCALARS):
        group = range(lo, min(cols, lo + COLSUM_SCALARS))
        carried = [ir.Constant(F64, 0.0)] * len(group)
        with counted_loop(b, i64(0), rows, 1, name=f"cs{lo}", carried=carried) as r:
            base = b.mul(r.iv, i64(cols), flags=("nsw",))
            r.carried = [
                b.fadd(acc, b.fpext(ctx.load(x, b.add(base, i64(j), flags=("nsw",))), F64))
                for acc, j in zip(r.carried, group, strict=True)
            ]
        for acc, j in zip(r.final, group, strict=True):
            b.store(finish(acc), b.gep(dst, [i64(j)], inbounds=True, source_etype=f32))


# ---------------------------------------------------------------------------- row-wise


# Rows of fewer columns than this (a classifier's 10 classes) are walked as written: LLVM's
# vectorizer would add a vector body that runs at most once and a scalar remainder, and
# unroll both (the 784-256-128-10 step's softmax cross-entropy kernels: 0.065 -> 0.035 s of
# compile time; run time within noise: 784 step b32-b512 at 1 and 2 threads, A/B); wider rows
# are vectorized. The float32 softmax cross-entropy takes such a row as one vector instead
# (_xent_narrow_rows).
SMALL_ROW = 16


@contextmanager
def _col_loop(b: ir.IRBuilder, cols: ir.Value, name: str) -> Iterator[ir.Value]:
    """``for c in range(cols)`` over a row's columns (see SMALL_ROW)."""
    small = isinstance(cols, ir.Constant) and cols.constant < SMALL_ROW
    with counted_loop(b, i64(0), cols, 1, name, as_written=small, exit_name="exit") as s:
        yield s.iv


def _row_max_sum(ctx: KernelContext, z: str, row: ir.Value, cols: ir.Value, t: ir.Type):
    """(max_j z[row, j], sum_j exp(z[row, j] - max)) with two passes over the row.

    A float32 row longer than ROW_CHUNK (or of a length unknown at compile time) sums its
    exponentials in chunks of ROW_CHUNK added in float64 (_sum_in_f64_chunks), as
    emit_reduce's long rows (a softmax over 2^22 classes was 1.2e-3 off in float32
    registers); shorter rows as before."""
    b = ctx.b
    base = b.mul(row, cols, flags=("nsw",))
    with b.goto_entry_block():
        mx = b.alloca(t, name="row_max")
        sm = b.alloca(t, name="row_sum")
    b.store(ir.Constant(t, float("-inf")), mx)
    with _col_loop(b, cols, "c0") as c:
        v = ctx.load(z, b.add(base, c))
        b.store(vmath.fmax(b, b.load(mx, typ=t), v), mx)
    m = b.load(mx, typ=t, name="m")

    def add_exps(c: ir.Value) -> None:
        v = ctx.load(z, b.add(base, c))
        e = vmath.exp(b, b.fsub(v, m))
        b.store(b.fadd(b.load(sm, typ=t), e, flags=("reassoc", "nsz")), sm)

    short = isinstance(cols, ir.Constant) and cols.constant <= ROW_CHUNK
    if short or t != LL["f32"]:
        b.store(ir.Constant(t, 0.0), sm)
        with _col_loop(b, cols, "c1") as c:
            add_exps(c)
        return base, m, b.load(sm, typ=t, name="s")
    return base, m, _sum_in_f64_chunks(b, cols, sm, t, add_exps)


def _emit_rows_by_max_sum(
    ctx: KernelContext,
    node: Node,
    per_row: Callable[[ir.IRBuilder, ir.Value], ir.Value],
    per_element: Callable[[ir.IRBuilder, ir.Value, ir.Value], ir.Value],
) -> None:
    """y[r, j] = per_element(x[r, j] - m_r, per_row(s_r)) with the row's max m_r and sum of
    exponentials s_r (``_row_max_sum``): softmax and log_softmax over the last axis."""
    b = ctx.b
    t = LL[node.type.dtype]
    rows, cols = (ctx.dim(d) for d in node.type.shape)
    x = node.inputs[0]
    with loop(b, rows, name="row") as r:
        base, m, s = _row_max_sum(ctx, x, r, cols, t)
        k = per_row(b, s)
        with loop(b, cols, name="c2") as c:
            i = b.add(base, c)
            ctx.store(node.name, i, per_element(b, b.fsub(ctx.load(x, i), m), k))
    b.ret_void()


def emit_softmax(ctx: KernelContext, node: Node) -> None:
    """y[r, j] = exp(x[r, j] - m_r) * (1 / s_r)."""
    one = ir.Constant(LL[node.type.dtype], 1.0)
    _emit_rows_by_max_sum(
        ctx,
        node,
        lambda b, s: b.fdiv(one, s),
        lambda b, d, inv: b.fmul(vmath.exp(b, d), inv),
    )


def emit_log_softmax(ctx: KernelContext, node: Node) -> None:
    """y[r, j] = (x[r, j] - m_r) - log s_r."""
    _emit_rows_by_max_sum(
        ctx, node, lambda b, s: vmath.log(b, s, name="log_s"), lambda b, d, ls: b.fsub(d, ls)
    )


def emit_argmax(ctx: KernelContext, node: Node) -> None:
    """y[o, i] = the first k with x[o, k, i] largest (a NaN counts as largest), as an i32; x
    viewed as [outer, axis, inner]."""
    b = ctx.b
    x = node.inputs[0]
    xt = ctx.g[x].type
    (a,) = normalize_axes("argmax", OPS["argmax"].attr(node, "axis"), xt.rank)
    t = LL[xt.dtype]
    outer, inner = ctx.count(xt.shape[:a]), ctx.count(xt.shape[a + 1 :])
    length = ctx.dim(xt.shape[a])
    with b.goto_entry_block():
        best_p = b.alloca(t, name="best")
        idx_p = b.alloca(I64, name="best_k")
    with loop(b, outer, name="o") as o, loop(b, inner, name="i") as i:
        b.store(ir.Constant(t, float("-inf")), best_p)
        b.store(i64(0), idx_p)
        base = b.add(b.mul(b.mul(o, length), inner), i)
        with loop(b, length, name="k") as k:
            v = ctx.load(x, b.add(base, b.mul(k, inner)))
            best = b.load(best_p, typ=t)
            # v > best, or v is the first NaN; once best is NaN it stays
            take = b.and_(b.fcmp_unordered(">", v, best), b.fcmp_ordered("ord", best, best))
            b.store(b.select(take, v, best), best_p)
            b.store(b.select(take, k, b.load(idx_p, typ=I64)), idx_p)
        out = b.add(b.mul(o, inner), i)
        ctx.store(node.name, out, b.trunc(b.load(idx_p, typ=I64), I32))
    b.ret_void()


def _label(ctx: KernelContext, labels: str, r: ir.Value, cols: ir.Value, ignore: int | None):
    """(label as i64 clamped into range, i1 whether it was in range, i1 whether it is
    ``ignore`` (None when there is no ignore_index)): no read out of bounds."""
    b = ctx.b
    lab = b.sext(ctx.load(labels, r), I64)
    ok = b.and_(b.icmp_signed(">=", lab, i64(0)), b.icmp_signed("<", lab, cols))
    skip = None if ignore is None else b.icmp_signed("==", lab, i64(ignore), name="ignored")
    return b.select(ok, lab, i64(0)), ok, skip


class _XentRows:
    """A softmax cross-entropy kernel's options as its row loops read them: ``ignore`` (the
    ignore_index or None), ``table`` (the class weights as a constant array, or None),
    ``none`` (reduction "none": the loss stored per row, dy read per row as ``dy``), ``eps``
    (label_smoothing e, 0.0 without) with ``classes`` C and ``wsum`` W (the weights' sum, C
    without weights)."""

    def __init__(self, ctx: KernelContext, first: Node, t: ir.Type) -> None:
        self.ignore = first.attr("ignore_index")
        self.reduction = first.attr("reduction", "mean")
        self.none = self.reduction == "none"
        self.dy: str | None = None
        self.t = t
        weight = first.attr("weight")
        self.classes = int(ctx.g[first.inputs[0]].type.shape[-1])
        self.eps = float(first.attr("label_smoothing", None) or 0.0)
        self.values = None if weight is None else tuple(float(v) for v in weight)
        self.wsum = float(sum(weight)) if weight is not None else float(self.classes)
        self.table = None
        if weight is not None:
            at = ir.ArrayType(t, len(weight))
            self.table = ir.GlobalVariable(
                ctx.module, at, name=ctx.module.get_unique_name("xent.weight")
            )
            self.table.linkage = "internal"
            self.table.global_constant = True
            self.table.initializer = ir.Constant(at, [float(v) for v in weight])

    def weight(self, b: ir.IRBuilder, lab: ir.Value) -> ir.Value | None:
        """The class weight of a row's (clamped) label, None without weights."""
        if self.table is None:
            return None
        at = self.table.value_type
        p = b.gep(self.table, [i64(0), lab], inbounds=True, source_etype=at)
        return b.load(p, typ=at.element, name="w_label")

    def class_weight(self, b: ir.IRBuilder, c: ir.Value) -> ir.Value:
        """Column c's class weight (1 without weights)."""
        w = self.weight(b, c)
        return ir.Constant(self.t, 1.0) if w is None else w

    def grad_coefs(self, ctx: KernelContext, r: ir.Value, w: ir.Value | None, scale):
        """A row's gradient dz_j = a softmax_j - hit [j == label] - cw w_j as (a, hit, cw):
        the row's factor f = dy / divisor (``scale``), or its own dy for "none"; without
        smoothing a = hit = f w_label and cw None; with smoothing e (torch's, C classes,
        weights' sum W) a = (1 - e) f w_label + e / C W f, hit = (1 - e) f w_label,
        cw = e / C f."""
        b = ctx.b
        if self.none:
            assert self.dy is not None
            node = ctx.g[self.dy]
            scale = (
                ctx.inline_value(node) if is_inline(ctx.sched, self.dy) else ctx.load(self.dy, r)
            )
        hit = scale if w is None else b.fmul(scale, w)
        if not self.eps:
            return hit, hit, None
        hit = b.fmul(hit, ir.Constant(self.t, 1.0 - self.eps))
        cw = b.fmul(scale, ir.Constant(self.t, self.eps / self.classes))
        return b.fadd(hit, b.fmul(cw, ir.Constant(self.t, self.wsum))), hit, cw

    def smoothed(self, b: ir.IRBuilder, term: ir.Value, spread: ir.Value, s: ir.Value):
        """The row's loss with smoothing: (1 - e) term + e / C (sum_c w_c (m - z_c) + W log s)
        (``spread``: the sum; the row's -sum_c w_c log softmax_c in the log-sum-exp form)."""
        t = self.t
        smooth = b.fadd(spread, b.fmul(ir.Constant(t, self.wsum), vmath.log(b, s)))
        return b.fadd(
            b.fmul(term, ir.Constant(t, 1.0 - self.eps)),
            b.fmul(smooth, ir.Constant(t, self.eps / self.classes)),
        )


def _divisor(ctx: KernelContext, labels: str, rows: ir.Value, opts: _XentRows) -> ir.Value:
    """float64: what the sum of the rows' terms is divided by: for reduction "mean" the rows
    whose label is not the ignore_index (all of them when None), or the sum of their class
    weights, 1 when that is 0 (the mean over no row is taken as 0: the sums are 0); 1 for
    "sum" and "none"."""
    b = ctx.b
    if opts.reduction != "mean":
        return ir.Constant(F64, 1.0)
    if opts.ignore is None and opts.table is None:
        return b.sitofp(rows, F64)
    if opts.table is None:
        with counted_loop(b, i64(0), rows, 1, name="kept", carried=[i64(0)]) as k:
            lab = b.sext(ctx.load(labels, k.iv), I64)
            keep = b.zext(b.icmp_signed("!=", lab, i64(opts.ignore)), I64)
            k.carried = [b.add(k.carried[0], keep)]
        kept = b.sitofp(k.final[0], F64)
    else:
        cols = i64(opts.table.value_type.count)
        with counted_loop(b, i64(0), rows, 1, name="kept", carried=[ir.Constant(F64, 0.0)]) as k:
            lab, _, skip = _label(ctx, labels, k.iv, cols, opts.ignore)
            w = (
                b.fpext(opts.weight(b, lab), F64)
                if opts.table.value_type.element != F64
                else opts.weight(b, lab)
            )
            if skip is not None:
                w = b.select(skip, ir.Constant(F64, 0.0), w)
            k.carried = [b.fadd(k.carried[0], w)]
        kept = k.final[0]
    return b.select(
        b.fcmp_ordered("==", kept, ir.Constant(F64, 0.0)), ir.Constant(F64, 1.0), kept, name="kept"
    )


def _xent_term(b: ir.IRBuilder, m: ir.Value, s: ir.Value, zl: ir.Value) -> ir.Value:
    """One row's cross-entropy -log softmax(z)_label = (m - z_label) + log s.

    m is the row max and s = sum_j exp(z_j - m) lies in [1, C]. The difference m - z_label is
    taken first: it is exact when the two are close (Sterbenz) and never rounds the small log s
    against a large m, as (m + log s) - z_label does (logits [1e8, 1e8] would give 0, not ln 2).
    """
    return b.fadd(b.fsub(m, zl), vmath.log(b, s))


def _xent_grad_row(ctx: KernelContext, dz, z, row, cols, coefs, bad, sums, opts) -> None:
    """One row of dz = a softmax(z) - hit onehot [- cw w] (``coefs``: _XentRows.grad_coefs),
    stored (to ``dz`` unless None) and/or added to the column sums ``sums`` = (pointer, type,
    float64?) unless None."""
    b = ctx.b
    base, m, s, lab, ok, skip = row
    a, hit, cw = coefs
    inv = b.fmul(b.fdiv(ir.Constant(s.type, 1.0), s), a)
    with _col_loop(b, cols, "c2") as c:
        i = b.add(base, c)
        v = b.fmul(vmath.exp(b, b.fsub(ctx.load(z, i), m)), inv)
        v = b.select(b.icmp_signed("==", c, lab), b.select(ok, b.fsub(v, hit), bad), v)
        if cw is not None:  # label smoothing's uniform part
            v = b.fsub(v, b.fmul(cw, opts.class_weight(b, c)))
        if skip is not None:  # an ignored row: no gradient
            v = b.select(skip, ir.Constant(v.type, 0.0), v)
        if dz is not None:
            ctx.store(dz, i, v)
        if sums:
            p, at, wide = sums
            q = b.gep(p, [c], inbounds=True, source_etype=at)
            b.store(b.fadd(b.load(q, typ=at), b.fpext(v, at) if wide else v), q)


def _lanes_reduce(b: ir.IRBuilder, v: ir.Value, op: Callable[[ir.Value, ir.Value], ir.Value]):
    """op over the lanes of ``v`` (a power of two of them) by halving: a scalar."""
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
        v = op(lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


def _xent_narrow_rows(
    ctx: KernelContext,
    z: str,
    labels: str,
    rows: ir.Value,
    cols: int,
    loss_acc: ir.Value | None,
    grad: tuple[str | None, ir.Value] | None,
    sums: ir.Value | None,
    opts: _XentRows,
    loss_rows: str | None = None,
) -> None:
    """emit_softmax_cross_entropy's row loop for float32 rows of fewer than SMALL_ROW columns
    (a classifier's 10 classes), each row one vector of the next power of two of lanes: its
    max and sum of exponentials by halving the vector, exp(z - m) computed once per element
    (the loss's sum and the gradient share it), the gradient row stored from the vector.

    ``loss_acc``: the float64 loss accumulator (None: no loss summed); ``loss_rows``: the
    loss's value stored per row (reduction "none"; None: not); ``grad``: (dz's value or None
    when not stored, scale) or None; ``sums``: the float32 column sums' output (None: none),
    summed in float64 and rounded once; ``opts``: the ops' options (_XentRows).

    The same values as the general loop (which walks such rows as written, one scalar exp per
    element and pass) but for the order of the sum of exponentials (a tree over the lanes, as
    the general loop's reassociable sum may be): the loss is still added row after row in
    float64, each column sum row after row in float64 (kept in a register). A whole
    training step with 10 classes (a 10-10 dense layer, SGD, 1 thread, bare entry): 24 -> 9 us
    at batch 128, 86 -> 31 us at 512 (the whole 784-256-128-10 step's kernel: from 1.7-2.1% to
    0.5% of its samples, perf, b128 and b512).
    """
    b = ctx.b
    t = LL["f32"]
    lanes = 2
    while lanes < cols:
        lanes *= 2
    vt, vd = ir.VectorType(t, lanes), ir.VectorType(F64, lanes)
    live = [ir.Constant(ir.IntType(1), k < cols) for k in range(lanes)]
    lane_no = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    # the class weights as lanes (1 without; 0 past the row), for label smoothing's sums
    wl = opts.values or (1.0,) * cols
    weights = ir.Constant(vt, [float(wl[k]) if k < cols else 0.0 for k in range(lanes)])
    zero_d = vconst(vd, 0.0)
    carried = [zero_d] if sums is not None else []
    if loss_acc is not None:
        carried.append(b.load(loss_acc, typ=F64))
    src = ctx.ptr(z)
    with counted_loop(b, i64(0), rows, 1, name="row", carried=carried) as r:
        base = b.mul(r.iv, i64(cols), flags=("nsw",))
        # the row's columns as scalar loads into the low lanes (LLVM merges them into vector
        # loads of exactly the row's bytes); the lanes past the row hold -inf
        zv = ir.Constant(vt, [float("-inf")] * lanes)
        for k in range(cols):
            p = b.gep(src, [b.add(base, i64(k))], inbounds=True, source_etype=t)
            zv = b.insert_element(zv, b.load(p, typ=t), ir.Constant(I32, k))
        m = _lanes_reduce(b, zv, lambda x, y: vmath.fmax(b, x, y))
        # exp of 0 in the lanes past the row (then zeroed): exp(-inf - m) would go through
        # the subnormal range, an assist of some hundred cycles per row on x86
        pad = ir.Constant(ir.VectorType(ir.IntType(1), lanes), live)
        zero = vconst(vt, 0.0)
        e = vmath.exp(b, b.select(pad, b.fsub(zv, _splat(b, m, lanes)), zero))
        e = b.select(pad, e, zero)
        s = _lanes_reduce(b, e, lambda x, y: b.fadd(x, y, flags=("reassoc", "nsz")))
        lab, ok, skip = _label(ctx, labels, r.iv, i64(cols), opts.ignore)
        w = opts.weight(b, lab)
        out = list(r.carried)
        if loss_acc is not None or loss_rows is not None:
            zl = ctx.load(z, b.add(base, lab))
            term = b.select(ok, _xent_term(b, m, s, zl), ir.Constant(t, float("nan")))
            if w is not None:
                term = b.fmul(term, w)
            if opts.eps:  # sum_c w_c (m - z_c) over the row's lanes
                gap = b.select(pad, b.fsub(_splat(b, m, lanes), zv), zero)
                if opts.table is not None:
                    gap = b.fmul(gap, weights)
                spread = _lanes_reduce(b, gap, lambda x, y: b.fadd(x, y, flags=("reassoc", "nsz")))
                term = opts.smoothed(b, term, spread, s)
            if skip is not None:
                term = b.select(skip, ir.Constant(t, 0.0), term)
            if loss_rows is not None:
                ctx.store(loss_rows, r.iv, term)
            else:
                out[-1] = b.fadd(out[-1], b.fpext(term, F64))
        if grad is not None:
            dz, scale = grad
            a, hit, cw = opts.grad_coefs(ctx, r.iv, w, scale)
            inv = b.fmul(b.fdiv(ir.Constant(t, 1.0), s), a)
            v = b.fmul(e, _splat(b, inv, lanes))
            at_label = b.icmp_signed("==", lane_no, _splat(b, lab, lanes))
            fix = b.select(
                ok, b.fsub(v, _splat(b, hit, lanes)), ir.Constant(vt, [float("nan")] * lanes)
            )
            v = b.select(at_label, fix, v)
            if cw is not None:  # label smoothing's uniform part
                v = b.fsub(v, b.fmul(_splat(b, cw, lanes), weights))
            if skip is not None:  # an ignored row: no gradient
                v = b.select(skip, zero, v)
            if dz is not None:
                for k in range(cols):
                    ctx.store(dz, b.add(base, i64(k)), b.extract_element(v, ir.Constant(I32, k)))
            if sums is not None:
                out[0] = b.fadd(out[0], b.fpext(v, vd))
        r.carried = out
    if sums is not None:
        for k in range(cols):
            p = b.gep(sums, [i64(k)], inbounds=True, source_etype=t)
            b.store(b.fptrunc(b.extract_element(r.final[0], ir.Constant(I32, k)), t), p)
    if loss_acc is not None:
        b.store(r.final[-1], loss_acc)


def _xent_general_rows(
    ctx: KernelContext, z, labels, rows, cols, loss, acc, grad, stored, colsum, scale, opts
) -> None:
    """emit_softmax_cross_entropy's row loop for any rows: two passes over each row for its
    max and sum of exponentials (``_row_max_sum``), then the loss term and the gradient row
    (``_xent_grad_row``); the column sums accumulated as emit_reduce does (float64 for small
    float32 outputs)."""
    b = ctx.b
    t = LL[ctx.g[z].type.dtype]
    d = F64
    bad = ir.Constant(t, float("nan"))
    if colsum is not None:
        count = colsum.type.size(1)
        wide = colsum.type.dtype == "f32" and count <= ACC64_MAX
        at = d if wide else t
        if wide:
            with b.goto_entry_block():
                sums = b.alloca(at, size=count, name="acc64")
        else:
            sums = ctx.ptr(colsum.name)
        with _col_loop(b, cols, "z") as c:
            b.store(ir.Constant(at, 0.0), b.gep(sums, [c], inbounds=True, source_etype=at))
    with loop(b, rows, name="row") as r:
        base, m, s = _row_max_sum(ctx, z, r, cols, t)
        lab, ok, skip = _label(ctx, labels, r, cols, opts.ignore)
        w = opts.weight(b, lab)
        if loss is not None:
            zl = ctx.load(z, b.add(base, lab))
            term = b.select(ok, _xent_term(b, m, s, zl), bad)
            if w is not None:
                term = b.fmul(term, w)
            if opts.eps:  # sum_c w_c (m - z_c), one more pass over the row
                zero = ir.Constant(t, 0.0)
                with counted_loop(b, i64(0), cols, 1, name="spread", carried=[zero]) as sp:
                    gap = b.fsub(m, ctx.load(z, b.add(base, sp.iv)))
                    sp.carried = [b.fadd(sp.carried[0], b.fmul(opts.class_weight(b, sp.iv), gap))]
                term = opts.smoothed(b, term, sp.final[0], s)
            if skip is not None:
                term = b.select(skip, ir.Constant(t, 0.0), term)
            if acc is None:  # reduction "none": the row's own loss
                if loss.name in ctx.key_of:
                    ctx.store(loss.name, r, term)
            else:
                b.store(b.fadd(b.load(acc, typ=d), b.fpext(term, d) if t != d else term), acc)
        if grad is not None:
            _xent_grad_row(
                ctx,
                grad.name if stored else None,
                z,
                (base, m, s, lab, ok, skip),
                cols,
                opts.grad_coefs(ctx, r, w, scale),
                bad,
                (sums, at, wide) if colsum is not None else None,
                opts,
            )
    if colsum is not None and wide:
        with _col_loop(b, cols, "m") as c:
            v = b.load(b.gep(sums, [c], inbounds=True, source_etype=at), typ=at)
            ctx.store(colsum.name, c, b.fptrunc(v, t))


def narrow_xent(g: Graph, kernel: Kernel) -> bool:
    """A softmax cross-entropy kernel whose rows are float32 of fewer than SMALL_ROW columns:
    each row one vector (_xent_narrow_rows), the whole kernel written as it runs."""
    first = g[kernel.nodes[0]]
    if first.op not in ("softmax_cross_entropy", "softmax_cross_entropy_grad"):
        return False
    zt = g[first.inputs[0]].type
    cols = zt.shape[-1]
    return isinstance(cols, int) and cols < SMALL_ROW and zt.dtype == "f32"


def written_as_run(g: Graph, kernel: Kernel) -> bool:
    """Whether a kernel's LLVM IR is already the code to run: vectors written by hand and
    every loop marked against LLVM's vectorizer and unroller (column sums, narrow softmax
    cross-entropy rows). ModuleBuilder compiles those with a short pass list instead of O3,
    whose loop passes cost some 3-10 ms per kernel and find nothing to do."""
    if kernel.kind == "reduce":
        return column_sum(g, g[kernel.nodes[0]])
    return kernel.kind == "rowwise" and narrow_xent(g, kernel)


def emit_softmax_cross_entropy(ctx: KernelContext, kernel: Kernel) -> None:
    """Softmax cross-entropy over the rows of the logits z [rows, C] with labels i32[rows] (or
    z [N, .., C] with labels [N, ..]: the N * .. positions are the rows), in one pass over the
    rows; each of its three results is optional (present in the kernel):

    - the loss ``softmax_cross_entropy(z, labels)`` = sum_r ((m_r - z[r, label_r]) + log s_r)
      / rows, accumulated in float64 (``_xent_term``);
    - the gradient ``softmax_cross_entropy_grad(z, labels, dy)``: dz[r, j] = (softmax(z[r])_j
      - [j == label_r]) * dy / rows, stored only when a value outside the kernel reads it (else
      the schedule gives it no buffer);
    - the column sums of dz ``sum(dz) {axes=[0]}`` (the bias gradient), added over the rows in
      order as emit_reduce does (in float64 for small float32 outputs).

    A group of these is made by the pass ``fuse_softmax_cross_entropy``; a lone loss or
    gradient is a kernel of one. Each row's max m_r and sum of exponentials s_r are computed
    once. A label out of range makes its row's loss and dz[r, 0] NaN (never an out-of-bounds
    read). The ops' options (_XentRows): with ``ignore_index`` k rows labelled k add 0 to the
    loss and have dz 0; with ``weight`` row r's term and dz row are scaled by w[label_r] (a
    constant table); for reduction "mean" with either, a first pass sums the kept rows' weights
    (counts them without weights: the divisor instead of rows; 1 when that is 0, the sums
    being 0); "sum" divides by 1; "none" stores each row's term (no sum) and reads dy per row.
    """
    b, g = ctx.b, ctx.g
    by_op = {g[v].op: g[v] for v in kernel.nodes}
    grad = by_op.get("softmax_cross_entropy_grad")
    loss = by_op.get("softmax_cross_entropy")
    colsum = by_op.get("sum") if grad is not None else None
    first = grad if grad is not None else loss
    assert first is not None  # the kernel holds the loss, the gradient or both
    z, labels = first.inputs[:2]
    stored = grad is not None and grad.name in ctx.key_of
    t = LL[g[z].type.dtype]
    d = F64
    shape = g[z].type.shape  # [rows, C], or [N, .., C]: every position a row (row-major)
    rows, cols = ctx.product(shape[:-1]), ctx.dim(shape[-1])
    opts = _XentRows(ctx, first, t)
    kept = _divisor(ctx, labels, rows, opts)
    scale = acc = None
    if grad is not None and opts.none:
        opts.dy = grad.inputs[2]  # one value per row, read in the row loop
    elif grad is not None:
        dy = grad.inputs[2]
        dyv = ctx.inline_value(g[dy]) if is_inline(ctx.sched, dy) else ctx.load(dy, i64(0))
        scale = b.fdiv(dyv, b.fptrunc(kept, t) if t != d else kept, name="scale")
    if loss is not None and not opts.none:
        with b.goto_entry_block():
            acc = b.alloca(d, name="loss_acc")
        b.store(ir.Constant(d, 0.0), acc)
    if narrow_xent(g, kernel):  # every row one vector: the general loop is not emitted
        _xent_narrow_rows(
            ctx,
            z,
            labels,
            rows,
            cols.constant,
            acc,
            (grad.name if stored else None, scale) if grad is not None else None,
            ctx.ptr(colsum.name) if colsum is not None else None,
            opts,
            loss.name if loss is not None and opts.none and loss.name in ctx.key_of else None,
        )
    else:
        _xent_general_rows(ctx, z, labels, rows, cols, loss, acc, grad, stored, colsum, scale, opts)
    if loss is not None and acc is not None:
        mean = b.fdiv(b.load(acc, typ=d), kept)
        ctx.store(loss.name, i64(0), b.fptrunc(mean, t) if t != d else mean)
    b.ret_void()


def _of_node(emit: Callable[[KernelContext, Node], None]) -> Emitter:
    """An emitter of a kernel of one node from a function of that node."""
    return lambda ctx, kernel: emit(ctx, ctx.g[kernel.nodes[0]])


Emitter = Callable[[KernelContext, Kernel], None]

# row-wise kernels by the op of their first node (a fused group of the cross-entropy's loss,
# gradient and column sums starts with the loss or the gradient)
ROWWISE_EMITTERS: dict[str, Emitter] = {
    "softmax": _of_node(emit_softmax),
    "log_softmax": _of_node(emit_log_softmax),
    "softmax_cross_entropy": emit_softmax_cross_entropy,
    "softmax_cross_entropy_grad": emit_softmax_cross_entropy,
}


def emit_rowwise(ctx: KernelContext, kernel: Kernel) -> None:
    """A row-wise kernel: the emitter ROWWISE_EMITTERS gives for its first node's op."""
    op = ctx.g[kernel.nodes[0]].op
    if op not in ROWWISE_EMITTERS:
        raise CodegenError(f"no row-wise kernel for {op} (kernel {kernel.name})")
    ROWWISE_EMITTERS[op](ctx, kernel)


# ---------------------------------------------------------------------------- matmul


def data_operands(nd: Node) -> tuple[str, ...]:
    """The operands whose values an elementwise node reads (``Op.data_operands``: broadcast_to's
    second operand only gives the shape)."""
    return OPS[nd.op].data_inputs(nd)


# kernel kinds whose work a GEMM function of the module does (emit_gemm): each gets the
# workspace's scratch as its last pointer (the GEMM's packed blocks)
GEMM_KINDS = frozenset({"matmul", "batched_matmul"})


def gemm_dims(g: Graph, mm: Node) -> tuple[tuple, tuple, tuple]:
    """M, N and K of the GEMM that a matmul or batched_matmul node ``mm`` runs, as tuples of
    dimensions (ints, "N") whose products they are: matmul_dims for a matmul, the matrices'
    own for a batched product (one GEMM per position of its leading axes)."""
    a, w = (g[x].type for x in mm.inputs)
    ta, tb = bool(mm.attr("transpose_a")), bool(mm.attr("transpose_b"))
    if mm.op == "batched_matmul":
        _lead, m, k, p = batched_dims(a, w, ta, tb)
        return (m,), (p,), (k,)
    return matmul_dims(a.shape, mm.type.shape, ta)


def matmul_parts(g: Graph, kernel: Kernel) -> tuple:
    """(matmul node, epilogue nodes, dtype, transpose_a, transpose_b, the epilogue's operands
    from outside the kernel) of a matmul kernel: what emit_matmul passes to ``gemm_for``; of a
    batched_matmul kernel (its node alone), the same with no epilogue.

    When the kernel stores epilogue values besides its C (``gemm_result``: an optimizer update
    in the epilogue), those values follow the operands: the epilogue gets a pointer to each
    and stores it at the element's place, as C's [M, N] index."""
    nodes = [g[x] for x in kernel.nodes]
    mm, tail = nodes[0], nodes[1:]
    if mm.op != "matmul" and not (mm.op == "batched_matmul" and not tail):
        raise CodegenError(f"kernel {kernel.name}: a matmul kernel must start with the matmul")
    members = set(kernel.nodes)
    ext: list[str] = []
    for nd in tail:
        if nd.type.shape != mm.type.shape:
            raise CodegenError(f"kernel {kernel.name}: epilogue node {nd.name} changes the shape")
        for i in data_operands(nd):
            if i not in members and i not in ext:
                ext.append(i)
    out = gemm_result(nodes)
    ext += [nd.name for nd in tail if nd.name in kernel.stores and nd.name != out]
    ta, tb = bool(mm.attr("transpose_a")), bool(mm.attr("transpose_b"))
    return mm, tail, mm.type.dtype, ta, tb, ext


def emit_matmul(ctx: KernelContext, kernel: Kernel) -> None:
    """GEMM with the rest of the kernel (bias add, activation, ...) as its epilogue; the GEMM
    function comes from ``ctx.gemm_for`` (shared between kernels by the module builder)."""
    g, b = ctx.g, ctx.b
    mm, tail, dtype, ta, tb, ext = matmul_parts(g, kernel)
    out = gemm_result([g[x] for x in kernel.nodes])
    a, w = mm.inputs
    # M, N, K: products of dimensions (an operand of rank > 2 is the matrix of its rows)
    m_dims, n_dims, k_dims = gemm_dims(g, mm)
    assert ctx.gemm_for is not None  # set by the module builder for matmul kernels
    fn, extra = ctx.gemm_for(kernel, dtype, ta, tb, tail, ext)
    mnk = [ctx.product(m_dims), ctx.product(n_dims), ctx.product(k_dims)]
    args = [*mnk, ctx.ptr(a), ctx.ptr(w), ctx.ptr(out)]
    for v in extra:
        args.append(ctx.inline_value(g[v]) if is_inline(ctx.sched, v) else ctx.ptr(v))
    b.call(fn, [*args, ctx.extra[0]])  # the work buffer: the workspace's scratch
    b.ret_void()
    glue(ctx.fn)  # one call: the GEMM's own functions do the work


def epilogue_for(g: Graph, mm: Node, tail: list[Node], ext: list[str], inline: set[str]):
    """The epilogue callable for emit_gemm: applies ``tail`` to the accumulator (scalar or vector)
    and returns C's value (``gemm_result``).

    External operands arrive as extra GEMM arguments (pointers, or scalar values when inline).
    An entry of ``ext`` that is a node of ``tail`` is a pointer where the epilogue stores that
    node's value (an optimizer update: the new param and slots, laid out like C); each element
    loads all its operands before it stores anything, so a store may go over an operand that
    the same element reads (the param updated in place).
    """
    members = {nd.name for nd in tail}
    out = gemm_result([mm, *tail])

    def epilogue(b: ir.IRBuilder, acc: ir.Value, i: ir.Value, j: ir.Value, extra=(), dims=None):
        # the row stride of C (and of operands shaped like it): the GEMM's N argument (a
        # constant in a GEMM built for one N), so that GEMMs of several widths can share code
        row = dims[1]
        vals: dict[str, ir.Value] = {mm.name: acc}
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 0
        scal = LL[mm.type.dtype]
        vec = acc.type
        stores: list[tuple[str, ir.Value]] = []
        for v, arg in zip(ext, extra):
            vt = g[v].type
            if v in members:
                stores.append((v, arg))
                continue
            if v in inline:
                x = arg
                vals[v] = _splat(b, x, lanes) if lanes else x
                continue
            rs, cs = epilogue_strides(vt.shape)
            idx: ir.Value = i64(0)
            if rs is not None:
                idx = b.mul(i, row if rs == "cols" else i64(rs))
            if cs == 1:
                idx = b.add(idx, j)
            et = LL[vt.dtype]  # the operand's own type (the i64 step counter of a dropout)
            p = b.gep(arg, [idx], inbounds=True, source_etype=et)
            if lanes and cs == 1 and et == scal:
                vals[v] = b.load(p, typ=vec, align=4)
            else:
                x = b.load(p, typ=et)
                vals[v] = _splat(b, x, lanes) if lanes else x
        flat = None  # the element's flat index in C, for lowerings that need one (dropout)
        if any(OPS[nd.op].needs_index for nd in tail):
            flat = b.add(b.mul(i, row), j)
            if lanes:
                vt = ir.VectorType(I64, lanes)
                flat = b.add(_splat(b, flat, lanes), ir.Constant(vt, list(range(lanes))))
        for nd in tail:
            vals[nd.name] = lower_elementwise(
                b, nd, [vals[o] for o in data_operands(nd)], llname(nd.name), index=flat
            )
        if stores:
            at = b.add(b.mul(i, row), j)
            for v, arg in stores:
                p = b.gep(arg, [at], inbounds=True, source_etype=scal)
                b.store(vals[v], p, align=4)
        return vals[out]

    epilogue.needs_dims = True  # type: ignore[attr-defined]  # read by emit_gemm
    return epilogue


def _splat(b: ir.IRBuilder, x: ir.Value, lanes: int) -> ir.Value:
    vt = ir.VectorType(x.type, lanes)
    v = b.insert_element(vconst(vt, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, vconst(vt, ir.Undefined), vconst(ir.VectorType(I32, lanes), 0))


def epilogue_strides(shape) -> tuple:
    """(row stride, column stride) of an operand broadcast against an [M, N] matrix (None:
    broadcast along that axis). A full row's stride is "cols", the matrix's column count, which
    the caller turns into a value: a constant, or the GEMM's N argument when N is the batch
    size."""
    if len(shape) == 0 or all(d == 1 for d in shape):
        return None, None
    if len(shape) == 1:
        return None, 1
    if len(shape) > 2:  # of a GEMM result of rank > 2: the matrix of its rows (fuse_dense)
        shape = (1 if all(d == 1 for d in shape[:-1]) else "rows", shape[-1])
    rows, cols = shape
    if cols == 1:
        return 1, None
    if rows == 1:
        return None, 1
    return "cols", 1


# kernel kind (ir.plan.Kernel.kind) -> its emitter; "copy" kernels, whose function
# takes the destination as an extra pointer, are emitted by the module builder itself
def _emit_movement(ctx: KernelContext, kernel: Kernel) -> None:
    """slice, pad, concat: strided copies (codegen/movement.py)."""
    from .movement import emit_movement

    emit_movement(ctx, ctx.g[kernel.nodes[0]])


def _emit_conv(ctx: KernelContext, kernel: Kernel) -> None:
    """conv, conv_transpose, conv_filter_grad: loop nests (codegen/conv.py)."""
    from .conv import emit_conv

    g = ctx.g
    emit_conv(ctx, g[kernel.nodes[0]], [g[v] for v in kernel.nodes[1:]])


KERNEL_EMITTERS: dict[str, Emitter] = {
    "elementwise": emit_elementwise,
    "matmul": emit_matmul,
    "reduce": _of_node(emit_reduce),
    "transpose": _of_node(emit_transpose),
    "batched_matmul": emit_batched_matmul,
    "reshape": _of_node(emit_reshape),
    "rowwise": emit_rowwise,
    "argmax": _of_node(emit_argmax),
    "movement": _emit_movement,
    "conv": _emit_conv,
}
