"""Lowerings: one function per op turning operand values (scalars or vectors) into a result.

Elementwise ops lower to straight-line code on one element; the kernels in ``kernels.py`` put
them inside loops that LLVM vectorizes. Transcendentals use our polynomial ``vmath``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node
from graphc.ir.ops import OPS
from graphc.ir.types import BATCH

from . import vmath
from .lltypes import F64, I32, I64, i64, vconst
from .loops import counted_loop

Lowering = Callable[..., ir.Value]  # (b, node, operand values, name[, index]) -> value
LOWERINGS: dict[str, Lowering] = {}

# ops that are one IRBuilder instruction on their operands (one line per op)
INSTRUCTIONS = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv", "neg": "fneg"}

# ops that are one vector-math function of ``codegen.vmath`` (polynomials with a tested bound)
VMATH = {
    "exp": vmath.exp,
    "log": vmath.log,
    "sqrt": vmath.sqrt,
    "sigmoid": vmath.sigmoid,
    "tanh": vmath.tanh,
    "softplus": vmath.softplus,
    "maximum": vmath.fmax,
    "minimum": vmath.fmin,
    "abs": vmath.fabs,
    "erf": vmath.erf,
}


def lowering(op: str):
    """Decorator: ``fn(b, node, args, name)`` lowers ``op`` (read attrs with ``attr``)."""

    def deco(fn):
        if op in LOWERINGS:
            raise ValueError(f"lowering for {op!r} defined twice")
        LOWERINGS[op] = fn
        return fn

    return deco


def _instruction(method: str) -> Lowering:
    return lambda b, node, a, name: getattr(b, method)(*a, name=name)


def _vmath(fn: Any) -> Lowering:
    return lambda b, node, a, name: fn(b, *a, name=name)


for _op, _method in INSTRUCTIONS.items():
    lowering(_op)(_instruction(_method))
for _op, _fn in VMATH.items():
    lowering(_op)(_vmath(_fn))


def attr(node: Node, key: str) -> Any:
    """The node's attr ``key``, or the op's declared default (defaults live on the op class)."""
    return OPS[node.op].attr(node, key)


def zero_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 0.0)


def one_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 1.0)


def _mask(
    b: ir.IRBuilder,
    pred: str,
    x: ir.Value,
    y: ir.Value,
    name: str,
    ordered: bool = True,
    out: str | None = None,
) -> ir.Value:
    """1.0 where ``x pred y`` else 0.0, in x's type (ordered: false when either is NaN;
    unordered: true then); integer operands are compared as signed and give a mask of dtype
    ``out``."""
    if _is_int(x.type):
        c = b.icmp_signed(pred, x, y, name=name + ".c")
        ft = _float_type(out or "f32", x.type)
        return b.select(c, vmath.const_like(ft, 1.0), vmath.const_like(ft, 0.0), name=name)
    cmp = b.fcmp_ordered if ordered else b.fcmp_unordered
    c = cmp(pred, x, y, name=name + ".c")
    return b.select(c, one_like(x), zero_like(x), name=name)


# comparison ops: (predicate, ordered); their results are masks of 1.0 and 0.0
COMPARISONS = {
    "greater": (">", True),
    "greater_equal": (">=", True),
    "less": ("<", True),
    "less_equal": ("<=", True),
    "equal": ("==", True),
    "not_equal": ("!=", False),  # NaN differs from everything, as in numpy
}
for _op, (_pred, _ordered) in COMPARISONS.items():
    lowering(_op)(
        lambda b, node, a, name, p=_pred, o=_ordered: _mask(
            b, p, a[0], a[1], name, ordered=o, out=node.type.dtype
        )
    )


@lowering("square")
def _square(b, node, a, name):
    return b.fmul(a[0], a[0], name=name)


@lowering("relu")
def _relu(b, node, a, name):
    # select(x < 0, 0, x) keeps NaN (a NaN input gives a NaN output, so numerics checks see it)
    c = b.fcmp_ordered("<", a[0], zero_like(a[0]), name=name + ".c")
    return b.select(c, zero_like(a[0]), a[0], name=name)


@lowering("leaky_relu")
def _leaky_relu(b, node, a, name):
    # select(x < 0, alpha * x, x): NaN stays NaN, as in relu
    c = b.fcmp_ordered("<", a[0], zero_like(a[0]), name=name + ".c")
    ax = b.fmul(a[0], vmath.const_like(a[0].type, attr(node, "alpha")), name=name + ".ax")
    return b.select(c, ax, a[0], name=name)


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
    """1 - base**t in double by binary powering over the 63 bits of the integer t, rounded once
    to t's type. A loop of 63 rounds, not straight-line code: a scalar computed once per step
    (some 0.2 us either way: the chain of multiplications), and 0.01 s less to compile."""
    t = a[0]
    vec = isinstance(t.type, ir.VectorType)
    d = ir.VectorType(F64, t.type.count) if vec else F64
    it = ir.VectorType(I64, t.type.count) if vec else I64
    out_t = _float_type(node.type.dtype, t.type)
    if _is_int(t.type):
        n = t if t.type == it else b.sext(t, it, name=name + ".t")
    else:
        n = b.fptosi(t, it, name=name + ".t")
    one, zero = vmath.const_like(d, 1.0), _int_const(it, 0)
    p = vmath.const_like(d, float(node.attr("base")))
    # round k: acc *= (bit k of t ? base**(2**k) : 1); then p = base**(2**(k+1)), mask = 2**(k+1)
    with counted_loop(b, i64(0), i64(63), 1, f"{name}.bit", [one, p, _int_const(it, 1)]) as s:
        acc, p, mask = s.carried
        bit = b.icmp_signed("!=", b.and_(n, mask), zero)
        s.carried = [
            b.fmul(acc, b.select(bit, p, one)),
            b.fmul(p, p),
            b.shl(mask, _int_const(it, 1)),
        ]
    out = b.fsub(one, s.final[0])
    return out if out_t == d else b.fptrunc(out, out_t, name=name)


def _is_int(ty: ir.Type) -> bool:
    return isinstance(ty.element if isinstance(ty, ir.VectorType) else ty, ir.IntType)


def _float_type(dtype: str, like: ir.Type) -> ir.Type:
    """The LLVM float type of ``dtype``, a vector of as many lanes as ``like`` if it is one."""
    f = ir.DoubleType() if dtype == "f64" else ir.FloatType()
    return ir.VectorType(f, like.count) if isinstance(like, ir.VectorType) else f


@lowering("increment")
def _increment(b, node, a, name):
    return b.add(a[0], _int_const(a[0].type, 1), name=name)


@lowering("cast")
def _cast(b, node, a, name):
    x = a[0]
    to = _float_type(node.type.dtype, x.type)
    if _is_int(x.type):
        return b.sitofp(x, to, name=name)
    if x.type == to:
        return x
    return (b.fpext if node.type.dtype == "f64" else b.fptrunc)(x, to, name=name)


# ---------------------------------------------------------------------------- activations, math


def _c(x: ir.Value, v: float) -> ir.Constant:
    return vmath.const_like(x.type, v)


@lowering("reciprocal")
def _reciprocal(b, node, a, name):
    return b.fdiv(one_like(a[0]), a[0], name=name)


@lowering("rsqrt")
def _rsqrt(b, node, a, name):
    return b.fdiv(one_like(a[0]), vmath.sqrt(b, a[0], name=name + ".sqrt"), name=name)


@lowering("where")
def _where(b, node, a, name):
    c = b.fcmp_unordered("!=", a[0], zero_like(a[0]), name=name + ".c")  # NaN counts as true
    return b.select(c, a[1], a[2], name=name)


def _clamp(b, x: ir.Value, lo: float, hi: float, name: str) -> ir.Value:
    return vmath.fmin(b, vmath.fmax(b, x, _c(x, lo), name=name + ".lo"), _c(x, hi), name=name)


@lowering("clip")
def _clip(b, node, a, name):
    return _clamp(b, a[0], float(attr(node, "min")), float(attr(node, "max")), name)


def _int_power(b, x: ir.Value, k: int, name: str) -> ir.Value:
    """x**k for an int k >= 1 by binary powering (exact products, any sign of x)."""
    result, base = None, x
    while k:
        if k & 1:
            result = base if result is None else b.fmul(result, base, name=name + ".p")
        k >>= 1
        if k:
            base = b.fmul(base, base, name=name + ".sq")
    return result


@lowering("pow")
def _pow(b, node, a, name):
    """Integer exponents up to 64 in magnitude: repeated products (then one division for a
    negative one); 0.5: sqrt (numpy's power does the same: sqrt(-inf) is NaN); otherwise
    r = exp(e * log|x|) with C's pow rules for x < 0 (numpy's reference): an integral e gives
    r, negated for an odd e; a non-integral e gives NaN, except x = -inf: r (+inf for e > 0,
    0 for e < 0).

    float32 x is raised in float64 and rounded once (except x**2, x**-1, sqrt and x itself,
    which float32 rounds correctly): exp(e log|x|) multiplies log's relative error by
    |e log x| (1.5**100 was 23 ulp off, (1e-20)**(1/3) 7 ulp) and each product of the binary
    powering adds a rounding (and x**-2 overflowed x*x for |x| > 2**64); in float64 the
    result is within 1 ulp of numpy's powf."""
    x, e = a[0], float(attr(node, "exponent"))
    f32 = (x.type.element if isinstance(x.type, ir.VectorType) else x.type) == ir.FloatType()
    if f32 and e not in (0.0, 1.0, 2.0, -1.0, 0.5):
        e32 = struct.unpack("f", struct.pack("f", e))[0]  # the exponent as float32 sees it
        vec = isinstance(x.type, ir.VectorType)
        wide = ir.VectorType(ir.DoubleType(), x.type.count) if vec else ir.DoubleType()
        r64 = _pow_any(b, b.fpext(x, wide, name=name + ".f64"), e32, name + ".w")
        return b.fptrunc(r64, x.type, name=name)
    if not f32 and e not in (0.5, 0.0) and not (e.is_integer() and abs(e) <= 8):
        return _pow_f64(b, x, e, name)
    return _pow_any(b, x, e, name)


