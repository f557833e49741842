"""ONNX import of quantized operators: the QOperator format (QLinearMatMul, QLinearConv,
MatMulInteger, ConvInteger, DynamicQuantizeLinear, and the com.microsoft operators that ONNX
Runtime's quantizer and optimizer write: QGemm, QLinearAdd, QLinearMul, QLinearSigmoid,
QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat,
QLinearSoftmax, MatMulIntegerToFloat, DynamicQuantizeMatMul); QDQ models rewritten into those
kernels where ONNX Runtime's default session fuses them (``qdq_as_qoperator``); blocked
QuantizeLinear / DequantizeLinear scales (``blocked_array``).

graphc computes in float32, so a quantized value (uint8 / int8) is held as an integral float32
and every integer step is done exactly in float32:

- **Products and accumulations.** The operands are centred first (``q - zero_point``, whole
  numbers of magnitude <= 255), their products are exact, and float32 sums whole numbers
  exactly while every partial sum stays below 2**24 (whatever the order of the sum). The
  importer proves that bound per output column / channel from the constant operand:
  ``max|a - za| * sum_k |b[k, j] - zb[j]| + |bias[j]| < 2**24`` (``max|a - za|`` from the
  activation's type and constant zero point, 255 when the zero point is computed). Where it
  does not hold the constant operand is split into ``16 * hi + lo`` (``lo`` in 0..15) and the
  two products (each within the bound) are summed by one float32 addition, which rounds the
  exact sum correctly, as ONNX Runtime's conversion of its int32 accumulator to float does
  (for K up to about 4000 at full-range operands; a computed operand, both of QLinearMatMul's
  in attention, is split the same way at run time). Beyond that the import is refused naming
  the node.
- **Requantization** as ONNX Runtime's MLAS does: ``clamp(rne(float(acc) * M) + zp)`` with the
  float32 multiplier ``M = (a_scale * b_scale[j]) / y_scale``, halves to even (the spec's
  rounding).
- **Element-wise operators** (QLinearAdd, QLinearMul, QLinearLeakyRelu, QLinearSigmoid, the
  pools, QLinearConcat): dequantize, the float32 operation, quantize (``rne(v / y_scale) +
  zp``), in ONNX Runtime's order of float32 operations where it is known (see each rule).

Scales and zero points must be known at import time (initializers), except the activation
zero point and scale that DynamicQuantizeLinear computes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from . import dsl
from .dsl import Tensor
from .onnx_import import (
    _QUANT_RANGE,
    _ROUND_MAGIC,
    NodeContext,
    Rule,
    Value,
    _abs,
    _axis,
    _conv_attrs,
    _fmt,
    _integral_part,
    _mask,
    _minimum,
    _pool,
    _reshape,
    require_onnx,
)

EXACT = 2.0**24  # float32 holds every whole number of magnitude <= 2**24 (a 24-bit significand)
_NP_TYPE = {np.dtype(np.uint8): 2, np.dtype(np.int8): 3}


def rne(v: Tensor) -> Tensor:
    """The nearest whole number to float32 ``v``, halves to even (|v| >= 2**23: v itself)."""
    a = _abs(v)
    r = (a + _ROUND_MAGIC) - _ROUND_MAGIC
    zero = dsl.const(0.0)
    r = dsl.apply("where", dsl.apply("greater", zero, v), zero - r, r)
    return dsl.apply("where", dsl.apply("greater", dsl.const(_ROUND_MAGIC), a), r, v)


def saturate(cx: NodeContext, r: Tensor, zp: Any, t: int) -> Tensor:
    """clamp(r + zp) to the range of ONNX element type ``t`` (uint8 2, int8 3), marked
    integral (an exact float32 whole number)."""
    lo, hi = _QUANT_RANGE[t]
    if zp is not None and not (isinstance(zp, np.ndarray) and not zp.any()):
        r = r + _const(cx, zp, "zero_point")
    q = _minimum(dsl.maximum(r, dsl.const(float(lo))), dsl.const(float(hi)))
    return _mask(cx, dsl.apply("cast", q, dtype="f32"))


def _const(cx: NodeContext, a: Any, what: str, shaped: bool = False) -> Any:
    """``a`` as a float32 constant: a scalar where it has one element, unless ``shaped``."""
    if isinstance(a, Tensor):
        return a
    a = np.asarray(a, dtype=np.float32)
    if a.size == 1 and not shaped:
        return dsl.const(float(a.reshape(())))
    return cx.imp.constant_tensor(f"{what}_{cx.index}", a, cx, False)


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


class _Given(NodeContext):
    """The node's context with some operands replaced by tensors (a dequantized input)."""

    def __init__(self, cx: NodeContext, given: dict[int, Tensor]) -> None:
        super().__init__(cx.imp, cx.node, cx.index, cx.version)
        self.given = given

    def x(self, i: int) -> Tensor:
        return self.given[i] if i in self.given else super().x(i)


def _type_of(cx: NodeContext, zp_index: int) -> int:
    """The 8-bit element type of an operand, read from its zero point (uint8 when absent or
    computed); other types are refused."""
    if not cx.has(zp_index):
        return 2
    v = cx.value(zp_index)
    if isinstance(v, Tensor):
        return 2  # DynamicQuantizeLinear's uint8
    t = _NP_TYPE.get(np.asarray(v).dtype)
    if t is None:
        cx.fail(f"zero point of element type {np.asarray(v).dtype}: graphc imports uint8, int8")
    return t


def _param(cx: NodeContext, i: int, what: str, length: int | None = None) -> np.ndarray | None:
    """A scale or zero point (operand ``i``) known at import time, float64: a scalar, or a 1-D
    value of ``length`` elements where per-channel values are allowed."""
    if not cx.has(i):
        return None
    a = np.asarray(cx.c(i))
    if a.size == 1:
        return a.astype(np.float64).reshape(())
    if length is None or a.ndim != 1 or a.size != length:
        want = "a scalar" if length is None else f"a scalar or [{length}] (one per channel)"
        cx.fail(f"{what} of shape {list(a.shape)}: {want}")
    return a.astype(np.float64)


def _scale(cx: NodeContext, i: int, what: str, length: int | None = None) -> np.ndarray:
    s = _param(cx, i, what, length)
    if s is None:
        cx.fail(f"{what} is missing")
    assert s is not None
    if not np.all(np.isfinite(s) & (s > 0)):
        cx.fail(f"{what} {s.tolist()} must be positive and finite")
    return _f32(s)


