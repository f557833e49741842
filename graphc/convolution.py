"""Convolutional layers for the DSL: ``conv`` (and ``conv1d``/``conv2d``/``conv3d``), pooling,
``flatten``, and their layer objects for ``Sequential`` (``Conv``, ``MaxPool``, ``AvgPool``,
``Flatten``).

Layout: channels first, x [N, C, D1, ..., Dk] (ONNX's and torch's NCHW), filters
[filters, C/groups, K1, ..., Kk]; the ops are graphc.ir.ops.conv's.
"""

from __future__ import annotations

import math
from typing import Any

from graphc.ir.errors import GraphcError, ShapeError
from graphc.runtime.checks import check_bool

from .dsl import (
    Tensor,
    _fresh,
    activation_name,
    apply,
    index_value,
    mean,
    param,
    reshape,
    shares_weights,
)

Ints = int | tuple[int, ...] | list[int]


def _spatial_rank(where: str, x: Tensor, rank: int | None = None) -> int:
    r = x.type.rank - 2
    if not 1 <= r <= 3 or "N" in x.shape[1:]:
        raise ShapeError(
            f"{where}: expects x [N, C, D1, ...] with 1 to 3 spatial axes (channels first), "
            f"got {x.type} ({x.name})"
        )
    if rank is not None and r != rank:
        raise ShapeError(f"{where}: expects {rank} spatial axes, got {x.type} ({x.name})")
    return r


def _per_axis(where: str, key: str, v: Any, r: int, least: int) -> tuple[int, ...]:
    v = [index_value(i) for i in v] if isinstance(v, tuple | list) else index_value(v)
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,) * r
    if (
        not isinstance(v, tuple | list)
        or len(v) != r
        or any(not isinstance(i, int) or isinstance(i, bool) or i < least for i in v)
    ):
        raise GraphcError(
            f"{where}: {key} must be an int >= {least} or {r} of them, one per spatial axis, "
            f"got {v!r}"
        )
    return tuple(v)