def _pow_f64(b, x: ir.Value, e: float, name: str) -> ir.Value:
    """float64 x ** e for a non-integral e or |e| > 8: exp(e log|x|) with log|x| = hi + lo
    (vmath.log_hi_lo) and e (hi + lo) = P + P_lo exactly up to the lo term, then
    exp(P) (1 + P_lo). exp(e log|x|) with log rounded to float64 was up to ~600 ulp off
    (the rounding of log times |e log x|; binary powering of x**37 about 20); this is within
    2 ulp of numpy. x = 0, +-inf and NaN keep _pow_any's values (C's pow rules)."""
    ax = vmath.fabs(b, x, name=name + ".abs")
    hi, lo = vmath.log_hi_lo(b, ax, name=name + ".log")
    ec = _c(x, e)
    p_hi = b.fmul(hi, ec, name=name + ".p")
    p_lo = b.fadd(vmath.fma(b, hi, ec, b.fneg(p_hi)), b.fmul(lo, ec), name=name + ".plo")
    inf = _c(x, math.inf)
    p_lo = b.select(b.fcmp_ordered("<", vmath.fabs(b, p_hi), inf), p_lo, zero_like(x))
    big = vmath.exp(b, p_hi, name=name + ".exp")
    mag = b.select(
        b.fcmp_ordered("<", big, inf), vmath.fma(b, big, p_lo, big), big, name=name + ".mag"
    )
    special = _pow_any(b, x, e, name + ".sp")  # 0, inf, NaN, and x < 0 with e not integral
    ok = b.and_(
        b.fcmp_ordered(">", ax, zero_like(x)), b.fcmp_ordered("<", ax, inf), name=name + ".ok"
    )
    if e.is_integer():
        if abs(e) < 2.0**53 and int(e) % 2:
            mag = vmath.copysign(b, mag, x, name=name + ".sign")
    else:
        ok = b.and_(ok, b.fcmp_ordered(">", x, zero_like(x)), name=name + ".pos")
    return b.select(ok, mag, special, name=name)