def _centred_input(cx: NodeContext, i: int, zi: int) -> tuple[Tensor, float]:
    """Operand ``i`` minus its scalar zero point (operand ``zi``; a computed scalar allowed),
    and the bound on its magnitude."""
    x = cx.x(i)
    t = _type_of(cx, zi)
    lo, hi = _QUANT_RANGE[t]
    if not cx.has(zi):
        return x, float(max(-lo, hi))
    z = cx.value(zi)
    if isinstance(z, Tensor):
        if z.shape and any(d != 1 for d in z.shape):
            cx.fail(f"a computed zero point of shape {_fmt(z.shape)}: graphc takes a scalar")
        return x - _reshape(cx, z, ()) if z.shape else x - z, 255.0
    za = np.asarray(z, dtype=np.float64)
    if za.size != 1:
        cx.fail(f"zero point of shape {list(za.shape)} for operand {i}: graphc takes a scalar")
    zv = float(za.reshape(()))
    return (x - zv if zv else x), max(hi - zv, zv - lo)


def _centred_weight(cx: NodeContext, i: int, zi: int, axis: int, rank: int) -> np.ndarray:
    """Constant operand ``i`` minus its zero point (scalar, or one per index of ``axis``), as
    exact whole numbers (float64)."""
    w = np.asarray(cx.c(i))
    if w.dtype not in _NP_TYPE:
        cx.fail(f"operand {i} of element type {w.dtype}: graphc imports uint8, int8")
    w = w.astype(np.float64)
    if w.ndim != rank:
        cx.fail(f"operand {i} of shape {list(w.shape)}: rank {rank} expected")
    z = _param(cx, zi, "zero point", w.shape[axis])
    if z is not None:
        w = w - z.reshape((-1,) + (1,) * (rank - 1 - axis % rank)) if z.ndim else w - z
    return w


def _exact_sum(
    cx: NodeContext,
    prod: Any,
    a: Tensor,
    a_bound: float,
    w: np.ndarray,
    col_abs: Any,
    bias: np.ndarray | None,
    shape_w: Any,
) -> Tensor:
    """prod(a, W) + bias with every whole-number sum exact in float32 (module docstring):
    ``col_abs(|W|)`` gives sum |W| per output channel, ``shape_w`` makes W a constant."""
    extra = np.abs(bias) if bias is not None else 0.0
    bound = float(np.max(a_bound * col_abs(np.abs(w)) + extra))

    def with_bias(y: Tensor) -> Tensor:
        return y if bias is None else y + _const(cx, shape_w(bias), "bias")

    if bound < EXACT:
        return with_bias(prod(a, _const(cx, w, "centred_w", True)))
    lo = np.mod(w, 16.0)
    hi = (w - lo) / 16.0
    b_hi = float(np.max(a_bound * col_abs(np.abs(hi))))
    b_lo = float(np.max(a_bound * col_abs(lo) + extra))
    if max(b_hi, b_lo) >= EXACT:
        cx.fail(
            f"the integer accumulation can reach {bound:.0f} (inputs up to {a_bound:.0f} in "
            f"magnitude, weights {_fmt(w.shape)}), past what graphc sums exactly in float32 "
            "(2**24, or 2**28 split in two)"
        )
    s_hi = prod(a, _const(cx, hi, "centred_w_hi", True))
    s_lo = with_bias(prod(a, _const(cx, lo, "centred_w_lo", True)))
    return s_hi * 16.0 + s_lo  # one correctly rounded float32 addition of two exact values


def _requantize(
    cx: NodeContext, acc: Tensor, m: np.ndarray, zp: Any, t: int, shape_m: Any
) -> Tensor:
    """clamp(rne(acc * m) + zp): m the float32 multiplier (scalar or per channel)."""
    if m.size > 1:
        m_t = _const(cx, shape_m(m), "multiplier")
        zp = shape_m(zp) if isinstance(zp, np.ndarray) and zp.size > 1 else zp
    else:
        m_t = dsl.const(float(m.reshape(-1)[0]))
    return saturate(cx, rne(acc * m_t), zp, t)


# ---------------------------------------------------------------- matrix products


def _matmul_core(
    cx: NodeContext, ia: int, iza: int, ib: int, izb: int, a_given: tuple | None = None
) -> tuple[Tensor, int]:
    """(a - za) @ (b - zb) exact (see module docstring) and the number of columns; b constant
    (per-column zero point allowed) or computed (scalar zero point); ``a_given``: the centred
    a and its bound, instead of operands ia and iza. A 1-D a is a row [1, K] and a 1-D b a
    column [K, 1] whose axis the result drops (numpy's matmul, as the MatMul rule)."""
    a, a_bound = a_given or _centred_input(cx, ia, iza)
    row = len(a.shape) == 1
    if row:
        a = _reshape(cx, a, (1, a.shape[0]))
    vb = cx.value(ib)
    if isinstance(vb, Tensor):
        b, b_bound = _centred_input(cx, ib, izb)
        col = len(b.shape) == 1
        if col:
            b = _reshape(cx, b, (b.shape[0], 1))
        k = int(a.shape[-1])
        if a_bound * b_bound * k < EXACT:
            y = dsl.matmul(a, b)
        # split b = 16 hi + lo at run time (hi = floor(b / 16), lo in 0..15), as the
        # constant weights in _exact_sum: two exact products, added once
        elif a_bound * max(np.ceil(b_bound / 16.0), 15.0) * k >= EXACT:
            cx.fail(
                f"two computed operands with K={k}: their integer accumulation can reach "
                f"{a_bound * b_bound * k:.0f}, past what graphc sums exactly in float32 "
                "(2**24, or about 2**28 split in two)"
            )
        else:
            hi = _integral_part(cx, b * 0.0625, -1)
            lo = b - hi * 16.0
            y = dsl.matmul(a, hi) * 16.0 + dsl.matmul(a, lo)
        n = int(b.shape[-1])
    else:
        rank = np.asarray(vb).ndim
        col = rank == 1
        if col:  # a column, its zero point a scalar
            zb = _param(cx, izb, "zero point")
            w = np.asarray(cx.c(ib)).astype(np.float64).reshape(-1, 1) - (zb or 0.0)
        else:
            w = _centred_weight(cx, ib, izb, rank - 1, rank)  # per column: B's last axis
        y = _exact_sum(
            cx, lambda x, c: dsl.matmul(x, c), a, a_bound, w,
            lambda m: m.sum(axis=-2), None, lambda v: v,
        )  # fmt: skip
        n = w.shape[-1]
    if col or row:
        shape = tuple(y.shape)
        keep = [d for j, d in enumerate(shape) if not (col and j == len(shape) - 1)]
        if row:
            del keep[len(shape) - 2]
        y = _reshape(cx, y, tuple(keep))
    return y, n


