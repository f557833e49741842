"""Checks on an entry's input values, run by the native entry before any kernel writes.

An entry compiled with checks (``ModuleBuilder.add_entry(..., checks=...)``) scans its
inputs first and returns ``CHECK_BASE + slot`` for the first input slot whose values fail,
having written nothing (params, optimizer state and outputs untouched). The caller, who still
holds the arrays, names the row (the runtime turns the code into an ArgumentError naming the
input and the row; a C caller gets ``NAME_ERR_LABEL``, ``NAME_ERR_NONFINITE`` or
``NAME_ERR_LR`` from the library's wrappers). The body without the scans stays callable as
``NAME_<entry>_unchecked`` for callers that check otherwise: the epoch entry runs the same
checks on each gathered batch (copy_scanner, codegen/epoch.py) when asked to.

Kinds (``InputCheck.kind``):

- ``finite``: every element is finite (no NaN, no +-Inf);
- ``unit``: every element lies in [0, 1] (binary cross-entropy targets; NaN fails);
- ``classes``: every integer label lies in 0 .. bound-1 (softmax cross-entropy labels), or
  equals ``low`` when given (the loss's ignore_index, torch's -100);
- ``index``: every element (float) is a whole number in low .. bound-1, low = -bound unless
  given (the row indices of an embedding lookup into a table of ``bound`` rows, negative ones
  counting from the end as in ONNX's Gather; or the range of an integer input in which the
  indices an imported ONNX graph computes from it stay in their table, such as 1 .. V for
  ids - 1; NaN fails);
- ``divisor``: as ``index``, and no element is 0 (the divisor of an ONNX import's integer Div
  or Mod: ONNX leaves a zero divisor undefined, ONNX Runtime raises); with ``zero_at``, 0 is
  refused only at those per-row positions (those a Slice passes to the divisor), the range
  everywhere: an ``index`` scan of the whole input, then a ``divisor`` scan of each run of
  each row;
- ``lr``: the scalar is finite and >= 0 (the learning rate).

Each scan is one pass with no early exit and an integer OR as its only loop-carried value, so
LLVM's loop vectorizer turns it into full-width vector compares: about a byte per cycle of
bandwidth-bound work, small next to the step that follows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llvmlite import ir

from . import vmath
from .kernels import LL, PTR
from .lltypes import glue, vconst
from .loops import I32, I64, counted_loop, i64
from .threads import LOOPS, TASK_TYPE, ThreadPool, split_pays

CHECK_BASE = 1 << 24  # an entry returns CHECK_BASE + slot when input slot `slot` fails its check
# (far above check_numerics' NUMERICS_BASE + site codes, codegen/kernels.py)
# Scans of at least this many elements are split over the pool's threads, one contiguous share
# each (a dispatch to a waiting worker costs about 0.3 us, benchmarks/dispatch.py; a share of
# 16K float32 takes about as long to read). One thread scanning all of a batch that the last
# step's GEMMs left split between two cores' caches cost 40-70 us at batch 512 (784 features,
# 2 threads, train_step with and without the scan, load 1.6-2.2).
SCAN_PARALLEL_MIN = 1 << 15
SCAN_CHUNK = 16  # shares start at multiples of this many elements (64-byte lines of float32)
NO_LABEL = 1 << 40  # a classes check's `low` when no ignore_index is let through (no i32 is it)


@dataclass(frozen=True)
class InputCheck:
    """The check of one input (by value name): its kind and, for ``classes``, the count (and
    ``low``: the one other value let through, an ignore_index; None: none); for ``index``,
    the values low .. bound-1 (``low`` None: -bound)."""

    name: str
    kind: str
    bound: int = 0
    low: int | None = None
    note: str = ""  # why an index check has its range (the ONNX node it keeps in its table)
    table: bool = True  # index: the values pick rows of a table (else a checked range only)
    # divisor: the runs (start, stop) of per-row positions where 0 is refused (None: all) and
    # the elements of a row (ir.ops.sources.zero_runs)
    zero_at: tuple[tuple[int, int], ...] | None = None
    width: int = 0

    @property
    def lowest(self) -> int:
        """The smallest value an ``index`` check lets through; for ``classes``, the value let
        through besides 0..bound-1 (NO_LABEL, which no i32 equals, when none)."""
        if self.kind == "classes" and self.low is None:
            return NO_LABEL
        return -self.bound if self.low is None else self.low


SCAN_LANES = 16  # elements per vector of a scan's loop (split into registers by LLVM)
SCAN_UNROLL = 2  # vectors per step of that loop


def _fails(
    b: ir.IRBuilder, kind: str, t: ir.Type, x: ir.Value, bound: ir.Value, low: ir.Value
) -> ir.Value:
    """i1 (or a vector of i1 when ``x`` is a vector): element ``x`` (LLVM type ``t``, the
    element type) fails a check of ``kind``; ``bound`` and ``low`` (i64, or vectors of them:
    the index check's values low .. bound-1)."""
    if kind == "divisor":  # an index check that also refuses 0
        bad = _fails(b, "index", t, x, bound, low)
        if isinstance(t, ir.IntType):
            return b.or_(bad, b.icmp_signed("==", x, ir.Constant(x.type, None)), name="bad0")
        return b.or_(bad, b.fcmp_ordered("==", x, ir.Constant(x.type, None)), name="bad0")
    if kind == "index" and isinstance(t, ir.IntType):  # an i32 index input: signed compares
        lanes_of = x.type.count if isinstance(x.type, ir.VectorType) else None
        wide = I64 if lanes_of is None else ir.VectorType(I64, lanes_of)
        xw = b.sext(x, wide)
        below = b.icmp_signed("<", xw, low)
        return b.or_(below, b.icmp_signed(">=", xw, bound), name="bad")
    zero: ir.Value = ir.Constant(t, 0.0) if kind != "classes" else ir.Constant(t, 0)
    one: ir.Value = ir.Constant(t, 1.0) if kind == "unit" else zero
    if isinstance(x.type, ir.VectorType):
        lanes = x.type.count
        zero = vconst(ir.VectorType(t, lanes), zero.constant)
        one = vconst(ir.VectorType(t, lanes), one.constant)
    if kind == "finite":  # x - x is NaN exactly for NaN and +-Inf
        return b.fcmp_unordered("uno", b.fsub(x, x), zero, name="bad")
    if kind == "unit":  # unordered compares: NaN fails too
        lo = b.fcmp_unordered("<", x, zero)
        hi = b.fcmp_unordered(">", x, one)
        return b.or_(lo, hi, name="bad")
    if kind == "classes":  # unsigned compare: negative labels are huge; `low` let through
        wide = I64 if not isinstance(x.type, ir.VectorType) else ir.VectorType(I64, lanes)
        xw = b.sext(x, wide)
        out = b.icmp_unsigned(">=", xw, bound)
        return b.and_(out, b.icmp_signed("!=", xw, low), name="bad")
    if kind == "index":  # unordered compares: NaN fails too
        hi = b.sitofp(bound, x.type)
        lo = b.sitofp(low, x.type)
        whole = vmath.trunc(b, x, name="whole")
        outside = b.or_(b.fcmp_unordered("<", x, lo), b.fcmp_unordered(">=", x, hi))
        return b.or_(outside, b.fcmp_unordered("!=", x, whole), name="bad")
    raise ValueError(f"no vector scan for check kind {kind!r}")


def _scan_function(
    module: ir.Module, kind: str, dtype: str, copy: bool, home: ir.Module | None = None
) -> ir.Function:
    """The scan of ``count`` elements for a check of ``kind``, one vectorized pass returning 1
    when an element fails: ``i32 graphc.scan.KIND.DTYPE(T *p, i64 count, i64 bound, i64 low)``, or with
    ``copy`` ``i32 graphc.copy_scan.KIND.DTYPE(T *dst, const T *src, i64 count, i64 bound,
    i64 low)``,
    which also stores each element to ``dst`` beside its test. ``home``: the module that
    defines it when not ``module`` (which then declares it; see ModuleBuilder.lean).

    The loop is written in vectors of SCAN_LANES elements (LLVM splits them into the target's
    registers) with a scalar loop for the rest, both marked against LLVM's vectorizer and
    unroller: the scalar loop left to the vectorizer cost some 9 ms of compile time per scan
    function (vector loop, vector epilogue, scalar remainder, runtime checks: four of these
    functions were a quarter of the 784-256-128-10 Adam step's main module) for the same
    bandwidth-bound pass."""
    name = f"graphc.{'copy_scan' if copy else 'scan'}.{kind}.{dtype}"
    if name in module.globals:
        return module.globals[name]
    if home is not None and home is not module:
        defined = _scan_function(home, kind, dtype, copy)
        defined.linkage = ""  # external: the JIT links the modules
        return ir.Function(module, defined.function_type, name=name)
    t = LL[dtype]
    vt = ir.VectorType(t, SCAN_LANES)
    mask_t = ir.VectorType(I32, SCAN_LANES)
    fn = ir.Function(module, ir.FunctionType(I32, [PTR] * (1 + copy) + [I64, I64, I64]), name=name)
    fn.linkage = "internal"
    *ptrs, count, bound, low = fn.args
    src = ptrs[-1]
    for p in ptrs if copy else ():
        p.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    step = SCAN_LANES * SCAN_UNROLL
    full = b.and_(count, i64(-step), name="full")
    wide_t = ir.VectorType(I64, SCAN_LANES)
    vbound = b.insert_element(vconst(wide_t, ir.Undefined), bound, i32(0))
    vbound = b.shuffle_vector(vbound, vbound, vconst(ir.VectorType(I32, SCAN_LANES), 0))
    vlow = b.insert_element(vconst(wide_t, ir.Undefined), low, i32(0))
    vlow = b.shuffle_vector(vlow, vlow, vconst(ir.VectorType(I32, SCAN_LANES), 0))
    zeros = vconst(mask_t, 0)
    with counted_loop(b, i64(0), full, step, "v", [zeros]) as s:
        bad = None
        for u in range(SCAN_UNROLL):
            at = b.add(s.iv, i64(u * SCAN_LANES)) if u else s.iv
            x = b.load(b.gep(src, [at], inbounds=True, source_etype=t), typ=vt, align=1)
            if copy:
                b.store(x, b.gep(ptrs[0], [at], inbounds=True, source_etype=t), align=1)
            fail = _fails(b, kind, t, x, vbound, vlow)
            bad = fail if bad is None else b.or_(bad, fail)
        s.carried[0] = b.or_(s.carried[0], b.zext(bad, mask_t))
    acc = b.call(_reduce_or(module), s.final)
    with counted_loop(b, full, count, 1, "i", [acc]) as s:
        x = b.load(b.gep(src, [s.iv], inbounds=True, source_etype=t), typ=t, name="x")
        if copy:
            b.store(x, b.gep(ptrs[0], [s.iv], inbounds=True, source_etype=t))
        bad = _fails(b, kind, t, x, bound, low)
        s.carried[0] = b.or_(s.carried[0], b.zext(bad, I32))
    b.ret(s.final[0])
    return fn


def _reduce_or(module: ir.Module) -> ir.Function:
    """``llvm.vector.reduce.or`` of SCAN_LANES i32."""
    name = f"llvm.vector.reduce.or.v{SCAN_LANES}i32"
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(I32, [ir.VectorType(I32, SCAN_LANES)]), name=name)