def _pow_any(b, x: ir.Value, e: float, name: str) -> ir.Value:
    """x ** e in x's own type (see _pow)."""
    if e == 0.0:
        return one_like(x)
    if e.is_integer() and abs(e) <= 64:
        p = _int_power(b, x, int(abs(e)), name)
        return p if e > 0 else b.fdiv(one_like(x), p, name=name)
    if e == 0.5:
        return vmath.sqrt(b, x, name=name)
    lx = vmath.log(b, vmath.fabs(b, x, name=name + ".abs"), name=name + ".log")
    r = vmath.exp(b, b.fmul(lx, _c(x, e)), name=name + ".mag")
    if e.is_integer():  # |e| > 64: e is a float64 here (every one from 2**53 on is even)
        if abs(e) < 2.0**53 and int(e) % 2:  # x's sign (-0.0 too: (-0) ** -65 = -inf)
            return vmath.copysign(b, r, x, name=name)
        return r
    neg = b.fcmp_ordered("<", x, zero_like(x), name=name + ".neg")
    finite = b.fcmp_ordered("!=", x, _c(x, -math.inf), name=name + ".fin")
    return b.select(b.and_(neg, finite), _c(x, math.nan), r, name=name)


def _elu(b, x: ir.Value, alpha: float, name: str) -> ir.Value:
    # expm1, not exp(x) - 1: that cancels near 0 (relative error 1 below |x| = 2**-24 in f32)
    em1 = vmath.expm1(b, x, name=name + ".expm1")
    neg = b.fmul(em1, _c(x, alpha), name=name + ".neg")
    return b.select(b.fcmp_ordered(">", x, zero_like(x)), x, neg, name=name)


