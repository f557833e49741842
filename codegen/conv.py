"""Kernels of conv, conv_transpose and conv_filter_grad (ir/ops/conv.py): direct loop nests.

Every spatial size is a compile-time constant; only the batch size may be the runtime ``n``.
For each kernel offset (k1, ..., kr) the output positions whose input position lies inside the
input form one box, [lo_a(k_a), hi_a(k_a)) per axis (``ConvGeometry.valid_outputs``), read
from small constant tables: the padding is never visited and the innermost loop (the last
output axis) has no test in it, so LLVM vectorizes it.

- conv: per (n, co): y[n, co] = 0, then for each input channel of the group and each kernel
  offset, y[n, co, o] += w[co, ci, k] * x[n, c, o * s + k * d - p] over the box.
- conv_transpose: per (n, c): x[n, c] = 0, then x[n, c, o * s + k * d - p] += w * y[n, co, o].
- conv_filter_grad: per (co, ci, k): the sum over n and the box of y[n, co, o] * x[n, c, ...],
  accumulated in a register (reassociated: LLVM keeps one partial sum per vector lane).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node
from graphc.ir.ops.conv import ConvGeometry, geometry

from .kernels import LL, PTR, VOID, KernelContext, _splat, data_operands, is_inline, llname
from .lltypes import I1, I32, I64, i64, vconst
from .loops import counted_loop, loop
from .lower import lower_elementwise

_FAST = ("contract",)  # a * b + c may become one fused multiply-add
_SUM = ("reassoc", "nsz", "contract")  # the filter gradient's sum, one partial sum per lane


@contextmanager
def _outer(b: ir.IRBuilder, count: ir.Value, name: str, start: ir.Value | None = None):
    """A loop LLVM neither vectorizes nor unrolls: only the innermost loop (the last output
    axis) is vectorized; vectorizing an outer one gave strided gathers."""
    with counted_loop(b, start if start is not None else i64(0), count, 1, name) as st:
        yield st.iv


class _Lanes:
    """Explicit vectors for the innermost loop when it reads both operands contiguously
    (stride 1 along the last axis): chunks of ``lanes`` positions, the last one partial, every
    chunk through masked loads and stores (AVX-512 masks cost nothing extra), so rows of any
    length (a LeNet's 10, a CIFAR layer's 32) run without a scalar remainder."""

    def __init__(self, ctx: KernelContext, t: ir.Type):
        self.ctx, self.t = ctx, t
        self.lanes = 16 if t == LL["f32"] else 8
        self.vt = ir.VectorType(t, self.lanes)
        self.align = ir.Constant(I32, 4 if t == LL["f32"] else 8)
        mt = ir.VectorType(I1, self.lanes)
        suffix = f"v{self.lanes}{'f32' if t == LL['f32'] else 'f64'}"
        m = ctx.module
        name = f"llvm.masked.load.{suffix}.p0"
        self.load_fn = m.globals.get(name) or ir.Function(
            m, ir.FunctionType(self.vt, [PTR, I32, mt, self.vt]), name=name
        )
        name = f"llvm.masked.store.{suffix}.p0"
        self.store_fn = m.globals.get(name) or ir.Function(
            m, ir.FunctionType(VOID, [self.vt, PTR, I32, mt]), name=name
        )
        self.zero = vconst(self.vt, 0.0)

    def mask(self, count: ir.Value) -> ir.Value:
        """Lanes 0 .. count - 1 (all of them when count >= lanes)."""
        b = self.ctx.b
        it = ir.VectorType(I64, self.lanes)
        iota = ir.Constant(it, list(range(self.lanes)))
        return b.icmp_signed("<", iota, self.splat(count, it))

    def splat(self, x: ir.Value, vt: ir.VectorType | None = None) -> ir.Value:
        b = self.ctx.b
        vt = vt or self.vt
        v = b.insert_element(vconst(vt, ir.Undefined), x, ir.Constant(I32, 0))
        return b.shuffle_vector(
            v, vconst(vt, ir.Undefined), vconst(ir.VectorType(I32, vt.count), 0)
        )

    def _at(self, value: str, index: ir.Value) -> ir.Value:
        ctx = self.ctx
        return ctx.b.gep(ctx.ptr(value), [index], inbounds=True, source_etype=self.t)

    def load(self, value: str, index: ir.Value, mask: ir.Value) -> ir.Value:
        return self.ctx.b.call(self.load_fn, [self._at(value, index), self.align, mask, self.zero])

    def store(self, value: str, index: ir.Value, v: ir.Value, mask: ir.Value) -> None:
        self.ctx.b.call(self.store_fn, [v, self._at(value, index), self.align, mask])


def _parallel(ctx: KernelContext, count: ir.Value, body: Callable[[ir.Value], None]) -> None:
    """``for i in 0..count: body(i)``, the range split among the module's threads (disjoint
    outputs per i, each computed by the same code whatever the thread count:
    kernels.flat_loop with one i per chunk)."""
    from .kernels import flat_loop

    flat_loop(ctx, count, body, lambda: None, min_total=2, chunk=1, measured=False)


def _lanes_sum(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """The sum of the lanes of ``v`` (by halving)."""
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
        v = b.fadd(lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _table(ctx: KernelContext, name: str, values: list[int]) -> ir.GlobalVariable:
    t = ir.ArrayType(I64, len(values))
    gv = ir.GlobalVariable(ctx.module, t, name=ctx.module.get_unique_name(name))
    gv.linkage = "internal"
    gv.global_constant = True
    gv.initializer = ir.Constant(t, [int(v) for v in values])
    return gv


def _box(ctx: KernelContext, g: ConvGeometry, tag: str):
    """Per spatial axis, (lo table, hi table) of the output positions each kernel offset reads
    inside the input."""
    out = []
    for a in range(g.rank):
        lo, hi = zip(*(g.valid_outputs(a, k) for k in range(g.kernel[a])))
        out.append((_table(ctx, f"{tag}.lo{a}", list(lo)), _table(ctx, f"{tag}.hi{a}", list(hi))))
    return out


def _lookup(b: ir.IRBuilder, table: ir.GlobalVariable, k: ir.Value) -> ir.Value:
    p = b.gep(table, [i64(0), k], inbounds=True, source_etype=table.value_type)
    return b.load(p, typ=I64)


def _window(
    ctx: KernelContext,
    g: ConvGeometry,
    box,
    wbase: ir.Value,
    xbase: ir.Value,
    ybase: ir.Value,
    at_offset: Callable[[ir.Value], Any],
    lanes: _Lanes | None = None,
) -> None:
    """Loops over the kernel offsets, then over the box of output positions of each; at an
    offset, ``at_offset(w index)`` gives the body ``body(x index, y index)`` of the box loops."""
    b = ctx.b
    r = g.rank
    ks, xs = _strides(g.kernel), _strides(g.in_spatial)

    def offsets(axis: int, widx: ir.Value, xidx: ir.Value, k: list[ir.Value]) -> None:
        if axis == r:
            body = at_offset(widx)
            after = None
            if isinstance(body, tuple):
                body, after = body
            _positions(ctx, g, box, xidx, ybase, k, body, lanes)
            if after is not None:
                after()
            return
        with _outer(b, i64(g.kernel[axis]), name=f"k{axis}") as ka:
            nw = b.add(widx, b.mul(ka, i64(ks[axis])))
            shift = b.sub(b.mul(ka, i64(g.dilations[axis])), i64(g.pads_begin[axis]))
            nx = b.add(xidx, b.mul(shift, i64(xs[axis])))
            offsets(axis + 1, nw, nx, [*k, ka])

    offsets(0, wbase, xbase, [])


# (accumulated output, its channel, its flat index, the lanes' mask or None) -> the value stored
Epilogue = Callable[[ir.Value, ir.Value, ir.Value, Any], ir.Value]


def _gather(
    ctx: KernelContext,
    node: Node,
    g: ConvGeometry,
    lanes: _Lanes,
    dst: str,
    epilogue: Epilogue | None,
) -> None:
    """conv, or conv_transpose with stride 1 along the last axis, as a gather: each chunk of
    ``lanes`` outputs along the last axis sums w * (a masked load of the input row) over the
    group's input channels and the kernel offsets in a register, then is stored once. (The
    scatter form, dst += w * src per offset, reloads a chunk right after its masked store,
    which the CPU cannot forward: 20x slower on a LeNet layer.)

    Outer axes: the input position of output position u and offset k comes from a constant
    table (-1: outside the input, or between strides for conv_transpose); last axis: input
    position u + off(k), valid for u in [lo(k), hi(k)) (masks). ``epilogue`` (fuse_conv's bias
    add, activation) maps each chunk before its store into ``dst``."""
    r = g.rank
    transposed = node.op == "conv_transpose"
    src, w = node.inputs
    cg, og = g.channels // g.groups, g.out_channels // g.groups
    if transposed:
        out_ch, in_ch, per_grp, out_grp = g.channels, g.out_channels, og, cg
        out_sp, in_sp = g.in_spatial, g.out_spatial
    else:
        out_ch, in_ch, per_grp, out_grp = g.out_channels, g.channels, cg, og
        out_sp, in_sp = g.out_spatial, g.in_spatial
    ksz = math.prod(g.kernel)
    ks, ins, outs = _strides(g.kernel), _strides(in_sp), _strides(out_sp)
    osz, isz = math.prod(out_sp), math.prod(in_sp)

    def source(a: int, u: int, k: int) -> int:
        """The input position that output position u reads at offset k along axis a (-1: none)."""
        s, d, p = g.strides[a], g.dilations[a], g.pads_begin[a]
        if transposed:  # u = o * s + k * d - p
            q, rem = divmod(u + p - k * d, s)
            return q if rem == 0 and 0 <= q < in_sp[a] else -1
        i = u * s + k * d - p
        return i if 0 <= i < in_sp[a] else -1

    tables = [
        _table(
            ctx,
            f"{node.op}.src{a}",
            [source(a, u, k) for u in range(out_sp[a]) for k in range(g.kernel[a])],
        )
        for a in range(r - 1)
    ]
    last = r - 1
    offs = [
        (g.pads_begin[last] - k * g.dilations[last])
        if transposed
        else (k * g.dilations[last] - g.pads_begin[last])
        for k in range(g.kernel[last])
    ]
    lo = [max(0, -o) for o in offs]
    hi = [max(lo[k], min(out_sp[last], in_sp[last] - offs[k])) for k in range(len(offs))]
    off_t = _table(ctx, f"{node.op}.off", offs)
    lo_t, hi_t = _table(ctx, f"{node.op}.lo", lo), _table(ctx, f"{node.op}.hi", hi)
    # a block of B output channels shares each input load: B independent sums in flight
    # (one sum alone waits on the add's latency at every tap)
    block = next(v for v in (8, 4, 2, 1) if out_grp % v == 0)
    wstep = ksz if transposed else cg * ksz  # w index from one output channel to the next
    batch = ctx.dim(g.batch)

    def sample(n: ir.Value) -> None:
        """All of sample n (the samples are split among the threads)."""
        b = ctx.b
        with b.goto_entry_block():
            vaccs = [b.alloca(lanes.vt, name=f"vacc{i}") for i in range(block)]
        it = ir.VectorType(I64, lanes.lanes)
        iota = ir.Constant(it, list(range(lanes.lanes)))
        t = lanes.t

        def load_at(value: str, index: ir.Value, mask: ir.Value) -> ir.Value:
            # not inbounds: a masked-off first lane may sit before the row
            p = b.gep(ctx.ptr(value), [index], source_etype=t)
            return b.call(lanes.load_fn, [p, lanes.align, mask, lanes.zero])

        with _outer(b, i64(out_ch // block), "ocb") as ocb:
            oc = b.mul(ocb, i64(block))
            grp = b.sdiv(oc, i64(out_grp))
            sub = b.srem(oc, i64(out_grp))
            obase = b.mul(b.add(b.mul(n, i64(out_ch)), oc), i64(osz))

            def rows(axis: int, oidx: ir.Value, us: list[ir.Value]) -> None:
                if axis < last:
                    with _outer(b, i64(out_sp[axis]), f"u{axis}") as u:
                        rows(axis + 1, b.add(oidx, b.mul(u, i64(outs[axis]))), [*us, u])
                    return
                with counted_loop(b, i64(0), i64(out_sp[last]), lanes.lanes, "uv") as st:
                    c0 = st.iv
                    pos = b.add(lanes.splat(c0, it), iota)
                    for vacc in vaccs:
                        b.store(lanes.zero, vacc)
                    with _outer(b, i64(per_grp), "j") as j:
                        ic = b.add(b.mul(grp, i64(per_grp)), j)
                        ibase = b.mul(b.add(b.mul(n, i64(in_ch)), ic), i64(isz))
                        if transposed:  # w[co, ci, k], co = grp * og + j, ci = sub
                            wbase = b.mul(b.add(b.mul(ic, i64(cg)), sub), i64(ksz))
                        else:  # w[oc, j, k]
                            wbase = b.mul(b.add(b.mul(oc, i64(cg)), j), i64(ksz))
                        taps(0, wbase, ibase, us, c0, pos)
                    mask = b.icmp_signed("<", pos, lanes.splat(i64(out_sp[last]), it))
                    for i, vacc in enumerate(vaccs):
                        at = b.add(b.add(oidx, c0), i64(i * osz))
                        p = b.gep(ctx.ptr(dst), [at], inbounds=True, source_etype=t)
                        v = b.load(vacc)
                        if epilogue is not None:
                            v = epilogue(v, b.add(oc, i64(i)), at, mask)
                        b.call(lanes.store_fn, [v, p, lanes.align, mask])

            def taps(axis: int, widx: ir.Value, iidx: ir.Value, us, c0, pos) -> None:
                if axis < last:
                    with _outer(b, i64(g.kernel[axis]), f"k{axis}") as k:
                        at = b.add(b.mul(us[axis], i64(g.kernel[axis])), k)
                        src_pos = _lookup(b, tables[axis], at)
                        with b.if_then(b.icmp_signed(">=", src_pos, i64(0))):
                            taps(
                                axis + 1,
                                b.add(widx, b.mul(k, i64(ks[axis]))),
                                b.add(iidx, b.mul(src_pos, i64(ins[axis]))),
                                us,
                                c0,
                                pos,
                            )
                    return
                with _outer(b, i64(g.kernel[last]), "kl") as k:
                    klo, khi = _lookup(b, lo_t, k), _lookup(b, hi_t, k)
                    m = b.and_(
                        b.icmp_signed(">=", pos, lanes.splat(klo, it)),
                        b.icmp_signed("<", pos, lanes.splat(khi, it)),
                    )
                    xv = load_at(src, b.add(b.add(iidx, c0), _lookup(b, off_t, k)), m)
                    wk = b.add(widx, k)
                    for i, vacc in enumerate(vaccs):
                        wv = lanes.splat(ctx.load(w, b.add(wk, i64(i * wstep))))
                        acc = b.fadd(b.load(vacc), b.fmul(wv, xv, flags=_FAST), flags=_FAST)
                        b.store(acc, vacc)

            rows(0, obase, [])

    _parallel(ctx, batch, sample)


def _filter_gather(ctx: KernelContext, node: Node, g: ConvGeometry, lanes: _Lanes) -> None:
    """conv_filter_grad with stride 1 along the last axis: sample by sample, for a block of
    output channels and one input channel, each chunk of dy's last axis is loaded once and
    multiplied with the input rows at every offset of the last kernel axis (masked loads):
    block x K_last independent vector sums (one sum alone waits on the add's latency), reduced
    and added to w once per sample and outer kernel offset."""
    r, last = g.rank, g.rank - 1
    dy, x = node.inputs
    w = node.name
    t = lanes.t
    cg, og = g.channels // g.groups, g.out_channels // g.groups
    ksz, osz, isz = math.prod(g.kernel), math.prod(g.out_spatial), math.prod(g.in_spatial)
    kl_n = g.kernel[last]
    block = next(v for v in (4, 2, 1) if og % v == 0 and v * kl_n <= 24)
    ks, ins, outs = _strides(g.kernel), _strides(g.in_spatial), _strides(g.out_spatial)
    tables = []
    for a in range(r - 1):
        vals = []
        for u in range(g.out_spatial[a]):
            for k in range(g.kernel[a]):
                i = u * g.strides[a] + k * g.dilations[a] - g.pads_begin[a]
                vals.append(i if 0 <= i < g.in_spatial[a] else -1)
        tables.append(_table(ctx, f"{node.op}.src{a}", vals))
    offs = [k * g.dilations[last] - g.pads_begin[last] for k in range(kl_n)]
    lo = [max(0, -o) for o in offs]
    hi = [max(lo[k], min(g.out_spatial[last], g.in_spatial[last] - offs[k])) for k in range(kl_n)]
    it = ir.VectorType(I64, lanes.lanes)
    iota = ir.Constant(it, list(range(lanes.lanes)))

    def sample(cob: ir.Value) -> None:
        """The filters of output channel block cob (the blocks are split among the threads)."""
        b = ctx.b
        batch = ctx.dim(g.batch)  # the range function's own n
        with b.goto_entry_block():
            accs = [
                [b.alloca(lanes.vt, name=f"a{i}_{k}") for k in range(kl_n)] for i in range(block)
            ]
        zero = ir.Constant(t, 0.0)

        def load_at(value: str, index: ir.Value, mask: ir.Value) -> ir.Value:
            p = b.gep(ctx.ptr(value), [index], source_etype=t)  # not inbounds: see _gather
            return b.call(lanes.load_fn, [p, lanes.align, mask, lanes.zero])

        co0 = b.mul(cob, i64(block))
        wrow = b.mul(co0, i64(cg * ksz))
        with loop(b, i64(block * cg * ksz), name="z") as j:
            ctx.store(w, b.add(wrow, j), zero)
        with _outer(b, batch, "n") as n:
            grp = b.sdiv(co0, i64(og))
            ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co0), i64(osz))
            with _outer(b, i64(cg), "ci") as ci:
                c = b.add(b.mul(grp, i64(cg)), ci)
                xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz := isz))
                del dsz

                def koffs(axis: int, kflat: ir.Value, ks_: list[ir.Value]) -> None:
                    if axis < last:
                        with _outer(b, i64(g.kernel[axis]), f"k{axis}") as k:
                            koffs(axis + 1, b.add(kflat, b.mul(k, i64(ks[axis]))), [*ks_, k])
                        return
                    for row in accs:
                        for a_ in row:
                            b.store(lanes.zero, a_)
                    positions(0, ybase, xbase, ks_)
                    for i, row in enumerate(accs):
                        wb = b.mul(b.add(b.mul(b.add(co0, i64(i)), i64(cg)), ci), i64(ksz))
                        for k, a_ in enumerate(row):
                            at = b.add(b.add(wb, kflat), i64(k))
                            ctx.store(w, at, b.fadd(ctx.load(w, at), _lanes_sum(b, b.load(a_))))

                def positions(axis: int, yi: ir.Value, xi: ir.Value, ks_: list[ir.Value]) -> None:
                    if axis < last:
                        with _outer(b, i64(g.out_spatial[axis]), f"u{axis}") as u:
                            at = b.add(b.mul(u, i64(g.kernel[axis])), ks_[axis])
                            src = _lookup(b, tables[axis], at)
                            with b.if_then(b.icmp_signed(">=", src, i64(0))):
                                positions(
                                    axis + 1,
                                    b.add(yi, b.mul(u, i64(outs[axis]))),
                                    b.add(xi, b.mul(src, i64(ins[axis]))),
                                    ks_,
                                )
                        return
                    with counted_loop(b, i64(0), i64(g.out_spatial[last]), lanes.lanes, "uv") as st:
                        c0 = st.iv
                        pos = b.add(lanes.splat(c0, it), iota)
                        valid = b.icmp_signed("<", pos, lanes.splat(i64(g.out_spatial[last]), it))
                        dys = [
                            load_at(dy, b.add(b.add(yi, c0), i64(i * osz)), valid)
                            for i in range(block)
                        ]
                        for k in range(kl_n):
                            m = b.and_(
                                b.icmp_signed(">=", pos, lanes.splat(i64(lo[k]), it)),
                                b.icmp_signed("<", pos, lanes.splat(i64(hi[k]), it)),
                            )
                            xv = load_at(x, b.add(b.add(xi, c0), i64(offs[k])), m)
                            for i in range(block):
                                acc = accs[i][k]
                                prod = b.fmul(dys[i], xv, flags=_SUM)
                                b.store(b.fadd(b.load(acc), prod, flags=_SUM), acc)

                koffs(0, i64(0), [])

    _parallel(ctx, i64(g.out_channels // block), sample)


def _channel_epilogue(
    ctx: KernelContext, node: Node, tail: list[Node]
) -> tuple[str, Epilogue | None]:
    """The value a conv kernel stores and the function that maps an accumulated output (a
    scalar or a vector of one channel's outputs) through ``tail``, fuse_conv's pointwise
    nodes, whose other operands are inline scalars, one-element values, per-channel values
    [C, 1, ...] (loaded at the channel index and splat over the lanes), or values of the
    output's shape (a residual: loaded at the output's own index, under the lanes' mask)."""
    if not tail:
        return node.name, None
    g = ctx.g
    members = {node.name} | {nd.name for nd in tail}
    ext = list(dict.fromkeys(i for nd in tail for i in data_operands(nd) if i not in members))

    def apply(acc: ir.Value, channel: ir.Value, index: ir.Value, mask: Any) -> ir.Value:
        b = ctx.b  # (read when called: _parallel emits the loop into a task function of its own)
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 0
        vals: dict[str, ir.Value] = {node.name: acc}
        for v in ext:
            shape = tuple(g[v].type.shape)
            if shape == tuple(node.type.shape):  # a residual: the output's own element(s)
                if lanes:
                    vals[v] = _Lanes(ctx, LL[node.type.dtype]).load(v, index, mask)
                else:
                    vals[v] = ctx.load(v, index)
                continue
            if is_inline(ctx.sched, v):
                x = ctx.inline_value(g[v])
            else:
                per_channel = any(d != 1 for d in shape)
                x = ctx.load(v, channel if per_channel else i64(0))
            vals[v] = _splat(b, x, lanes) if lanes else x
        for nd in tail:
            args = [vals[o] for o in data_operands(nd)]
            vals[nd.name] = lower_elementwise(b, nd, args, llname(nd.name))
        return vals[tail[-1].name]

    return tail[-1].name, apply


def emit_conv(ctx: KernelContext, node: Node, tail: list[Node] | None = None) -> None:
    """The kernel of one conv, conv_transpose or conv_filter_grad node; ``tail``: the pointwise
    nodes fuse_conv gave a conv / conv_transpose, applied to each output before its store."""
    out, epilogue = _channel_epilogue(ctx, node, tail or [])
    g_ = ctx.g
    types = [g_[i].type for i in node.inputs]
    g = geometry(node.op, types, dict(node.attrs))
    b = ctx.b
    t = LL[node.type.dtype]
    zero = ir.Constant(t, 0.0)
    cg, og = g.channels // g.groups, g.out_channels // g.groups
    dsz, osz, ksz = math.prod(g.in_spatial), math.prod(g.out_spatial), math.prod(g.kernel)
    box = _box(ctx, g, f"{node.op}.box")
    batch = ctx.dim(g.batch)

    def fill(value: str, base: ir.Value, count: int) -> None:
        with loop(b, i64(count), name="z") as j:
            ctx.store(value, b.add(base, j), zero)

    lanes = _Lanes(ctx, t)

    def mac(dst: str, di: ir.Value, src: str, si: ir.Value, wv, wvec, mask) -> None:
        """dst[di] += w * src[si], or on a chunk of lanes under ``mask``."""
        if mask is None:
            prod = b.fmul(wv, ctx.load(src, si), flags=_FAST)
            ctx.store(dst, di, b.fadd(ctx.load(dst, di), prod, flags=_FAST))
            return
        prod = b.fmul(wvec, lanes.load(src, si, mask), flags=_FAST)
        lanes.store(dst, di, b.fadd(lanes.load(dst, di, mask), prod, flags=_FAST), mask)

    if node.op in ("conv", "conv_transpose") and g.strides[-1] == 1:
        _gather(ctx, node, g, lanes, out, epilogue)
    elif node.op == "conv":
        x, w = node.inputs
        y = out
        with _outer(b, batch, "n") as n, _outer(b, i64(g.out_channels), "co") as co:
            grp = b.sdiv(co, i64(og))
            ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
            fill(y, ybase, osz)
            with _outer(b, i64(cg), "ci") as ci:
                c = b.add(b.mul(grp, i64(cg)), ci)
                xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))

                def at(widx: ir.Value):
                    wv = ctx.load(w, widx)
                    wvec = lanes.splat(wv)
                    return lambda xi, yi, m: mac(y, yi, x, xi, wv, wvec, m)

                _window(ctx, g, box, wbase, xbase, ybase, at, lanes)
            if epilogue is not None:  # the sums done: the epilogue over this channel's outputs
                _map(ctx, y, ybase, osz, co, epilogue)
    elif node.op == "conv_transpose":
        y, w = node.inputs
        x = out
        with _outer(b, batch, "n") as n, _outer(b, i64(g.channels), "c") as c:
            grp = b.sdiv(c, i64(cg))
            ci = b.srem(c, i64(cg))
            xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
            fill(x, xbase, dsz)
            with _outer(b, i64(og), "cog") as cj:
                co = b.add(b.mul(grp, i64(og)), cj)
                ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))

                def at(widx: ir.Value):
                    wv = ctx.load(w, widx)
                    wvec = lanes.splat(wv)
                    return lambda xi, yi, m: mac(x, xi, y, yi, wv, wvec, m)

                _window(ctx, g, box, wbase, xbase, ybase, at, lanes)
            if epilogue is not None:
                _map(ctx, x, xbase, dsz, c, epilogue)
    elif node.op == "conv_filter_grad" and g.strides[-1] == 1:
        _filter_gather(ctx, node, g, lanes)
    elif node.op == "conv_filter_grad":
        y, x = node.inputs
        w = node.name
        with b.goto_entry_block():
            acc = b.alloca(t, name="acc")
            vacc = b.alloca(lanes.vt, name="vacc")
        fill(w, i64(0), g.out_channels * cg * ksz)
        # sample by sample (its dy and x rows stay in cache), each offset's sum over the box
        # in a register, added to w once per sample
        with _outer(b, batch, "n") as n, _outer(b, i64(g.out_channels), "co") as co:
            grp = b.sdiv(co, i64(og))
            ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
            with _outer(b, i64(cg), "ci") as ci:
                c = b.add(b.mul(grp, i64(cg)), ci)
                xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))

                def body(xi: ir.Value, yi: ir.Value, mask) -> None:
                    if mask is None:
                        prod = b.fmul(ctx.load(y, yi), ctx.load(x, xi), flags=_SUM)
                        b.store(b.fadd(b.load(acc), prod, flags=_SUM), acc)
                        return
                    # masked-off lanes load zeros: they add nothing
                    prod = b.fmul(lanes.load(y, yi, mask), lanes.load(x, xi, mask), flags=_SUM)
                    b.store(b.fadd(b.load(vacc), prod, flags=_SUM), vacc)

                def at(widx: ir.Value):
                    b.store(zero, acc)
                    b.store(lanes.zero, vacc)

                    def after() -> None:
                        total = b.fadd(b.load(acc), _lanes_sum(b, b.load(vacc)))
                        ctx.store(w, widx, b.fadd(ctx.load(w, widx), total))

                    return body, after

                _window(ctx, g, box, wbase, xbase, ybase, at, lanes)
    else:
        raise CodegenError(f"no conv kernel for op {node.op} (node {node.name})")
    b.ret_void()