def _pads(where: str, padding: Any, x: Tensor, ks, ss, ds) -> tuple[int, ...]:
    """ONNX-order pads (begins, then ends) for ``padding``: "valid" (none); "same" (the output
    has ceil(D / stride) positions, the odd pad at the end: Keras's and TensorFlow's SAME, and
    torch's padding="same" at stride 1); an int or one int per axis (both sides); or 2k ints
    (begins, then ends)."""
    r = len(ks)
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0,) * (2 * r)
        if padding.lower() == "same":
            begin, end = [], []
            for a in range(r):
                size = int(x.shape[2 + a])
                out = -(-size // ss[a])
                total = max((out - 1) * ss[a] + (ks[a] - 1) * ds[a] + 1 - size, 0)
                begin.append(total // 2)
                end.append(total - total // 2)
            return tuple(begin + end)
        raise GraphcError(f"{where}: padding must be 'valid', 'same' or ints, got {padding!r}")
    if isinstance(padding, tuple | list) and len(padding) == 2 * r and r > 1:
        return _per_axis(where, "padding", padding, 2 * r, 0)
    p = _per_axis(where, "padding", padding, r, 0)
    return p + p


def conv(
    x: Tensor,
    filters: int,
    kernel_size: Ints,
    strides: Ints = 1,
    padding: str | Ints = "valid",
    dilation: Ints = 1,
    groups: int = 1,
    activation: str | None = None,
    *,
    name: str | None = None,
    init: str | None = None,
    use_bias: bool = True,
) -> Tensor:
    """A convolution layer: ``activation(conv(x, W) + b)`` over x [N, C, D1..Dk] (k = 1, 2, 3;
    channels first, as torch.nn.ConvNd and ONNX Conv), W [filters, C/groups, K1..Kk], b
    [filters]; y [N, filters, O1..Ok] with O = floor((D + pads - (K - 1) * dilation - 1) /
    stride) + 1.

    ``kernel_size``, ``strides``, ``dilation``: an int or one per spatial axis. ``padding``:
    "valid" (none), "same" (O = ceil(D / stride); the odd pad at the end, as Keras), an int or
    one int per axis (both sides), or 2k ints (begins, then ends). ``groups``: channel groups
    (groups = C: depthwise). W is initialized with He uniform before relu and Glorot uniform
    otherwise (fans of the [out, in/groups, K...] layout: fan_in = C/groups * prod(K)), b with
    zeros; params ``NAME.w`` and ``NAME.b``. ``activation`` as ``dense``'s.

    Raises:
        ShapeError: x not [N, C, D1..Dk], channels not divisible by groups, a window larger
            than the padded input.
        GraphcError: a bad size, padding, activation or filters count.
    """
    r = _spatial_rank("conv", x)
    use_bias = check_bool(use_bias, "conv: use_bias")
    filters, groups = index_value(filters), index_value(groups)
    if not isinstance(filters, int) or isinstance(filters, bool) or filters <= 0:
        raise GraphcError(f"conv: filters must be a positive int, got {filters!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise GraphcError(f"conv: groups must be a positive int, got {groups!r}")
    ks = _per_axis("conv", "kernel_size", kernel_size, r, 1)
    ss = _per_axis("conv", "strides", strides, r, 1)
    ds = _per_axis("conv", "dilation", dilation, r, 1)
    pads = _pads("conv", padding, x, ks, ss, ds)
    activation = activation_name(activation, "conv: ")
    channels = int(x.shape[1])
    if channels % groups or filters % groups:
        raise ShapeError(
            f"conv: groups={groups} must divide the input channels ({channels}, {x.type}) and "
            f"filters ({filters})"
        )
    name = name or _fresh("conv")
    init = init or ("he_uniform" if activation == "relu" else "glorot_uniform")
    w = param(f"{name}.w", (filters, channels // groups, *ks), init=init, dtype=x.dtype)
    y = apply("conv", x, w, strides=ss, dilations=ds, pads=pads, groups=groups)
    if use_bias:
        b = param(f"{name}.b", (filters,), init="zeros", dtype=x.dtype)
        y = y + reshape(b, (filters,) + (1,) * r)
    from . import dsl

    return dsl.activation(y, activation)


def conv1d(x: Tensor, filters: int, kernel_size: Ints, **kw: Any) -> Tensor:
    """``conv`` over x [N, C, L] (one spatial axis)."""
    _spatial_rank("conv1d", x, 1)
    return conv(x, filters, kernel_size, **kw)


def conv2d(x: Tensor, filters: int, kernel_size: Ints, **kw: Any) -> Tensor:
    """``conv`` over x [N, C, H, W] (two spatial axes)."""
    _spatial_rank("conv2d", x, 2)
    return conv(x, filters, kernel_size, **kw)


def conv3d(x: Tensor, filters: int, kernel_size: Ints, **kw: Any) -> Tensor:
    """``conv`` over x [N, C, D, H, W] (three spatial axes)."""
    _spatial_rank("conv3d", x, 3)
    return conv(x, filters, kernel_size, **kw)


def strided_slice(x: Tensor, axis: int, start: int, step: int, count: int) -> Tensor:
    """x[..., start : start + step * count : step, ...]: ``count`` elements every ``step``
    (>= 1) from ``start`` along the non-batch ``axis``, as numpy's basic slicing. Exact
    (elements are moved, never computed); the gradient lands on the picked elements.

    Composed as one slice, then (step > 1) a reshape to [..., count, step, ...] and its first
    column, whatever ``count`` is (a slice per element would take a compile time growing with
    the count: 500 slices for a stride of 2 over 1000 elements); the last window's unread
    tail past the axis is padded with zeros to fill the reshape. Shared by pooling and the
    ONNX importer's element picks (Slice with steps, Gather, MaxPool / AveragePool).

    Raises:
        ShapeError: the picked elements do not lie in the axis (start < 0, step < 1, or
            start + step * (count - 1) >= the axis's size).
    """
    size = int(x.shape[axis])
    if start < 0 or step < 1 or count < 1 or start + step * (count - 1) >= size:
        raise ShapeError(
            f"strided_slice: {count} elements every {step} from {start} do not lie in axis "
            f"{axis} of {x.type} ({x.name})"
        )
    if step == 1:
        if start == 0 and count == size:
            return x
        return apply("slice", x, axes=(axis,), starts=(start,), ends=(start + count,))
    span = step * count
    end = min(size, start + span)
    t = apply("slice", x, axes=(axis,), starts=(start,), ends=(end,))
    if end - start < span:  # the last window's tail: never read, zeros to fill the reshape
        t = apply("pad", t, axes=(axis,), before=(0,), after=(span - (end - start),))
    shape = tuple(t.shape)
    t = reshape(t, shape[:axis] + (count, step) + shape[axis + 1 :])
    t = apply("slice", t, axes=(axis + 1,), starts=(0,), ends=(1,))
    return reshape(t, shape[:axis] + (count,) + shape[axis + 1 :])


def _pool(
    kind: str,
    x: Tensor,
    pool_size: Ints,
    strides: Ints | None,
    padding: str | Ints = "valid",
    count_include_pad: bool = False,
    ceil_mode: bool = False,
) -> Tensor:
    where = f"{kind}_pool"
    r = _spatial_rank(where, x)
    ks = _per_axis(where, "pool_size", pool_size, r, 1)
    ss = ks if strides is None else _per_axis(where, "strides", strides, r, 1)
    include = check_bool(count_include_pad, f"{where}: count_include_pad")
    if isinstance(padding, str) and padding.lower() not in ("valid", "same"):
        raise GraphcError(f"{where}: padding must be 'valid', 'same' or ints, got {padding!r}")
    pads = _pads(where, padding, x, ks, ss, (1,) * r)
    for a in range(r):  # a window in the padding only has no element to take (torch: <= K/2)
        if max(pads[a], pads[r + a]) >= ks[a]:
            raise GraphcError(
                f"{where}: padding {pads[a]} before / {pads[r + a]} after spatial axis {a} must "
                f"be below pool_size {ks[a]} (a window would hold padding only)"
            )
    sizes = [int(d) for d in x.shape[2:]]
    ends = list(pads[r:])  # the end pads, with ceil_mode's overhang of the last window
    if check_bool(ceil_mode, f"{where}: ceil_mode"):
        for a, (d, k, s) in enumerate(zip(sizes, ks, ss)):
            span = d + pads[a] + pads[r + a] - k
            if span >= 0:
                o = -(-span // s) + 1
                if (o - 1) * s >= d + pads[a]:  # torch: the last window starts in the input
                    o -= 1
                ends[a] = max(pads[r + a], (o - 1) * s + k - d - pads[a])
    if any(pads) or ends != list(pads[r:]):
        x = _pad_for_pool(kind, x, (*pads[:r], *ends))
    padded = [int(d) for d in x.shape[2:]]
    out = [(d - k) // s + 1 for d, k, s in zip(padded, ks, ss)]
    if min(out) < 1:
        raise ShapeError(f"{where}: pool_size {ks} is larger than the input {x.type} ({x.name})")
    y = _valid_pool(kind, x, ks, ss, out)
    if kind == "avg":  # the divisor: the window's elements in the input (or in input and pads)
        spans = [(-pads[a], d + pads[r + a]) if include else (0, d) for a, d in enumerate(sizes)]
        y = _recount(y, ks, ss, pads[:r], spans)
    return y


def _recount(y: Tensor, ks, ss, begins, spans) -> Tensor:
    """An average over whole windows (sum / prod(pool_size)) of a zero-padded input rescaled to
    the sum over each window divided by the number of its positions inside ``spans`` (per
    spatial axis, [lo, hi) in input coordinates: the input, or the input and its pads): the
    output positions whose window reaches past a span (a few at each end) are multiplied by
    K / (the window's positions inside it)."""
    r = len(ks)
    for a in range(r):
        axis, k, s, begin = 2 + a, ks[a], ss[a], begins[a]
        lo, hi = spans[a]
        counts = [min(o * s - begin + k, hi) - max(o * s - begin, lo) for o in range(y.shape[axis])]
        if all(c == k for c in counts):
            continue
        parts: list[Tensor] = []
        o = 0
        while o < len(counts):  # runs of equal counts: one slice (and one scale) each
            end = o
            while end < len(counts) and counts[end] == counts[o]:
                end += 1
            part = strided_slice(y, axis, o, 1, end - o)
            parts.append(part if counts[o] == k else part * (k / counts[o]))
            o = end
        y = apply("concat", *parts, axis=axis)
    return y


def _pad_for_pool(kind: str, x: Tensor, pads: tuple[int, ...]) -> Tensor:
    """x with ``pads`` (begins, then ends) around its spatial axes: zeros for an average (the
    sum of a window is the sum of its elements inside x), -inf for a maximum (torch's
    MaxPool: a padded position never wins, not even a tie), selected where a padded mask of
    ones is 0 (x * 0 + 1 is NaN for an infinite or NaN element, which where takes as true)."""
    r = len(pads) // 2
    axes = tuple(a for a in range(r) if pads[a] or pads[r + a])

    def pad(t: Tensor) -> Tensor:
        return apply(
            "pad",
            t,
            axes=tuple(2 + a for a in axes),
            before=tuple(pads[a] for a in axes),
            after=tuple(pads[r + a] for a in axes),
        )

    if kind == "avg":
        return pad(x)
    from .functional import where

    return where(pad(x * 0.0 + 1.0), pad(x), -math.inf)


def first_max(acc: Tensor, t: Tensor) -> Tensor:
    """The running maximum of a window read element by element: ``t`` replaces ``acc`` when it
    is greater or NaN (torch's max pooling kernels: ``val > max || isnan(val)``), so a tie
    keeps the earlier element and the gradient reaches the first maximum of each window in
    row-major order only, as torch's, TensorFlow's and JAX's max pooling (and ONNX MaxPool's
    Indices) pick it; a NaN window gives NaN."""
    from .functional import not_equal, where

    take = apply("maximum", apply("greater", t, acc), not_equal(t, t))
    return where(take, t, acc)


def _valid_pool(kind: str, x: Tensor, ks, ss, out: list[int]) -> Tensor:
    """max or mean over the windows of ``ks`` every ``ss`` that lie in x ([N, C, D1..Dk]);
    the max by ``first_max`` over the window's offsets in row-major order."""
    r = len(ks)
    if ss == ks and kind != "max":  # windows side by side: a reshape and one reduction
        t = x
        for a in range(r):
            t = strided_slice(t, 2 + a, 0, 1, out[a] * ks[a])
        shape: list[Any] = list(t.shape[:2])
        for o, k in zip(out, ks):
            shape += [o, k]
        t = reshape(t, tuple(shape))
        return mean(t, tuple(3 + 2 * a for a in range(r)))
    acc: Tensor | None = None
    import itertools

    for offs in itertools.product(*(range(k) for k in ks)):
        t = x
        for a, k in enumerate(offs):
            t = strided_slice(t, 2 + a, k, ss[a], out[a])
        acc = t if acc is None else (first_max(acc, t) if kind == "max" else acc + t)
    assert acc is not None
    return acc if kind == "max" else acc * (1.0 / math.prod(ks))


def max_pool(
    x: Tensor,
    pool_size: Ints,
    strides: Ints | None = None,
    padding: str | Ints = "valid",
    ceil_mode: bool = False,
) -> Tensor:
    """The maximum over each window of ``pool_size`` along the spatial axes of x [N, C, D1..Dk]
    (torch.nn.MaxPoolNd, Keras MaxPoolingND): windows start every ``strides`` (default:
    pool_size, windows side by side).

    ``padding``: "valid" (default): no padding, a partial window at the end is left out,
    O = floor((D - pool_size) / stride) + 1. "same": TensorFlow's / Keras's 'SAME', which is
    ONNX's auto_pad SAME_UPPER whenever its total pad is >= 0: O = ceil(D / stride), the
    input padded by total = max((O - 1) * stride + pool_size - D, 0), floor(total / 2) before
    and the rest (the odd one) after. Or explicit pads as torch's ``padding=`` (and ONNX's
    ``pads``): an int or one int per spatial axis (both sides), or 2k ints (begins, then ends),
    each below pool_size; O = floor((D + before + after - pool_size) / stride) + 1.
    ``ceil_mode`` (torch's): O = ceil((D + before + after - pool_size) / stride) + 1, less one
    if the last window would start past the input and its begin pad; that window may run past
    the padded input and takes what lies inside. Padded positions never win (as -inf, torch's
    MaxPool). The gradient goes to the first maximum of each window in row-major order (a tie
    keeps the earlier element; NaN wins), as torch's, TensorFlow's and JAX's max pooling:
    ``first_max``. (graphc's ``max`` reduction, torch.amax's rule, splits it among ties.)

    Raises:
        ShapeError: x not [N, C, D1..Dk] or a window larger than the (padded) input.
        GraphcError: a bad pool_size, strides, padding (a pad >= pool_size) or ceil_mode.
    """
    return _pool("max", x, pool_size, strides, padding, ceil_mode=ceil_mode)


def avg_pool(
    x: Tensor,
    pool_size: Ints,
    strides: Ints | None = None,
    padding: str | Ints = "valid",
    count_include_pad: bool = False,
    ceil_mode: bool = False,
) -> Tensor:
    """The mean over each window (see ``max_pool`` for ``pool_size``, ``strides``, ``padding``
    and ``ceil_mode``; torch.nn.AvgPoolNd, Keras AveragePoolingND).

    With padding "same" or explicit pads, ``count_include_pad`` chooses the divisor of a window
    that reaches into the padding: False (default; TensorFlow / Keras 'SAME', ONNX
    AveragePool's default count_include_pad=0): the number of its elements inside the input;
    True (torch's AvgPool default, ONNX count_include_pad=1): the window's positions inside
    the padded input (pool_size's product, but for a ceil_mode window that runs past the
    padded input: torch's divisor). With "valid" and no ceil_mode every window lies in the
    input and both give the plain mean.

    Raises:
        ShapeError: x not [N, C, D1..Dk] or a window larger than the (padded) input.
        GraphcError: a bad pool_size, strides, padding (a pad >= pool_size),
            count_include_pad or ceil_mode.
    """
    return _pool("avg", x, pool_size, strides, padding, count_include_pad, ceil_mode)


def global_avg_pool(x: Tensor) -> Tensor:
    """The mean over all spatial axes of x [N, C, D1..Dk]: [N, C] (Keras's
    GlobalAveragePooling, torch's adaptive_avg_pool to 1 then flatten)."""
    r = _spatial_rank("global_avg_pool", x)
    return mean(x, tuple(range(2, 2 + r)))


def flatten(x: Tensor) -> Tensor:
    """x [N, d1, d2, ...] as [N, d1 * d2 * ...] (row-major, torch.flatten(x, 1), ONNX Flatten)."""
    if x.type.rank < 2:
        raise ShapeError(f"flatten: expects x of rank >= 2, got {x.type} ({x.name})")
    if "N" in x.shape[1:]:
        raise ShapeError(f"flatten: the batch axis N must come first, got {x.type} ({x.name})")
    rest = math.prod(int(d) for d in x.shape[1:])
    return reshape(x, (x.shape[0], rest))


class Conv:
    """Layer object for Sequential: ``Conv(filters, kernel_size, strides=1, padding="valid",
    dilation=1, groups=1, activation=None, name=None, init=None, use_bias=True)`` (see
    ``conv``)."""

    has_params = True

    def __init__(self, filters: int, kernel_size: Ints, *args: Any, **kw: Any) -> None:
        self.filters, self.kernel_size, self.args = filters, kernel_size, args
        self.name = kw.pop("name", None)
        self.kw = kw
        activation_name(kw.get("activation"), "Conv: ")

    @shares_weights
    def __call__(self, x: Tensor) -> Tensor:
        return conv(x, self.filters, self.kernel_size, *self.args, name=self.name, **self.kw)

    def __repr__(self) -> str:
        return f"Conv({self.filters}, {self.kernel_size!r}, name={self.name!r})"


class MaxPool:
    """Layer object for Sequential: ``MaxPool(pool_size, strides=None, padding="valid",
    ceil_mode=False)`` (see ``max_pool``)."""

    def __init__(
        self,
        pool_size: Ints,
        strides: Ints | None = None,
        padding: str | Ints = "valid",
        ceil_mode: bool = False,
    ) -> None:
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        self.ceil_mode = ceil_mode

    def __call__(self, x: Tensor) -> Tensor:
        return max_pool(x, self.pool_size, self.strides, self.padding, self.ceil_mode)


class AvgPool:
    """Layer object for Sequential: ``AvgPool(pool_size, strides=None, padding="valid",
    count_include_pad=False, ceil_mode=False)`` (see ``avg_pool``)."""

    def __init__(
        self,
        pool_size: Ints,
        strides: Ints | None = None,
        padding: str | Ints = "valid",
        count_include_pad: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        self.count_include_pad, self.ceil_mode = count_include_pad, ceil_mode

    def __call__(self, x: Tensor) -> Tensor:
        return avg_pool(
            x, self.pool_size, self.strides, self.padding, self.count_include_pad, self.ceil_mode
        )


class Flatten:
    """Layer object for Sequential: ``Flatten()`` (see ``flatten``)."""

    def __call__(self, x: Tensor) -> Tensor:
        return flatten(x)