def scanner(module: ir.Module, kind: str, dtype: str, home: ir.Module | None = None) -> ir.Function:
    """``i32 graphc.scan.KIND.DTYPE(T *p, i64 count, i64 bound, i64 low)``: 1 when an element fails."""
    return _scan_function(module, kind, dtype, False, home)


def copy_scanner(
    module: ir.Module, kind: str, dtype: str, home: ir.Module | None = None
) -> ir.Function:
    """``i32 graphc.copy_scan.KIND.DTYPE(T *dst, const T *src, i64 count, i64 bound,
    i64 low)``: copies
    ``count`` elements and returns 1 when one of them fails the check (the epoch entry's
    gather of a batch, which reads every row anyway: codegen/epoch.py)."""
    return _scan_function(module, kind, dtype, True, home)


def i32(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


_SCAN_CTX = ir.LiteralStructType([PTR, I64, I64, I64, PTR])  # p, count, bound, low, i32 *found


def _scan_task(
    module: ir.Module, kind: str, dtype: str, home: ir.Module | None = None
) -> ir.Function:
    """``void graphc.scan_task.KIND.DTYPE(ctx, t, count)``: share t of count of a scan
    (_SCAN_CTX), OR-ing 1 into ``*found`` when an element of it fails."""
    name = f"graphc.scan_task.{kind}.{dtype}"
    if name in module.globals:
        return module.globals[name]
    scan = scanner(module, kind, dtype, home)
    fn = ir.Function(module, TASK_TYPE, name=name)
    fn.linkage = "internal"
    glue(fn)  # the scan is scanner's
    cp, t, count = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    p, n, bound, low, found = (
        b.load(b.gep(cp, [i32(0), i32(k)], inbounds=True, source_etype=_SCAN_CTX), typ=ft)
        for k, ft in enumerate(_SCAN_CTX.elements)
    )
    chunks = b.sdiv(b.add(n, i64(SCAN_CHUNK - 1)), i64(SCAN_CHUNK))
    per = b.mul(b.sdiv(b.add(chunks, b.sub(count, i64(1))), count), i64(SCAN_CHUNK))
    lo = b.mul(t, per)
    hi = b.add(lo, per)
    hi = b.select(b.icmp_signed("<", hi, n), hi, n)
    with b.if_then(b.icmp_signed("<", lo, hi)):
        at = b.gep(p, [lo], inbounds=True, source_etype=LL[dtype])
        r = b.call(scan, [at, b.sub(hi, lo), bound, low])
        with b.if_then(b.icmp_unsigned("!=", r, ir.Constant(I32, 0)), likely=False):
            b.atomic_rmw("or", found, ir.Constant(I32, 1), "monotonic")
    b.ret_void()
    return fn


def _scan(
    b: ir.IRBuilder,
    module: ir.Module,
    chk: InputCheck,
    dtype: str,
    p: ir.Value,
    count: ir.Value,
    pool: ThreadPool | None,
    home: ir.Module | None = None,
) -> ir.Value:
    """i32 at ``b``: nonzero when an element of ``p[0:count]`` fails ``chk``; with ``pool``,
    scans of SCAN_PARALLEL_MIN elements or more run on every thread (the result is the same
    OR of the same elements' tests whatever the thread count)."""
    args = [p, count, i64(chk.bound), i64(chk.lowest)]
    if pool is None:
        return b.call(scanner(module, chk.kind, dtype, home), args)
    fn = b.function
    here = b.block
    b.position_at_start(fn.entry_basic_block)
    cp = b.alloca(_SCAN_CTX, name="scan.ctx")
    cp.type = PTR  # llvmlite types an alloca as `{...}*`; LLVM has only `ptr`
    found = b.alloca(I32, name="scan.found")
    found.type = PTR
    b.position_at_end(here)
    threads, split = split_pays(b, pool, count, SCAN_PARALLEL_MIN, LOOPS)
    with b.if_else(split) as (then, otherwise):
        with then:
            for k, v in enumerate([*args, found]):
                b.store(v, b.gep(cp, [i32(0), i32(k)], inbounds=True, source_etype=_SCAN_CTX))
            b.store(ir.Constant(I32, 0), found)
            b.call(pool.run, [_scan_task(module, chk.kind, dtype, home), cp, threads])
            r_par = b.load(found, typ=I32)
            par_block = b.block
        with otherwise:
            r_one = b.call(scanner(module, chk.kind, dtype, home), args)
            one_block = b.block
    r = b.phi(I32, name="scan.r")
    r.add_incoming(r_par, par_block)
    r.add_incoming(r_one, one_block)
    return r


def emit_input_checks(
    b: ir.IRBuilder,
    module: ir.Module,
    checks: list[tuple[int, InputCheck, str, ir.Value]],
    inputs: ir.Value,
    pool: ThreadPool | None = None,
    home: ir.Module | None = None,
) -> None:
    """At ``b``: for each (slot, check, dtype, element count), load input ``slot``'s pointer
    from ``inputs`` and return ``CHECK_BASE + slot`` when its values fail the check. With
    ``pool`` (the module's threads), large scans are split over the threads (_scan).
    ``home``: the module defining the scan functions (default: ``module``)."""
    for slot, chk, dtype, count in checks:
        p = b.load(b.gep(inputs, [i64(slot)], source_etype=PTR), typ=PTR, name=f"chk{slot}.p")
        if chk.kind == "lr":
            t = LL[dtype]
            x = b.load(p, typ=t, name="lr")
            neg_or_nan = b.fcmp_unordered("<", x, ir.Constant(t, 0.0))
            inf = b.fcmp_ordered("==", x, ir.Constant(t, float("inf")))
            bad = b.or_(neg_or_nan, inf, name="lr.bad")
        else:
            if chk.kind == "divisor" and chk.zero_at is not None:  # range everywhere, 0 in runs
                r = _scan(b, module, replace(chk, kind="index"), dtype, p, count, pool, home)
                r = b.or_(r, _scan_runs(b, module, chk, dtype, p, count, home))
            else:
                r = _scan(b, module, chk, dtype, p, count, pool, home)
            bad = b.icmp_unsigned("!=", r, ir.Constant(I32, 0), name=f"chk{slot}.bad")
        with b.if_then(bad, likely=False):
            b.ret(ir.Constant(I32, CHECK_BASE + slot))


def _scan_runs(
    b: ir.IRBuilder,
    module: ir.Module,
    chk: InputCheck,
    dtype: str,
    p: ir.Value,
    count: ir.Value,
    home: ir.Module | None,
) -> ir.Value:
    """i32 at ``b``: nonzero when an element at one of ``chk.zero_at``'s per-row positions of
    ``p[0:count]`` (rows of ``chk.width`` elements) fails the divisor check: for each row, the
    scanner over each run (their starts and lengths in two constant tables)."""
    runs = chk.zero_at or ()
    tables = []
    for tag, vals in (("start", [a for a, _ in runs]), ("len", [e - a for a, e in runs])):
        t = ir.ArrayType(I64, len(vals))
        gv = ir.GlobalVariable(module, t, name=module.get_unique_name(f"graphc.zero_at.{tag}"))
        gv.linkage = "internal"
        gv.global_constant = True
        gv.initializer = ir.Constant(t, vals)
        tables.append(gv)
    scan = scanner(module, "divisor", dtype, home)
    args = [i64(chk.bound), i64(chk.lowest)]
    rows = b.sdiv(count, i64(max(1, chk.width)), name="zero_at.rows")
    with counted_loop(b, i64(0), rows, 1, "zr", [ir.Constant(I32, 0)]) as r:
        row = b.gep(p, [b.mul(r.iv, i64(chk.width))], inbounds=True, source_etype=LL[dtype])
        with counted_loop(b, i64(0), i64(len(runs)), 1, "zk", [r.carried[0]]) as k:
            start, length = (
                b.load(b.gep(t, [i64(0), k.iv], inbounds=True, source_etype=t.value_type), typ=I64)
                for t in tables
            )
            at = b.gep(row, [start], inbounds=True, source_etype=LL[dtype])
            k.carried[0] = b.or_(k.carried[0], b.call(scan, [at, length, *args]))
        r.carried[0] = k.final[0]
    return r.final[0]