def _matmul_integer(cx: NodeContext) -> list[Value]:
    """MatMulInteger: (A - a_zero_point) @ (B - b_zero_point) as int32, held as float32: exact
    within 2**24, beyond it the correctly rounded float32 (what a Cast to float of ONNX
    Runtime's int32 gives)."""
    y, _ = _matmul_core(cx, 0, 2, 1, 3)
    return [_mask(cx, y)]


def _qlinear_matmul(cx: NodeContext) -> list[Value]:
    """QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): clamp(rne(acc *
    (a_scale * b_scale[j]) / y_scale) + y_zp) with acc the exact (a - a_zp) @ (b - b_zp);
    b_scale / b_zp per column of a constant B allowed."""
    acc, n = _matmul_core(cx, 0, 2, 3, 5)
    sa = _scale(cx, 1, "a_scale")
    sb = _scale(cx, 4, "b_scale", n)
    sy = _scale(cx, 6, "y_scale")
    m = (sa * sb) / sy
    zy = _param(cx, 7, "y_zero_point")
    return [_requantize(cx, acc, m, zy, _type_of(cx, 7), lambda v: v)]


def _qgemm(cx: NodeContext) -> list[Value]:
    """QGemm (com.microsoft; ONNX Runtime's quantizer writes it for Gemm): A, a_scale, a_zp,
    B, b_scale, b_zp, C (int32 bias in units of a_scale * b_scale), y_scale, y_zp; alpha,
    transA, transB. acc = (A - a_zp) @ (B - b_zp) + C exact; with y_scale: clamp(rne(acc *
    (alpha * a_scale * b_scale[j]) / y_scale) + y_zp), else the float32 acc * alpha * a_scale
    * b_scale[j]."""
    if int(cx.attr("transA", 0)):
        cx.fail("attribute transA=1 is not supported")
    a, a_bound = _centred_input(cx, 0, 2)
    if len(a.shape) != 2:
        cx.fail(f"A of shape {_fmt(a.shape)}: QGemm takes a 2-D A")
    w = np.asarray(cx.c(3))
    trans_b = bool(cx.attr("transB", 0))
    if w.ndim != 2:
        cx.fail(f"B of shape {list(w.shape)}: QGemm takes a 2-D B")
    n = w.shape[0] if trans_b else w.shape[1]
    wc = _centred_weight(cx, 3, 5, 0 if trans_b else 1, 2)
    if trans_b:
        wc = wc.T
    bias = None
    if cx.has(6):
        bias = np.asarray(cx.c(6)).astype(np.float64).reshape(-1)
        if bias.size == 1:
            bias = np.full(n, bias[0])
        if bias.size != n:
            cx.fail(f"C of {bias.size} elements: QGemm takes one per column ({n})")
    acc = _exact_sum(
        cx, lambda x, c: dsl.matmul(x, c), a, a_bound, wc,
        lambda m: m.sum(axis=0), bias, lambda v: v,
    )  # fmt: skip
    alpha = np.float32(cx.attr("alpha", 1.0))
    sa = _scale(cx, 1, "a_scale")
    sb = _scale(cx, 4, "b_scale", n)
    if not cx.has(7):
        return [acc * _const(cx, (alpha * sa) * sb, "scale")]
    sy = _scale(cx, 7, "y_scale")
    m = ((alpha * sa) * sb) / sy
    return [_requantize(cx, acc, m, _param(cx, 8, "y_zero_point"), _type_of(cx, 8), lambda v: v)]


# ---------------------------------------------------------------- convolutions


def _conv_core(cx: NodeContext, ix: int, izx: int, iw: int, izw: int, ib: int | None):
    """(x - zx) conv (W - zw) (+ bias) exact; padding adds zx (the centred zero), as the
    spec's QLinearConv / ConvInteger. Returns (acc, output channels)."""
    x, a_bound = _centred_input(cx, ix, izx)
    w = np.asarray(cx.c(iw))
    if w.ndim < 3:
        cx.fail(f"weights of shape {list(w.shape)}: [M, C/group, k1, ...] expected")
    wc = _centred_weight(cx, iw, izw, 0, w.ndim)
    m = wc.shape[0]
    bias = None
    if ib is not None and cx.has(ib):
        bias = np.asarray(cx.c(ib)).astype(np.float64).reshape(-1)
        if bias.size != m:
            cx.fail(f"bias of {bias.size} elements: one per output channel ({m}) expected")
    attrs = _conv_attrs(cx, x, SimpleNamespace(shape=wc.shape), False)  # type: ignore[arg-type]
    spatial = (1,) * (len(x.shape) - 2)

    def conv(v: Tensor, c: Tensor) -> Tensor:
        return dsl.apply("conv", v, c, **attrs)

    acc = _exact_sum(
        cx, conv, x, a_bound, wc,
        lambda a: a.reshape(m, -1).sum(axis=1), bias, lambda v: np.reshape(v, (m, *spatial)),
    )  # fmt: skip
    return acc, m, spatial


def _conv_integer(cx: NodeContext) -> list[Value]:
    """ConvInteger: (x - x_zero_point) conv (w - w_zero_point) as int32, held as float32
    (exact; see _matmul_integer)."""
    acc, _, _ = _conv_core(cx, 0, 2, 1, 3, None)
    return [_mask(cx, acc)]


def _qlinear_conv(cx: NodeContext) -> list[Value]:
    """QLinearConv (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B int32): clamp(rne((acc
    + B) * (x_scale * w_scale[m]) / y_scale) + y_zp), per output channel m."""
    acc, m, spatial = _conv_core(cx, 0, 2, 3, 5, 8)
    sx = _scale(cx, 1, "x_scale")
    sw = _scale(cx, 4, "w_scale", m)
    sy = _scale(cx, 6, "y_scale")
    mult = (sx * sw) / sy
    zy = _param(cx, 7, "y_zero_point")
    return [_requantize(cx, acc, mult, zy, _type_of(cx, 7), lambda v: np.reshape(v, (m, *spatial)))]