@lowering("elu")
def _elu_op(b, node, a, name):
    return _elu(b, a[0], float(attr(node, "alpha")), name)


@lowering("selu")
def _selu(b, node, a, name):
    from graphc.ir.ops.activations import SELU_ALPHA, SELU_SCALE

    return b.fmul(_elu(b, a[0], SELU_ALPHA, name + ".elu"), _c(a[0], SELU_SCALE), name=name)


@lowering("gelu")
def _gelu(b, node, a, name):
    import math

    from graphc.ir.ops.activations import GELU_TANH_C

    x = a[0]
    if attr(node, "approximate") == "tanh":
        x3 = b.fmul(b.fmul(x, x), x)
        u = b.fmul(b.fadd(x, b.fmul(x3, _c(x, GELU_TANH_C))), _c(x, math.sqrt(2.0 / math.pi)))
        # x/2 (1 + tanh(u)) as x sigmoid(2u): 1 + tanh(u) cancels in the left tail
        s = vmath.sigmoid(b, b.fmul(u, _c(x, 2.0)), name=name + ".sig")
        return b.fmul(x, s, name=name)
    return b.fmul(x, vmath.normal_cdf(b, x, name=name + ".cdf"), name=name)  # keeps the tail


@lowering("silu")
def _silu(b, node, a, name):
    return b.fmul(a[0], vmath.sigmoid(b, a[0], name=name + ".sig"), name=name)


