"""Kernels of the movement ops with static bounds (slice, pad, concat, reverse) and of
permute: strided copies."""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node
from graphc.ir.ops import OPS
from graphc.ir.ops.shape import slice_bounds
from graphc.ir.types import BATCH

from .kernels import LL, KernelContext
from .loops import i64, loop


def _copy_block(
    ctx: KernelContext,
    src: str,
    dst: str,
    shape,
    src_shape,
    dst_shape,
    src_off,
    dst_off,
    flip: frozenset[int] = frozenset(),
    perm: tuple[int, ...] | None = None,
) -> None:
    """dst[dst_off + sum_a i_a * dst_stride_a] = src[src_off + sum_a j_a * src_stride_a] for
    every index i of ``shape``, j_a = i_a except on the axes in ``flip``, where j_a =
    shape[a] - 1 - i_a (offsets in elements; strides from the buffers' own shapes). With
    ``perm``, iteration axis a walks src's axis perm[a] (np.transpose's order)."""
    b = ctx.b
    ss = ctx.strides(src_shape, src_shape)
    if perm is not None:
        ss = [ss[p] for p in perm]
    ds = ctx.strides(dst_shape, dst_shape)

    def rec(axis: int, si: ir.Value, di: ir.Value) -> None:
        if axis == len(shape):
            ctx.store(dst, di, ctx.load(src, si))
            return
        with loop(b, ctx.dim(shape[axis]), name=f"m{axis}") as i:
            j = b.sub(i64(int(shape[axis]) - 1), i) if axis in flip else i
            nsi = si if ss[axis] is None else b.add(si, b.mul(j, ss[axis]))
            ndi = di if ds[axis] is None else b.add(di, b.mul(i, ds[axis]))
            rec(axis + 1, nsi, ndi)

    rec(0, i64(src_off), i64(dst_off))


def _offset(shape, starts: dict[int, int]) -> int:
    """The flat element offset of the index with ``starts[a]`` on axis a (0 elsewhere)."""
    off = 0
    for a, start in starts.items():
        rest = shape[a + 1 :]
        if start and BATCH in rest:
            raise CodegenError(f"movement kernel: an offset on axis {a} of {shape} depends on N")
        off += start * math.prod(int(d) for d in rest) if start else 0
    return off


def emit_movement(ctx: KernelContext, node: Node) -> None:
    """slice: copy the block at its starts; pad: zeros, then the operand at its offsets; concat:
    each operand at its offset along the axis; reverse: the operand read backwards along its
    axes. Offsets never involve the batch axis (the ops
    refuse it), so they are compile-time constants."""
    g, b = ctx.g, ctx.b
    out = node.type.shape
    if node.op == "slice":
        xt = g[node.inputs[0]].type
        bounds = slice_bounds(xt, dict(node.attrs))
        off = _offset(xt.shape, {a: lo for a, (lo, _) in bounds.items()})
        _copy_block(ctx, node.inputs[0], node.name, out, xt.shape, out, off, 0)
    elif node.op == "pad":
        xt = g[node.inputs[0]].type
        op = OPS["pad"]
        axes = [a % xt.rank for a in op.attr(node, "axes")]
        before = dict(zip(axes, op.attr(node, "before")))
        zero = ir.Constant(LL[node.type.dtype], 0.0)
        with loop(b, ctx.count(out), name="z") as i:
            ctx.store(node.name, i, zero)
        _copy_block(
            ctx, node.inputs[0], node.name, xt.shape, xt.shape, out, 0, _offset(out, before)
        )
    elif node.op == "concat":
        a = OPS["concat"].attr(node, "axis") % len(out)
        start = 0
        for x in node.inputs:
            xt = g[x].type
            _copy_block(ctx, x, node.name, xt.shape, xt.shape, out, 0, _offset(out, {a: start}))
            start += int(xt.shape[a])
    elif node.op == "reverse":
        xt = g[node.inputs[0]].type
        flip = frozenset(a % xt.rank for a in OPS["reverse"].attr(node, "axes"))
        _copy_block(ctx, node.inputs[0], node.name, out, xt.shape, out, 0, 0, flip)
    elif node.op == "permute":
        xt = g[node.inputs[0]].type
        perm = tuple(OPS["permute"].attr(node, "perm"))
        _copy_block(ctx, node.inputs[0], node.name, out, xt.shape, out, 0, 0, perm=perm)
    else:
        raise CodegenError(f"no movement kernel for op {node.op} (node {node.name})")
    b.ret_void()
