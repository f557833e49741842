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

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node
from graphc.ir.ops.conv import ConvGeometry, geometry

from .kernels import LL, KernelContext
from .lltypes import I64, i64
from .loops import loop

_FAST = ("contract",)  # a * b + c may become one fused multiply-add
_SUM = ("reassoc", "nsz", "contract")  # the filter gradient's sum, one partial sum per lane


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
    at_offset: Callable[[ir.Value], Callable[[ir.Value, ir.Value], None] | None],
) -> None:
    """Loops over the kernel offsets, then over the box of output positions of each; at an
    offset, ``at_offset(w index)`` gives the body ``body(x index, y index)`` of the box loops."""
    b = ctx.b
    r = g.rank
    ks, xs = _strides(g.kernel), _strides(g.in_spatial)

    def offsets(axis: int, widx: ir.Value, xidx: ir.Value, k: list[ir.Value]) -> None:
        if axis == r:
            body = at_offset(widx)
            _positions(ctx, g, box, xidx, ybase, k, body)
            return
        with loop(b, i64(g.kernel[axis]), name=f"k{axis}") as ka:
            nw = b.add(widx, b.mul(ka, i64(ks[axis])))
            shift = b.sub(b.mul(ka, i64(g.dilations[axis])), i64(g.pads_begin[axis]))
            nx = b.add(xidx, b.mul(shift, i64(xs[axis])))
            offsets(axis + 1, nw, nx, [*k, ka])

    offsets(0, wbase, xbase, [])


def emit_conv(ctx: KernelContext, node: Node) -> None:
    """The kernel of one conv, conv_transpose or conv_filter_grad node."""
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

    def mac(dst: str, di: ir.Value, src: str, si: ir.Value, wv: ir.Value) -> None:
        prod = b.fmul(wv, ctx.load(src, si), flags=_FAST)
        ctx.store(dst, di, b.fadd(ctx.load(dst, di), prod, flags=_FAST))

    if node.op == "conv":
        x, w = node.inputs
        y = node.name
        with loop(b, batch, name="n") as n, loop(b, i64(g.out_channels), name="co") as co:
            grp = b.sdiv(co, i64(og))
            ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
            fill(y, ybase, osz)
            with loop(b, i64(cg), name="ci") as ci:
                c = b.add(b.mul(grp, i64(cg)), ci)
                xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))

                def at(widx: ir.Value):
                    wv = ctx.load(w, widx)
                    return lambda xi, yi: mac(y, yi, x, xi, wv)

                _window(ctx, g, box, wbase, xbase, ybase, at)
    elif node.op == "conv_transpose":
        y, w = node.inputs
        x = node.name
        with loop(b, batch, name="n") as n, loop(b, i64(g.channels), name="c") as c:
            grp = b.sdiv(c, i64(cg))
            ci = b.srem(c, i64(cg))
            xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
            fill(x, xbase, dsz)
            with loop(b, i64(og), name="cog") as cj:
                co = b.add(b.mul(grp, i64(og)), cj)
                ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))

                def at(widx: ir.Value):
                    wv = ctx.load(w, widx)
                    return lambda xi, yi: mac(x, xi, y, yi, wv)

                _window(ctx, g, box, wbase, xbase, ybase, at)
    elif node.op == "conv_filter_grad":
        y, x = node.inputs
        w = node.name
        with b.goto_entry_block():
            acc = b.alloca(t, name="acc")
        with loop(b, i64(g.out_channels), name="co") as co:
            grp = b.sdiv(co, i64(og))
            with loop(b, i64(cg), name="ci") as ci:
                c = b.add(b.mul(grp, i64(cg)), ci)
                wbase = b.mul(b.add(b.mul(co, i64(cg)), ci), i64(ksz))
                # per kernel offset: acc = 0; for n: the box; w[...] = acc. The batch loop
                # sits inside the offset loops: _window runs one n; loop it here instead.
                ks_ = _strides(g.kernel)
                xs_ = _strides(g.in_spatial)

                def offsets(axis: int, widx: ir.Value, shift: ir.Value, k: list[ir.Value]):
                    if axis == g.rank:
                        b.store(zero, acc)
                        with loop(b, batch, name="n") as n:
                            xbase = b.mul(b.add(b.mul(n, i64(g.channels)), c), i64(dsz))
                            ybase = b.mul(b.add(b.mul(n, i64(g.out_channels)), co), i64(osz))
                            _positions(ctx, g, box, b.add(xbase, shift), ybase, k, body)
                        ctx.store(w, widx, b.load(acc))
                        return
                    with loop(b, i64(g.kernel[axis]), name=f"k{axis}") as ka:
                        nw = b.add(widx, b.mul(ka, i64(ks_[axis])))
                        sh = b.sub(b.mul(ka, i64(g.dilations[axis])), i64(g.pads_begin[axis]))
                        offsets(axis + 1, nw, b.add(shift, b.mul(sh, i64(xs_[axis]))), [*k, ka])

                def body(xi: ir.Value, yi: ir.Value) -> None:
                    prod = b.fmul(ctx.load(y, yi), ctx.load(x, xi), flags=_SUM)
                    b.store(b.fadd(b.load(acc), prod, flags=_SUM), acc)

                offsets(0, wbase, i64(0), [])
    else:
        raise CodegenError(f"no conv kernel for op {node.op} (node {node.name})")
    b.ret_void()


def _positions(ctx, g: ConvGeometry, box, xidx, yidx, k, body) -> None:
    """The box loops of one kernel offset ``k`` (see _window)."""
    b = ctx.b
    xs, ys = _strides(g.in_spatial), _strides(g.out_spatial)

    def rec(axis: int, xi: ir.Value, yi: ir.Value) -> None:
        if axis == g.rank:
            body(xi, yi)
            return
        lo_t, hi_t = box[axis]
        lo, hi = _lookup(b, lo_t, k[axis]), _lookup(b, hi_t, k[axis])
        with loop(b, hi, name=f"o{axis}", start=lo) as o:
            rec(
                axis + 1,
                b.add(xi, b.mul(o, i64(g.strides[axis] * xs[axis]))),
                b.add(yi, b.mul(o, i64(ys[axis]))),
            )

    rec(0, xidx, yidx)