def _map(ctx: KernelContext, value: str, base: ir.Value, count: int, channel, fn: Epilogue):
    """value[base + j] = fn(value[base + j], channel) for j < count (one channel's outputs)."""
    b = ctx.b
    with loop(b, i64(count), name="ep") as j:
        at = b.add(base, j)
        ctx.store(value, at, fn(ctx.load(value, at), channel, at, None))


def _positions(ctx, g: ConvGeometry, box, xidx, yidx, k, body, lanes=None) -> None:
    """The box loops of one kernel offset ``k`` (see _window): ``body(x index, y index, mask)``
    per position (mask None), or per chunk of ``lanes.lanes`` positions (its first position's
    indices and the mask of its lanes) when the last axis has stride 1."""
    b = ctx.b
    xs, ys = _strides(g.in_spatial), _strides(g.out_spatial)

    def rec(axis: int, xi: ir.Value, yi: ir.Value) -> None:
        if axis == g.rank:
            body(xi, yi, None)
            return
        lo_t, hi_t = box[axis]
        lo, hi = _lookup(b, lo_t, k[axis]), _lookup(b, hi_t, k[axis])
        xstep = g.strides[axis] * xs[axis]
        if axis == g.rank - 1 and lanes is not None and xstep == 1:
            with counted_loop(b, lo, hi, lanes.lanes, f"o{axis}v") as st:
                mask = lanes.mask(b.sub(hi, st.iv))
                body(b.add(xi, st.iv), b.add(yi, st.iv), mask)
            return
        inner = loop if axis == g.rank - 1 else _outer
        with inner(b, hi, name=f"o{axis}", start=lo) as o:
            rec(axis + 1, b.add(xi, b.mul(o, i64(xstep))), b.add(yi, b.mul(o, i64(ys[axis]))))

    rec(0, xidx, yidx)