# ---------------------------------------------------------------- element-wise and pools


def _dequantized(cx: NodeContext, i: int, si: int, zi: int) -> Tensor:
    """(x - zp) * scale in float32 (scalar scale and zero point)."""
    x, _ = _centred_input(cx, i, zi)
    return x * dsl.const(float(_scale(cx, si, "scale")))


def _quantized(cx: NodeContext, v: Tensor, si: int, zi: int) -> Tensor:
    """clamp(rne(v / scale) + zp) (QuantizeLinear's rule) with scalar scale and zero point."""
    s = float(_scale(cx, si, "y_scale"))
    return saturate(cx, rne(v / s), _param(cx, zi, "y_zero_point"), _type_of(cx, zi))


def _qlinear_add(cx: NodeContext) -> list[Value]:
    """QLinearAdd (com.microsoft): A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp (numpy
    broadcasting); as ONNX Runtime's MLAS: clamp(rne((A_scale / C_scale) * (A - A_zp) +
    (B_scale / C_scale) * (B - B_zp)) + C_zp), each step in float32."""
    sc = _scale(cx, 6, "C_scale")
    a, _ = _centred_input(cx, 0, 2)
    b, _ = _centred_input(cx, 3, 5)
    ra = float(_scale(cx, 1, "A_scale") / sc)
    rb = float(_scale(cx, 4, "B_scale") / sc)
    v = a * dsl.const(ra) + b * dsl.const(rb)
    return [saturate(cx, rne(v), _param(cx, 7, "C_zero_point"), _type_of(cx, 7))]


def _qlinear_mul(cx: NodeContext) -> list[Value]:
    """QLinearMul (com.microsoft): clamp(rne((A - A_zp) * (B - B_zp) * (A_scale * B_scale /
    C_scale)) + C_zp), the product of whole numbers exact (|.| <= 65025)."""
    sc = _scale(cx, 6, "C_scale")
    a, _ = _centred_input(cx, 0, 2)
    b, _ = _centred_input(cx, 3, 5)
    m = float((_scale(cx, 1, "A_scale") * _scale(cx, 4, "B_scale")) / sc)
    v = (a * b) * dsl.const(m)
    return [saturate(cx, rne(v), _param(cx, 7, "C_zero_point"), _type_of(cx, 7))]


def _qlinear_unary(kind: str) -> Any:
    """QLinearSigmoid / QLinearLeakyRelu (com.microsoft): X, X_scale, X_zp, Y_scale, Y_zp:
    quantize(f(dequantize(X))) (ONNX Runtime tabulates the 256 values the same way)."""

    def rule(cx: NodeContext) -> list[Value]:
        x = _dequantized(cx, 0, 1, 2)
        if kind == "sigmoid":
            y = dsl.sigmoid(x)
        else:
            alpha = float(np.float32(cx.attr("alpha", 0.01)))
            y = dsl.apply("where", dsl.apply("greater", dsl.const(0.0), x), x * alpha, x)
        return [_quantized(cx, y, 3, 4)]

    return rule


def _qlinear_global_average_pool(cx: NodeContext) -> list[Value]:
    """QLinearGlobalAveragePool (com.microsoft; channels_last 0 or 1): as ONNX Runtime's MLAS,
    clamp(rne(sum(x - x_zp) * (x_scale / (y_scale * size))) + y_zp) over each channel's
    ``size`` positions, the sum exact (size * 255 < 2**24), or past that (large images)
    summed as 16 * sum(hi) + sum(lo) of x - x_zp = 16 hi + lo, the correctly rounded float32
    of the int32 sum that ORT converts (size < 2**20)."""
    x, a_bound = _centred_input(cx, 0, 2)
    last = int(cx.attr("channels_last", 0))
    r = len(x.shape)
    if r < 3 or "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: [N, C, D1, ...] expected")
    axes = tuple(range(1, r - 1)) if last else tuple(range(2, r))
    size = int(np.prod([int(x.shape[a]) for a in axes]))
    if size * a_bound < EXACT:
        s = dsl.sum(x, axes, keepdims=True)
    elif size * 16 < EXACT:
        hi = _integral_part(cx, x * 0.0625, -1)
        s_hi = dsl.sum(hi, axes, keepdims=True)
        s = s_hi * 16.0 + dsl.sum(x - hi * 16.0, axes, keepdims=True)
    else:
        cx.fail(f"{size} positions per channel: the sum can pass what float32 holds exactly")
    m = _scale(cx, 1, "x_scale") / (_scale(cx, 3, "y_scale") * np.float32(size))
    return [saturate(cx, rne(s * float(m)), _param(cx, 4, "y_zero_point"), _type_of(cx, 4))]


def _qlinear_average_pool(cx: NodeContext) -> list[Value]:
    """QLinearAveragePool (com.microsoft; channels_last=0): AveragePool's attributes, as ONNX
    Runtime's kernel computes it in float32: the dequantized x_scale * (X - X_zp) summed over
    each window in row-major order, divided by the count, then clamp(rne(v / Y_scale +
    Y_zp)) (the zero point added before rounding). The count is AveragePool's with
    count_include_pad=0 (the window's elements inside the input); with count_include_pad=1 it
    is the kernel's size everywhere, as ONNX Runtime's kernel divides, also for the windows
    that ceil_mode lets run past the end pad, where the float AveragePool counts only the
    positions inside input and pads (so the two differ there: a 2x2 window holding one
    element of the input is that element / 4 here, the element itself in AveragePool)."""
    if int(cx.attr("channels_last", 0)):
        cx.fail("attribute channels_last=1 is not supported")
    x = _dequantized(cx, 0, 1, 2)
    acc, count = _pool("sum")(_Given(cx, {0: x}))
    assert isinstance(acc, Tensor) and isinstance(count, np.ndarray)
    if int(cx.attr("count_include_pad", 0)):
        kernel = [int(v) for v in cx.attr("kernel_shape", [])]
        count = np.full(count.shape, float(np.prod(kernel)), np.float32)
    y = acc / _const(cx, count.reshape(count.shape), "pool_count")
    v = y / float(_scale(cx, 3, "Y_scale"))
    zp = _param(cx, 4, "Y_zero_point")
    if zp is not None and float(zp):
        v = v + float(zp)
    return [saturate(cx, rne(v), None, _type_of(cx, 4))]


