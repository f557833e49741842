"""Lowerings: one function per op turning operand values (scalars or vectors) into a result.

Elementwise ops lower to straight-line code on one element; the kernels in ``kernels.py`` put
them inside loops that LLVM vectorizes. Transcendentals use our polynomial ``vmath``.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node

from . import vmath

LOWERINGS: dict[str, Callable[[ir.IRBuilder, Node, list[ir.Value], str], ir.Value]] = {}


def lowering(op: str):
    def deco(fn):
        if op in LOWERINGS:
            raise ValueError(f"lowering for {op!r} defined twice")
        LOWERINGS[op] = fn
        return fn

    return deco


def zero_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 0.0)


def one_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 1.0)


@lowering("add")
def _add(b, node, a, name):
    return b.fadd(a[0], a[1], name=name)


@lowering("sub")
def _sub(b, node, a, name):
    return b.fsub(a[0], a[1], name=name)


@lowering("mul")
def _mul(b, node, a, name):
    return b.fmul(a[0], a[1], name=name)


@lowering("div")
def _div(b, node, a, name):
    return b.fdiv(a[0], a[1], name=name)


@lowering("neg")
def _neg(b, node, a, name):
    return b.fneg(a[0], name=name)


@lowering("square")
def _square(b, node, a, name):
    return b.fmul(a[0], a[0], name=name)


@lowering("maximum")
def _maximum(b, node, a, name):
    return vmath.fmax(b, a[0], a[1], name=name)


@lowering("greater")
def _greater(b, node, a, name):
    c = b.fcmp_ordered(">", a[0], a[1], name=name + ".c")
    return b.select(c, one_like(a[0]), zero_like(a[0]), name=name)


@lowering("greater_equal")
def _greater_equal(b, node, a, name):
    c = b.fcmp_ordered(">=", a[0], a[1], name=name + ".c")
    return b.select(c, one_like(a[0]), zero_like(a[0]), name=name)


@lowering("relu")
def _relu(b, node, a, name):
    # select(x < 0, 0, x) keeps NaN (a NaN input gives a NaN output, so numerics checks see it)
    c = b.fcmp_ordered("<", a[0], zero_like(a[0]), name=name + ".c")
    return b.select(c, zero_like(a[0]), a[0], name=name)


@lowering("exp")
def _exp(b, node, a, name):
    return vmath.exp(b, a[0], name=name)


@lowering("log")
def _log(b, node, a, name):
    return vmath.log(b, a[0], name=name)


@lowering("sqrt")
def _sqrt(b, node, a, name):
    return vmath.sqrt(b, a[0], name=name)


@lowering("sigmoid")
def _sigmoid(b, node, a, name):
    return vmath.sigmoid(b, a[0], name=name)


@lowering("tanh")
def _tanh(b, node, a, name):
    return vmath.tanh(b, a[0], name=name)


@lowering("softplus")
def _softplus(b, node, a, name):
    return vmath.softplus(b, a[0], name=name)


@lowering("sigmoid_cross_entropy")
def _sigmoid_cross_entropy(b, node, a, name):
    """(z > 0 ? z (1 - y) : -z y) + log1p(exp(-|z|)), a product with a zero factor being 0
    (so an infinite logit at its own target gives 0, not inf * 0 = NaN); see the op."""
    z, y = a
    zero, one = zero_like(z), one_like(z)
    omy = b.fsub(one, y)
    pos = b.select(b.fcmp_ordered("==", omy, zero), zero, b.fmul(z, omy))
    neg = b.select(b.fcmp_ordered("==", y, zero), zero, b.fneg(b.fmul(z, y)))
    lin = b.select(b.fcmp_ordered(">", z, zero), pos, neg)
    tail = vmath.softplus(b, b.fneg(vmath.fabs(b, z)))  # log1p(exp(-|z|))
    return b.fadd(lin, tail, name=name)


@lowering("broadcast_to")
def _broadcast_to(b, node, a, name):
    return a[0]


@lowering("one_minus_pow")
def _one_minus_pow(b, node, a, name):
    """1 - base**t in double by binary powering over the 63 bits of the integer t (straight-line
    code: a scalar computed once per step), rounded once to t's type."""
    t = a[0]
    vec = isinstance(t.type, ir.VectorType)
    d = ir.VectorType(ir.DoubleType(), t.type.count) if vec else ir.DoubleType()
    it = ir.VectorType(ir.IntType(64), t.type.count) if vec else ir.IntType(64)
    n = b.fptosi(t, it, name=name + ".t")
    one, zero = vmath.const_like(d, 1.0), _int_const(it, 0)
    acc, p = one, vmath.const_like(d, float(node.attr("base")))
    for k in range(63):
        bit = b.icmp_signed("!=", b.and_(n, _int_const(it, 1 << k)), zero)
        acc = b.fmul(acc, b.select(bit, p, one))
        if k < 62:
            p = b.fmul(p, p)
    out = b.fsub(one, acc)
    return out if t.type == d else b.fptrunc(out, t.type, name=name)