@lowering("mish")
def _mish(b, node, a, name):
    sp = vmath.softplus(b, a[0], name=name + ".sp")
    return b.fmul(a[0], vmath.tanh(b, sp, name=name + ".tanh"), name=name)


@lowering("softsign")
def _softsign(b, node, a, name):
    den = b.fadd(one_like(a[0]), vmath.fabs(b, a[0], name=name + ".abs"))
    return b.fdiv(a[0], den, name=name)


@lowering("hard_sigmoid")
def _hard_sigmoid(b, node, a, name):
    x = a[0]
    z = b.fadd(b.fmul(x, _c(x, float(attr(node, "alpha")))), _c(x, float(attr(node, "beta"))))
    return _clamp(b, z, 0.0, 1.0, name)


@lowering("hard_tanh")
def _hard_tanh(b, node, a, name):
    return _clamp(b, a[0], -1.0, 1.0, name)


# ---------------------------------------------------------------------------- dropout


def _int_const(ty: ir.Type, v: int) -> ir.Constant:
    """An i64 constant (or vector of them) from an unsigned 64-bit value."""
    v = v - (1 << 64) if v >= 1 << 63 else v
    if isinstance(ty, ir.VectorType):
        return vconst(ty, v)
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

    x, step = a[:2]
    i64t = I64

    def as_i64(v: ir.Value, what: str) -> ir.Value:
        """The step counter or row0 as i64 (an integer operand, or a float one of older graphs)."""
        if isinstance(v.type, ir.VectorType):
            v = b.extract_element(v, ir.Constant(I32, 0))
        if _is_int(v.type):
            return v if v.type == i64t else b.sext(v, i64t, name=name + what)
        return b.fptosi(v, i64t, name=name + what)

    p, seed, stream = attr(node, "p"), attr(node, "seed"), attr(node, "stream")
    k0 = int(mix64((seed + stream * GAMMA) & MASK64))
    s = as_i64(step, ".step")
    key = _mix64(b, b.add(_int_const(i64t, k0), b.mul(s, _int_const(i64t, GAMMA))), name + ".key")
    shape = node.type.shape
    if len(a) > 2 and shape and shape[0] == BATCH:  # row0: the rows are a slice of the batch
        per_row = node.type.elements_per_row()
        key = b.add(key, b.mul(as_i64(a[2], ".row0"), _int_const(i64t, per_row * GAMMA & MASK64)))
    it = index.type
    if isinstance(it, ir.VectorType):
        vk = b.insert_element(vconst(it, ir.Undefined), key, ir.Constant(I32, 0))
        key = b.shuffle_vector(
            vk, vconst(it, ir.Undefined), vconst(ir.VectorType(I32, it.count), 0)
        )
    ctr = b.add(key, b.mul(b.add(index, _int_const(it, 1)), _int_const(it, GAMMA)))
    u = _mix64(b, ctr, name + ".u")
    keep = b.icmp_unsigned(
        ">=", b.lshr(u, _int_const(it, 40)), _int_const(it, threshold(p)), name=name + ".keep"
    )
    scaled = b.fmul(x, vmath.const_like(x.type, 1.0 / (1.0 - p)))
    return b.select(keep, scaled, zero_like(x), name=name)


def lower_elementwise(
    b: ir.IRBuilder, node: Node, args: list[ir.Value], name: str, index: ir.Value | None = None
) -> ir.Value:
    """Lower one elementwise node; ``index`` (the element's flat index in the node's output,
    i64 or a vector of them matching the operands) is passed to lowerings that need it."""
    fn = LOWERINGS.get(node.op)
    if fn is None:
        raise CodegenError(f"no elementwise lowering for op {node.op} (node {node.name})")
    if OPS[node.op].needs_index:
        if index is None:
            raise CodegenError(
                f"{node.op} (node {node.name}) needs the element index, which this "
                f"kernel does not provide"
            )
        return fn(b, node, args, name, index)
    return fn(b, node, args, name)