def _qlinear_concat(cx: NodeContext) -> list[Value]:
    """QLinearConcat (com.microsoft): Y_scale, Y_zp, then (X, X_scale, X_zp) per input; each
    input requantized to Y's scale (clamp(rne((X - X_zp) * X_scale / Y_scale) + Y_zp); an
    input with Y's scale and zero point is copied) and the results joined along ``axis``."""
    from .onnx_import import _concat

    if cx.n_inputs < 5 or (cx.n_inputs - 2) % 3:
        cx.fail(f"{cx.n_inputs} inputs: Y_scale, Y_zero_point, then (X, scale, zp) triples")
    sy = _scale(cx, 0, "Y_scale")
    zy = _param(cx, 1, "Y_zero_point")
    t = _type_of(cx, 1)
    parts = {}
    for k in range((cx.n_inputs - 2) // 3):
        i = 2 + 3 * k
        sx = _scale(cx, i + 1, "X_scale")
        zx = _param(cx, i + 2, "X_zero_point")
        if sx == sy and (0.0 if zx is None else zx) == (0.0 if zy is None else zy):
            parts[k] = cx.x(i)
        else:
            x, _ = _centred_input(cx, i, i + 2)
            parts[k] = saturate(cx, rne((x * float(sx)) / float(sy)), zy, t)

    class _Parts(_Given):
        @property
        def n_inputs(self) -> int:
            return len(parts)

        def has(self, i: int) -> bool:
            return i < len(parts)

        def value(self, i: int) -> Value:
            return parts[i]

    return _concat(_Parts(cx, parts))


def _qlinear_softmax(cx: NodeContext) -> list[Value]:
    """QLinearSoftmax (com.microsoft; uint8 or int8) as ONNX Runtime's kernel computes it, which is
    not the dequantize -> Softmax -> quantize of its QDQ form: a table t[i] = float32(exp((i -
    255 + s) * x_scale)) (double arithmetic, s = max(0, log(FLT_MAX / D) - 5) / x_scale
    keeping the sum below FLT_MAX) indexed by x - max(x) + 255, the float32 sum of the row's
    values v, then min(rne(v * floor(1 / y_scale) / sum) + y_zp, 255) (the zero point added
    after rounding; ``axis`` from opset 13, the last axis before); int8 the same (x - max(x)
    indexes the same table), saturated at 127 (ONNX Runtime 1.32; older releases wrapped 128
    to -128). D (the axis' length) must
    be fixed; the table lookup is exact (a one-hot product); the sum runs in graphc's order,
    which may differ from ONNX Runtime's sequential one by an ulp (an output then moves by
    one where it lies at a rounding boundary)."""
    x = cx.x(0)
    t = _type_of(cx, 4)
    if _type_of(cx, 2) != t:
        cx.fail("X and Y of different element types (uint8 / int8)")
    shape = tuple(x.shape)
    r = len(shape)
    opset = int(cx.attr("opset", 13))
    axis = int(cx.attr("axis", -1 if opset >= 13 else 1))
    axis = axis + r if axis < 0 else axis
    if not 0 <= axis < r or "N" in shape[axis:]:
        cx.fail(f"axis {axis} of {_fmt(shape)}: softmax over the batch dimension N or outside")
    if opset < 13 and axis < r - 1:  # before opset 13: over every axis from axis on, as one
        x = _reshape(cx, x, (*shape[:axis], int(np.prod([int(v) for v in shape[axis:]]))))
        r, axis = axis + 1, axis
    d = x.shape[axis]
    xs = float(_scale(cx, 1, "X_scale"))
    bits = float(np.log(np.float32(np.finfo(np.float32).max) / np.float32(d)))
    shift = max(0.0, bits - 5.0) / xs
    table = np.exp((np.arange(256, dtype=np.float64) - 255.0 + shift) * xs).astype(np.float32)
    top = dsl.apply("max", x, axes=(axis,), keepdims=True)
    idx = _reshape(cx, x - top + 255.0, (*x.shape, 1))
    onehot = dsl.apply("equal", idx, _const(cx, np.arange(256, dtype=np.float32), "idx", True))
    v = dsl.sum(onehot * _const(cx, table, "softmax_table", True), r)  # one table value each
    total = dsl.sum(v, (axis,), keepdims=True)
    y_scale = float(np.floor(np.float32(1.0) / _scale(cx, 3, "Y_scale")))
    q = rne((v * y_scale) / total)
    zp = _param(cx, 4, "Y_zero_point")
    if zp is not None and float(zp):
        q = q + float(zp)
    q = _minimum(q, dsl.const(255.0 if t == 2 else 127.0))
    if tuple(q.shape) != shape:
        q = _reshape(cx, q, shape)
    return [_mask(cx, dsl.apply("cast", q, dtype="f32"))]


# ---------------------------------------------------------------- dynamic quantization


def _dynamic_quantize_linear(cx: NodeContext) -> list[Value]:
    """DynamicQuantizeLinear: uint8 y, scale and zero point of the whole tensor x (the batch
    included, as ONNX Runtime computes it): lo = min(min(x), 0), hi = max(max(x), 0), scale =
    (hi - lo) / 255 (1 where hi == lo, as ONNX Runtime; the spec divides by 0 there), zero
    point rne(clamp(0 - lo / scale, 0, 255)), y = clamp(rne(x / scale) + zp, 0, 255), in
    float32."""
    return list(_dynamic_quantize(cx, cx.x(0)))


def _dynamic_quantize(cx: NodeContext, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """DynamicQuantizeLinear's (y, scale, zero point) of x."""
    zero = dsl.const(0.0)
    lo = _minimum(dsl.apply("min", x, axes=None), zero)
    hi = dsl.maximum(dsl.apply("max", x, axes=None), zero)
    d = hi - lo
    scale = dsl.apply("where", dsl.apply("greater", d, zero), d / 255.0, dsl.const(1.0))
    zp = rne(_minimum(dsl.maximum(zero - lo / scale, zero), dsl.const(255.0)))
    zp = _mask(cx, dsl.apply("cast", zp, dtype="f32"))
    y = saturate(cx, rne(x / scale), zp, 2)
    return y, scale, zp


def _scaled_float_output(
    cx: NodeContext, acc: Tensor, a_scale: Value, sb: np.ndarray, ib: int
) -> Tensor:
    """acc * (a_scale * b_scale[j]) (+ bias, operand ``ib``) in float32, as ONNX Runtime's
    float output of an integer product (the scale product first); a_scale computed or
    constant."""
    n = int(acc.shape[-1])
    if isinstance(a_scale, Tensor):
        a_scale = a_scale if not a_scale.shape else _reshape(cx, a_scale, ())
        y = acc * (a_scale * _const(cx, sb, "b_scale"))
    else:
        y = acc * _const(cx, _scale(cx, 2, "a_scale") * sb, "scale")
    if cx.has(ib):
        bias = np.asarray(cx.c(ib), dtype=np.float32).reshape(-1)
        if bias.size != n:
            cx.fail(f"bias of {bias.size} elements: one per column ({n}) expected")
        y = y + _const(cx, bias, "bias", True)
    return y


def _matmul_integer_to_float(cx: NodeContext) -> list[Value]:
    """MatMulIntegerToFloat (com.microsoft; ONNX Runtime's fusion of MatMulInteger, Cast and
    Mul): A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias: the exact (A - a_zp) @ (B
    - b_zp) times a_scale * b_scale[j] (+ bias), float32."""
    acc, n = _matmul_core(cx, 0, 4, 1, 5)
    return [_scaled_float_output(cx, acc, cx.value(2), _scale(cx, 3, "b_scale", n), 6)]


def _dynamic_quantize_matmul(cx: NodeContext) -> list[Value]:
    """DynamicQuantizeMatMul (com.microsoft): A (float) quantized as DynamicQuantizeLinear
    does (uint8, the whole tensor's range), B (8-bit constant), b_scale, b_zero_point, bias:
    the exact integer product times a_scale * b_scale[j] (+ bias), float32."""
    y, a_scale, zp = _dynamic_quantize(cx, cx.x(0))
    acc, n = _matmul_core(cx, -1, -1, 1, 3, a_given=(y - zp, 255.0))
    return [_scaled_float_output(cx, acc, a_scale, _scale(cx, 2, "b_scale", n), 4)]


QUANT_OPS: dict[str, Rule] = {
    "QLinearMatMul": Rule(_qlinear_matmul),
    "MatMulInteger": Rule(_matmul_integer),
    "QLinearConv": Rule(
        _qlinear_conv, ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
    ),
    "ConvInteger": Rule(
        _conv_integer, ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
    ),
    "DynamicQuantizeLinear": Rule(_dynamic_quantize_linear),
    **{
        f"com.microsoft:{op}": Rule(f, attrs, domain="com.microsoft")
        for op, f, attrs in (
            ("QGemm", _qgemm, ("alpha", "transA", "transB")),
            ("QLinearAdd", _qlinear_add, ()),
            ("QLinearMul", _qlinear_mul, ()),
            ("QLinearSigmoid", _qlinear_unary("sigmoid"), ()),
            ("QLinearLeakyRelu", _qlinear_unary("leaky_relu"), ("alpha",)),
            ("QLinearGlobalAveragePool", _qlinear_global_average_pool, ("channels_last",)),
            (
                "QLinearAveragePool",
                _qlinear_average_pool,
                (
                    "kernel_shape",
                    "strides",
                    "pads",
                    "ceil_mode",
                    "auto_pad",
                    "count_include_pad",
                    "channels_last",
                ),
            ),
            ("QLinearConcat", _qlinear_concat, ("axis",)),
            ("QLinearSoftmax", _qlinear_softmax, ("axis", "opset")),
            ("MatMulIntegerToFloat", _matmul_integer_to_float, ()),
            ("DynamicQuantizeMatMul", _dynamic_quantize_matmul, ()),
        )
    },
}


def blocked_array(cx: NodeContext, a: np.ndarray, x_shape: tuple, block: int) -> np.ndarray:
    """A blocked scale or zero point (QuantizeLinear / DequantizeLinear with ``block_size``,
    opset 21) expanded to x's shape: ``a`` has x's shape but for ``axis`` (default 1), of
    ceil(D / block) elements, each repeated ``block`` times along it (the last block cut at
    D). The spec's accepted sizes: ceil(D / S) <= block <= ceil(D / (S - 1)) - 1."""
    rank = len(x_shape)
    axis = _axis(cx, int(cx.attr("axis", 1)), rank)
    d = x_shape[axis]
    want = (
        tuple(x_shape[:axis])
        + (-(-int(d) // block) if d != "N" else "N",)
        + tuple(x_shape[axis + 1 :])
    )
    if d == "N" or a.ndim != rank or tuple(a.shape) != want:
        cx.fail(
            f"blocked scale or zero point of shape {list(a.shape)} for input {_fmt(x_shape)}, "
            f"axis {axis}, block_size {block}: graphc takes {_fmt(want)} without the batch "
            "dimension N"
        )
    return np.repeat(a, block, axis=axis)[(slice(None),) * axis + (slice(0, int(d)),)]


def blocked_param(cx: NodeContext, i: int, x_shape: tuple, what: str) -> Tensor:
    """Operand ``i`` of a blocked QuantizeLinear / DequantizeLinear (``block_size``) as a
    constant of x's shape (blocked_array); it must be known at import time."""
    block = int(cx.attr("block_size", 0))
    if block < 1:
        cx.fail(f"block_size {block} must be >= 1")
    if any(d == "N" for d in x_shape):
        cx.fail(f"blocked quantization of {_fmt(x_shape)}: graphc takes inputs without N")
    a = blocked_array(cx, np.asarray(cx.c(i), dtype=np.float64), x_shape, block)
    return _const(cx, a, f"blocked_{what}", True)


def reads_quantized(node: Any) -> bool:
    """Whether ``node`` reads its integer operands as quantized 8-bit values (a
    DequantizeLinear or an operator of QUANT_OPS): an integer graph input may feed it, its
    whole numbers held exactly in float32."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    key = node.op_type if domain == "" else f"{domain}:{node.op_type}"
    return key == "DequantizeLinear" or key in QUANT_OPS


def _contrib_schema(inputs: tuple[int, int], attrs: dict[str, int]) -> Any:
    """An onnx OpSchema's fields that Importer.convert checks, for a com.microsoft operator
    (onnx has no schema of them): input counts, one output, attribute types (AttributeProto:
    FLOAT 1, INT 2, STRING 3, INTS 7), as ONNX Runtime's contrib operator definitions."""
    return SimpleNamespace(
        since_version=1,
        min_input=inputs[0],
        max_input=inputs[1],
        min_output=1,
        max_output=1,
        attributes={k: SimpleNamespace(type=t) for k, t in attrs.items()},
    )


_POOL_ATTRS = {
    "kernel_shape": 7, "strides": 7, "pads": 7, "ceil_mode": 2, "auto_pad": 3,
    "count_include_pad": 2, "channels_last": 2,
}  # fmt: skip
CONTRIB_SCHEMAS = {
    "com.microsoft:QGemm": _contrib_schema((6, 9), {"alpha": 1, "transA": 2, "transB": 2}),
    "com.microsoft:QLinearAdd": _contrib_schema((7, 8), {}),
    "com.microsoft:QLinearMul": _contrib_schema((7, 8), {}),
    "com.microsoft:QLinearSigmoid": _contrib_schema((4, 5), {}),
    "com.microsoft:QLinearLeakyRelu": _contrib_schema((4, 5), {"alpha": 1}),
    "com.microsoft:QLinearGlobalAveragePool": _contrib_schema((4, 5), {"channels_last": 2}),
    "com.microsoft:QLinearAveragePool": _contrib_schema((4, 5), _POOL_ATTRS),
    "com.microsoft:QLinearConcat": _contrib_schema((5, 2**31 - 1), {"axis": 2}),
    "com.microsoft:MatMulIntegerToFloat": _contrib_schema((4, 7), {}),
    "com.microsoft:QLinearSoftmax": _contrib_schema((4, 5), {"axis": 2, "opset": 2}),
    "com.microsoft:DynamicQuantizeMatMul": _contrib_schema((3, 5), {}),
}


# ---------------------------------------------------------------- QDQ models as ONNX Runtime runs them


def qdq_as_qoperator(model: Any) -> Any:
    """See ``_qdq_as_qoperator``; a model it cannot read is returned as it is (the checks after
    it name what is wrong)."""
    try:
        return _qdq_as_qoperator(model)
    except Exception:  # a hostile or malformed file: the import's own checks report it
        return model


_POOL_COPIED = ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad", "count_include_pad")


def _qdq_as_qoperator(model: Any) -> Any:
    """The model with each QDQ node group that ONNX Runtime's default graph optimizations fuse
    into an integer kernel written as that kernel, so that graphc computes what an ORT session
    (ORT_ENABLE_BASIC and above, the default) computes: Q(op(DQ(x), DQ(w)[, DQ(bias)])) for op
    Conv -> QLinearConv, MatMul -> QLinearMatMul, Gemm -> QGemm, Add / Mul -> QLinearAdd /
    QLinearMul, AveragePool / GlobalAveragePool -> QLinearAveragePool /
    QLinearGlobalAveragePool, Softmax -> QLinearSoftmax (whose table arithmetic differs from
    the float Softmax by more than rounding). The float definition (ORT with its optimizations off) rounds the
    float sums instead of the exact integer ones, which moves an output by one quantization
    step where a value lies near a rounding boundary. The other QDQ groups (MaxPool, Relu,
    Sigmoid, LeakyRelu, Concat, reshapes) compute the same as their kernels in float and stay.

    A group is fused when (ONNX Runtime's selectors, for uint8 activations): the op's output
    feeds only the QuantizeLinear (not a graph output); every DequantizeLinear /
    QuantizeLinear is standard, 8-bit, has a zero point, and scales and zero points that are
    initializers (per tensor; per output channel / column, along the DQ's axis, for the
    weights of Conv, MatMul and Gemm and for an int32 bias); the weights of Conv and Gemm are
    initializers; the activations in and out are uint8. Groups with int8 activations keep
    the float definition: ONNX Runtime's handling of them depends on the CPU (on x86 it
    rewrites some to uint8, QDQS8ToU8Transformer, and fuses others), so graphc does not
    follow it. The QuantizeLinear node is replaced in place (node
    numbers stay); the nodes it read become unused. The caller's ModelProto is not changed."""
    onnx = require_onnx()
    g = model.graph
    nodes = list(g.node)
    if not any(n.op_type == "QuantizeLinear" for n in nodes):
        return model
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in nodes for o in n.output if o}
    outputs = {o.name for o in g.output}
    uses: dict[str, int] = {}
    for n in nodes:
        for v in n.input:
            uses[v] = uses.get(v, 0) + 1

    folded: dict[str, np.ndarray] = {}  # QuantizeLinear of constants, computed here

    def attrs(n: Any) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    def init(name: str, depth: int = 0) -> np.ndarray | None:
        """The value of an initializer, a Constant or a folded QuantizeLinear, or of a Cast,
        Identity or ConstantOfShape of such (torch's exports write zero points so), else
        None."""
        if name in folded:
            return folded[name]
        t = inits.get(name)
        n = producer.get(name)
        if t is None and n is not None and not n.domain and depth < 8:
            a = attrs(n)
            if n.op_type == "Constant":
                t = a.get("value")
            elif n.op_type in ("Cast", "Identity") and n.input:
                v = init(n.input[0], depth + 1)
                if v is None or n.op_type == "Identity":
                    return v
                return v.astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
            elif n.op_type == "ConstantOfShape" and n.input:
                shape = init(n.input[0], depth + 1)
                value = a.get("value")
                fill = (
                    np.zeros(1, np.float32) if value is None else onnx.numpy_helper.to_array(value)
                )
                return (
                    None if shape is None else np.full([int(d) for d in shape], fill.reshape(-1)[0])
                )
        if t is None or not hasattr(t, "data_location"):
            return None
        if t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return np.asarray(onnx.numpy_helper.to_array(t))

    # QuantizeLinear of a constant float tensor (the weights of a quantization-aware training
    # export: Q(W) -> DQ) folded first, as ONNX Runtime's constant folding does before it
    # fuses: rne(W / scale) + zero_point, saturated, in float32 (its kernel's arithmetic)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    found: list[tuple[int, Any]] = []
    for i, q in enumerate(nodes):
        if q.op_type != "QuantizeLinear" or q.domain or len(q.input) != 3 or not q.input[2]:
            continue
        w, s, z = (init(v) for v in q.input)
        if w is None or s is None or z is None or w.dtype != np.float32 or z.dtype not in _NP_TYPE:
            continue
        a = attrs(q)
        if set(a) - {"axis"} or s.size != z.size or w.ndim == 0:
            continue
        shape = [1] * w.ndim
        if s.size > 1:
            axis = int(a.get("axis", 1)) % w.ndim
            if s.ndim != 1 or s.size != w.shape[axis]:
                continue
            shape[axis] = s.size
        lo, hi = _QUANT_RANGE[_NP_TYPE[z.dtype]]
        r = np.rint(w / s.astype(np.float32).reshape(shape)) + z.reshape(shape)
        folded[q.output[0]] = np.clip(r, lo, hi).astype(z.dtype)
        c = onnx.helper.make_node(
            "Constant",
            [],
            [q.output[0]],
            name=q.name,
            value=onnx.numpy_helper.from_array(folded[q.output[0]]),
        )
        found.append((i, c))

    def qparams(n: Any, axis: int | None = None) -> tuple | None:
        """(input, scale, zero point, zero point dtype) of a standard 8-bit DQ / Q node, per
        tensor or (``axis`` given) per index of that axis of a constant input."""
        if n is None or n.domain not in ("", "ai.onnx") or len(n.input) != 3:
            return None
        a = attrs(n)
        if set(a) - {"axis"} or not n.input[2]:
            return None
        s, z = init(n.input[1]), init(n.input[2])
        bias = z is not None and z.dtype == np.int32 and axis is not None
        if (s is None or z is None or z.dtype not in _NP_TYPE or s.size != z.size) and not bias:
            return None
        assert s is not None
        if s.size != 1:
            x = init(n.input[0])
            if axis is None or x is None or s.ndim != 1:
                return None
            if int(a.get("axis", 1)) % x.ndim != axis % x.ndim or s.size != x.shape[axis]:
                return None
        return n.input[0], n.input[1], n.input[2], z.dtype

    def dq(name: str, axis: int | None = None) -> tuple | None:
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear":
            return None
        return qparams(n, axis)

    def weight_axis(op: Any, k: int) -> int | None:
        """The axis of op's input k along which a per-channel DQ may vary (its output
        channels / columns), None where only per-tensor is fused."""
        if k == 2:
            return 0  # the bias, one per channel
        if k != 1:
            return None
        if op.op_type == "Conv":
            return 0
        if op.op_type == "Gemm":
            return 0 if attrs(op).get("transB", 0) else 1
        return -1 if op.op_type == "MatMul" else None

    for i, q in enumerate(nodes):
        if q.op_type != "QuantizeLinear" or not q.input or q.output[0] in folded:
            continue
        yq = qparams(q)
        op = producer.get(q.input[0])
        if yq is None or op is None or op.domain not in ("", "ai.onnx"):
            continue
        if op.op_type == "Relu" and not init(yq[2]).any():  # type: ignore[union-attr]
            # a Relu before a uint8 Q of zero point 0 changes nothing (Q clamps at 0):
            # ONNX Runtime removes it (ReluQuantFusion) and fuses the op before
            if uses.get(op.output[0], 0) != 1 or op.output[0] in outputs:
                continue
            op = producer.get(op.input[0])
            if op is None or op.domain not in ("", "ai.onnx"):
                continue
        if uses.get(op.output[0], 0) != 1 or op.output[0] in outputs or len(op.output) != 1:
            continue
        ins = [dq(v, weight_axis(op, k)) if v else None for k, v in enumerate(op.input)]
        # uint8 activations only: ONNX Runtime's fusion of int8 ones depends on the CPU (its
        # QDQS8ToU8Transformer and int8 kernels are platform choices)
        if not ins or ins[0] is None or ins[0][3] != yq[3] or yq[3] != np.uint8:
            continue
        a = attrs(op)
        x = list(ins[0][:3])
        y = list(yq[1:3])
        new = None
        if op.op_type in ("Conv", "MatMul", "Gemm") and len(ins) >= 2 and ins[1] is not None:
            w = list(ins[1][:3])
            const_w = init(w[0]) is not None
            bias = ins[2] if len(ins) > 2 else None
            if len(op.input) > 2 and op.input[2] and (bias is None or init(bias[0]) is None):
                continue
            if bias is not None and bias[3] != np.int32:
                continue
            if ins[1][3] == np.int32:
                continue
            b = [bias[0]] if bias is not None else []
            if op.op_type == "Conv" and const_w:
                new = onnx.helper.make_node("QLinearConv", x + w + y + b, list(q.output), **a)
            elif op.op_type == "MatMul":
                new = onnx.helper.make_node("QLinearMatMul", x + w + y, list(q.output))
            elif op.op_type == "Gemm" and const_w and float(a.get("beta", 1.0)) == 1.0:
                if a.get("transA", 0):  # (A^T would move N: graphc's QGemm refuses it)
                    continue
                a.pop("beta", None)
                new = onnx.helper.make_node(
                    "QGemm", x + w + (b or [""]) + y, list(q.output), domain="com.microsoft", **a
                )
        elif op.op_type in ("Add", "Mul") and len(ins) == 2 and ins[1] is not None:
            if ins[1][3] == yq[3] and init(ins[1][1]).size == 1:  # type: ignore[union-attr]
                kind = "QLinearAdd" if op.op_type == "Add" else "QLinearMul"
                new = onnx.helper.make_node(
                    kind, x + list(ins[1][:3]) + y, list(q.output), domain="com.microsoft"
                )
        elif op.op_type == "AveragePool" and set(a) <= set(_POOL_COPIED):
            new = onnx.helper.make_node(
                "QLinearAveragePool", x + y, list(q.output), domain="com.microsoft", **a
            )
        elif op.op_type == "Softmax" and set(a) <= {"axis"}:
            a["opset"] = 13 if opset >= 13 else 11  # (before 13: over every axis from axis)
            new = onnx.helper.make_node(
                "QLinearSoftmax", x + y, list(q.output), domain="com.microsoft", **a
            )
        elif op.op_type == "GlobalAveragePool":
            new = onnx.helper.make_node(
                "QLinearGlobalAveragePool", x + y, list(q.output), domain="com.microsoft"
            )
        if new is not None:
            new.name = q.name
            found.append((i, new))
    if not found:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, new in found:
        out.graph.node[i].CopyFrom(new)
    if any(n.domain == "com.microsoft" for _, n in found) and not any(
        o.domain == "com.microsoft" for o in out.opset_import
    ):
        out.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return out