# ---------------------------------------------------------------------------- dropout


def _int_const(ty: ir.Type, v: int) -> ir.Constant:
    """An i64 constant (or vector of them) from an unsigned 64-bit value."""
    v = v - (1 << 64) if v >= 1 << 63 else v
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [v] * ty.count)
    return ir.Constant(ty, v)


def _mix64(b: ir.IRBuilder, z: ir.Value, name: str) -> ir.Value:
    """SplitMix64's finalizer (graphc.ir.ops.random.mix64) on i64 or <W x i64> values."""
    from graphc.ir.ops.random import MIX1, MIX2

    t = z.type
    z = b.mul(b.xor(z, b.lshr(z, _int_const(t, 30))), _int_const(t, MIX1))
    z = b.mul(b.xor(z, b.lshr(z, _int_const(t, 27))), _int_const(t, MIX2))
    return b.xor(z, b.lshr(z, _int_const(t, 31)), name=name)


@lowering("dropout")
def _dropout(b, node, a, name, index=None):
    """The integer SplitMix64 draw of ir/ops/random.py, bit for bit; ``index`` is the element's
    flat index (i64, or a vector of consecutive indices when x is a vector)."""
    from graphc.ir.ops.random import GAMMA, MASK64, mix64, threshold

    x, step = a
    if isinstance(step.type, ir.VectorType):
        step = b.extract_element(step, ir.Constant(ir.IntType(32), 0))
    i64t = ir.IntType(64)
    p, seed, stream = node.attr("p"), node.attr("seed", 0), node.attr("stream", 0)
    k0 = int(mix64((seed + stream * GAMMA) & MASK64))
    s = b.fptosi(step, i64t, name=name + ".step")
    key = _mix64(b, b.add(_int_const(i64t, k0), b.mul(s, _int_const(i64t, GAMMA))), name + ".key")
    it = index.type
    if isinstance(it, ir.VectorType):
        vk = b.insert_element(ir.Constant(it, ir.Undefined), key, ir.Constant(ir.IntType(32), 0))
        key = b.shuffle_vector(
            vk,
            ir.Constant(it, ir.Undefined),
            ir.Constant(ir.VectorType(ir.IntType(32), it.count), [0] * it.count),
        )
    ctr = b.add(key, b.mul(b.add(index, _int_const(it, 1)), _int_const(it, GAMMA)))
    u = _mix64(b, ctr, name + ".u")
    keep = b.icmp_unsigned(
        ">=", b.lshr(u, _int_const(it, 40)), _int_const(it, threshold(p)), name=name + ".keep"
    )
    scaled = b.fmul(x, vmath.const_like(x.type, 1.0 / (1.0 - p)))
    return b.select(keep, scaled, zero_like(x), name=name)


_dropout.needs_index = True


def lower_elementwise(
    b: ir.IRBuilder, node: Node, args: list[ir.Value], name: str, index: ir.Value | None = None
) -> ir.Value:
    """Lower one elementwise node; ``index`` (the element's flat index in the node's output,
    i64 or a vector of them matching the operands) is passed to lowerings that need it."""
    fn = LOWERINGS.get(node.op)
    if fn is None:
        raise CodegenError(f"no elementwise lowering for op {node.op} (node {node.name})")
    if getattr(fn, "needs_index", False):
        if index is None:
            raise CodegenError(
                f"{node.op} (node {node.name}) needs the element index, which this "
                f"kernel does not provide"
            )
        return fn(b, node, args, name, index)
    return fn(b, node, args, name)
