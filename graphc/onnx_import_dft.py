"""ONNX DFT (opsets 17 and 20; https://onnx.ai/onnx/operators/onnx__DFT.html), the rule of
``graphc.onnx_import.OPS`` for it.

The signal [..., n along ``axis``, ..., 1 or 2] (real, or real and imaginary parts in the
last axis) is transformed along ``axis`` as products with constant matrices of the DFT's
cosines and sines (float32, from float64 angles 2 pi j k / L): X_k = sum_j x_j e^(-2 pi i j k /
L) forward, (1 / L) sum_j x_j e^(+2 pi i j k / L) inverse, L the ``dft_length`` (input 1; by
default n, for an inverse one-sided transform 2 (n - 1)). Rows j >= min(n, L) of the matrices
are zero, which truncates a longer signal and zero-pads a shorter one. ``onesided`` keeps the
first L // 2 + 1 outputs of a forward transform; an inverse one-sided transform takes those
bins and gives the real signal of length L (the bins between 0 and L / 2 counted twice, by the
spectrum's conjugate symmetry), its last axis 1 as ONNX Runtime's and onnx.reference's. The
transform axis is moved last for the products and back (graphc keeps N first); it may not be
N or the last (complex) axis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import dsl
from .dsl import Tensor

if TYPE_CHECKING:
    from .onnx_import import NodeContext

MAX_DFT_LENGTH = 4096  # L: the matrices hold n x L entries each


def _matrices(n: int, length: int, outputs: int, inverse: bool, half_in: bool) -> Any:
    """(cos, sin) [n, outputs] float32: entry [j, k] of the product's matrix for input
    position j (zero rows from min(n, L), or past the one-sided bins for ``half_in``)."""
    j = np.arange(n)[:, None].astype(np.float64)
    k = np.arange(outputs)[None, :].astype(np.float64)
    angle = 2.0 * np.pi * ((j * k) % length) / length
    c, s = np.cos(angle), np.sin(angle)
    keep = (j < min(n, length)).astype(np.float64)
    if half_in:  # bins 0 < j < L / 2 stand for themselves and their conjugates
        twice = (j > 0) & (2 * j < length)
        keep = keep * np.where(twice, 2.0, 1.0) * (j <= length // 2)
    scale = 1.0 / length if inverse else 1.0
    return ((c * keep * scale).astype(np.float32), (s * keep * scale).astype(np.float32))


def dft(cx: NodeContext) -> list[Any]:
    """DFT of a computed signal (see the module's docstring). Refused naming the node: an
    axis that is N or the complex axis, a last axis other than 1 or 2, a length above
    MAX_DFT_LENGTH, a dft_length or axis not known at import time."""
    from .functional import move_axis
    from .onnx_import import _fmt, _reshape

    x = cx.x(0)
    r = len(x.shape)
    if r < 3 or x.shape[-1] not in (1, 2):
        cx.fail(f"the signal {_fmt(x.shape)} must end in an axis of 1 (real) or 2 (complex)")
    if cx.version >= 20:
        axis = int(np.asarray(cx.c(2)).reshape(())) if cx.has(2) else -2
    else:
        axis = int(cx.attr("axis", 1))
    a = axis + r if axis < 0 else axis
    if not 0 <= a < r - 1 or x.shape[a] == "N":
        cx.fail(f"axis {axis} of {_fmt(x.shape)}: the transform axis may not be N or the last")
    n = int(x.shape[a])
    inverse, onesided = bool(cx.attr("inverse", 0)), bool(cx.attr("onesided", 0))
    half_in = inverse and onesided  # the bins of a one-sided spectrum back to a real signal
    if cx.has(1):
        length = int(np.asarray(cx.c(1)).reshape(()))
    else:
        length = 2 * (n - 1) if half_in else n
    if not 1 <= length <= MAX_DFT_LENGTH:
        cx.fail(f"dft_length {length}: graphc transforms lengths 1 .. {MAX_DFT_LENGTH}")
    outputs = length // 2 + 1 if onesided and not inverse else length
    cos, sin = _matrices(n, length, outputs, inverse, half_in)
    name = f"dft_{n}_{length}_{outputs}_{int(inverse)}{int(half_in)}"
    cm = cx.imp.constant_tensor(f"{name}_cos", cos, cx, False)
    sm = cx.imp.constant_tensor(f"{name}_sin", sin, cx, False)

    def part(c: int) -> Tensor:  # the real (0) or imaginary (1) part, the axis moved last
        t = dsl.apply("slice", x, axes=(r - 1,), starts=(c,), ends=(c + 1,))
        t = _reshape(cx, t, tuple(x.shape[:-1]))
        return move_axis(t, a, r - 2) if a != r - 2 else t

    xr = part(0)
    xi = part(1) if x.shape[-1] == 2 else None
    sign = 1.0 if inverse else -1.0  # e^(sign 2 pi i j k / L)
    # (xr + i xi)(cos + i sign sin) = xr cos - sign xi sin + i (sign xr sin + xi cos)
    real = dsl.matmul(xr, cm)
    imag = dsl.matmul(xr, sm) * sign
    if xi is not None:
        real = real - dsl.matmul(xi, sm) * sign
        imag = imag + dsl.matmul(xi, cm)
    parts = [real] if half_in else [real, imag]

    def back(t: Tensor) -> Tensor:
        t = move_axis(t, r - 2, a) if a != r - 2 else t
        return _reshape(cx, t, (*t.shape, 1))

    outs = [back(t) for t in parts]
    return [dsl.apply("concat", *outs, axis=r - 1) if len(outs) > 1 else outs[0]]
