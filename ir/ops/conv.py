"""Convolution: conv (ONNX Conv, torch.nn.ConvNd), its data gradient conv_transpose (ONNX
ConvTranspose) and its filter gradient conv_filter_grad, over 1 to 3 spatial axes.

Layout (ONNX's and torch's): x [N, C, D1, ..., Dk], filters w [Cout, C/groups, K1, ..., Kk],
y [N, Cout, O1, ..., Ok]. Along spatial axis a, output position o reads input position

    i = o * strides[a] + k * dilations[a] - pads[a]          (k = 0 .. K_a - 1)

where positions outside [0, D_a) are zeros (the padding); ``pads`` holds the begin pads of
every axis, then the end pads (ONNX's order), and O_a = floor((D_a + begin + end -
((K_a - 1) * dilations[a] + 1)) / strides[a]) + 1. With ``groups`` = G, output channel co
reads the input channels of its group, g = co // (Cout / G): channels g * C/G .. (g+1) * C/G - 1.

All three ops are linear in each operand, and each one's VJP is one of the three:

    y = conv(x, w)                  dx = conv_transpose(dy, w)      dw = conv_filter_grad(dy, x)
    x = conv_transpose(y, w)        dy = conv(dx, w)                dw = conv_filter_grad(y, dx)
    w = conv_filter_grad(y, x)      dy = conv(x, dw)                dx = conv_transpose(y, dw)

The spatial sizes are static; the leading (batch) axis may be N.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import BATCH, TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node

_GEOMETRY_ATTRS = ("strides", "dilations", "pads", "groups")


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes of one convolution, from the side of the forward conv: x [batch, channels,
    *in_spatial], w [out_channels, channels // groups, *kernel], y [batch, out_channels,
    *out_spatial]."""

    batch: int | str
    channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def valid_outputs(self, axis: int, k: int) -> tuple[int, int]:
        """The range [lo, hi) of output positions o along ``axis`` whose input position
        o * stride + k * dilation - pad lies inside the input (lo >= hi: none)."""
        s, d, p = self.strides[axis], self.dilations[axis], self.pads_begin[axis]
        off = k * d - p
        lo = max(0, -(off // s)) if off < 0 else 0  # smallest o with o * s + off >= 0
        hi = min(self.out_spatial[axis], -(-(self.in_spatial[axis] - off) // s))
        return lo, max(lo, hi)


def _ints(op: str, key: str, v: Any, count: int, default: int, least: int) -> tuple[int, ...]:
    if v is None:
        return (default,) * count
    v = (v,) * count if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(v, tuple | list) or any(
        not isinstance(i, int) or isinstance(i, bool) for i in v
    ):
        raise ShapeError(f"{op}: attr {key} must be a tuple of ints, got {v!r}")
    if len(v) != count:
        raise ShapeError(f"{op}: attr {key} has {len(v)} entries, expected {count}")
    if any(i < least for i in v):
        raise ShapeError(f"{op}: attr {key} must hold ints >= {least}, got {tuple(v)}")
    return tuple(v)


def _spatial(op: str, what: str, t: TensorType) -> tuple[int, ...]:
    if not 3 <= t.rank <= 5:
        raise ShapeError(f"{op}: {what} must be [N, C, D1, ...] with 1 to 3 spatial axes, got {t}")
    if BATCH in t.shape[1:]:
        raise ShapeError(f"{op}: {what} {t} has the batch axis N after its first axis")
    return tuple(int(d) for d in t.shape[2:])


def _window(op: str, g: ConvGeometry) -> None:
    for a in range(g.rank):
        span = (g.kernel[a] - 1) * g.dilations[a] + 1
        room = g.in_spatial[a] + g.pads_begin[a] + g.pads_end[a]
        if span > room:
            raise ShapeError(
                f"{op}: the window along spatial axis {a} ({g.kernel[a]} taps, dilation "
                f"{g.dilations[a]}: {span} positions) is larger than the padded input "
                f"({g.in_spatial[a]} + pads {g.pads_begin[a]}+{g.pads_end[a]} = {room})"
            )


def _out_size(g_in: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    return (g_in + pb + pe - ((k - 1) * d + 1)) // s + 1


def _groups(op: str, attrs: dict[str, Any]) -> int:
    g = attrs.get("groups", 1)
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        raise ShapeError(f"{op}: attr groups must be an int >= 1, got {g!r}")
    return g


def _common(op: str, attrs: dict[str, Any], rank: int):
    strides = _ints(op, "strides", attrs.get("strides"), rank, 1, 1)
    dil = _ints(op, "dilations", attrs.get("dilations"), rank, 1, 1)
    pads = _ints(op, "pads", attrs.get("pads"), 2 * rank, 0, 0)
    return strides, dil, pads[:rank], pads[rank:], _groups(op, attrs)


def geometry(op: str, types: list[TensorType], attrs: dict[str, Any]) -> ConvGeometry:
    """The forward conv's sizes behind a node of ``op`` (conv, conv_transpose or
    conv_filter_grad) with operands of ``types``.

    Raises:
        ShapeError: a rank, channel count, group count, attr or window that does not fit.
    """
    same_float_dtype(op, types)
    if op == "conv":
        x, w = types
        d_in = _spatial(op, "input x", x)
        r = len(d_in)
        if w.rank != r + 2 or BATCH in w.shape:
            raise ShapeError(f"{op}: filters must be [Cout, C/groups, K1..K{r}] for {x}, got {w}")
        strides, dil, pb, pe, groups = _common(op, attrs, r)
        co, cg = int(w.shape[0]), int(w.shape[1])
        c = int(x.shape[1])
        if c % groups or co % groups:
            raise ShapeError(
                f"{op}: groups={groups} must divide the input channels ({c}) and the output "
                f"channels ({co})"
            )
        if cg != c // groups:
            raise ShapeError(
                f"{op}: input x {x} has {c} channels, filters {w} expect {cg} per group x "
                f"{groups} groups = {cg * groups}"
            )
        kernel = tuple(int(k) for k in w.shape[2:])
        if min(kernel) < 1:
            raise ShapeError(f"{op}: filters {w} have an empty kernel")
        g = ConvGeometry(x.shape[0], c, co, groups, d_in, (), kernel, strides, dil, pb, pe)
        _window(op, g)
        out = tuple(_out_size(*a) for a in zip(d_in, kernel, strides, dil, pb, pe))
        return ConvGeometry(x.shape[0], c, co, groups, d_in, out, kernel, strides, dil, pb, pe)
    if op == "conv_transpose":
        y, w = types
        o_sp = _spatial(op, "input", y)
        r = len(o_sp)
        if w.rank != r + 2 or BATCH in w.shape:
            raise ShapeError(f"{op}: filters must be [C, Cout/groups, K1..K{r}] for {y}, got {w}")
        strides, dil, pb, pe, groups = _common(op, attrs, r)
        outpad = _ints(op, "output_padding", attrs.get("output_padding"), r, 0, 0)
        for a in range(r):
            if outpad[a] >= strides[a]:
                raise ShapeError(
                    f"{op}: output_padding {outpad} must be smaller than strides {strides}"
                )
        co = int(y.shape[1])
        if int(w.shape[0]) != co:
            raise ShapeError(f"{op}: input {y} has {co} channels, filters {w} have {w.shape[0]}")
        if co % groups:
            raise ShapeError(f"{op}: groups={groups} must divide the input channels ({co})")
        kernel = tuple(int(k) for k in w.shape[2:])
        if min(kernel) < 1:
            raise ShapeError(f"{op}: filters {w} have an empty kernel")
        d_in = tuple(
            (o - 1) * s + (k - 1) * d + 1 - b - e + p
            for o, s, k, d, b, e, p in zip(o_sp, strides, kernel, dil, pb, pe, outpad)
        )
        if min(d_in) < 1:
            raise ShapeError(f"{op}: pads {pb + pe} leave an empty output ({d_in}) for {y}")
        c = int(w.shape[1]) * groups
        return ConvGeometry(y.shape[0], c, co, groups, d_in, o_sp, kernel, strides, dil, pb, pe)
    if op == "conv_filter_grad":
        y, x = types
        o_sp = _spatial(op, "dy", y)
        d_in = _spatial(op, "x", x)
        r = len(d_in)
        if len(o_sp) != r or y.shape[0] != x.shape[0]:
            raise ShapeError(f"{op}: dy {y} and x {x} must have the same batch and rank")
        strides, dil, pb, pe, groups = _common(op, attrs, r)
        kernel = _ints(op, "kernel_shape", attrs.get("kernel_shape"), r, 0, 1)
        c, co = int(x.shape[1]), int(y.shape[1])
        if c % groups or co % groups:
            raise ShapeError(f"{op}: groups={groups} must divide {c} and {co} channels")
        g = ConvGeometry(x.shape[0], c, co, groups, d_in, o_sp, kernel, strides, dil, pb, pe)
        _window(op, g)
        want = tuple(_out_size(*a) for a in zip(d_in, kernel, strides, dil, pb, pe))
        if want != o_sp:
            raise ShapeError(f"{op}: dy {y} does not fit the conv of x {x} (output {want})")
        return g
    raise ShapeError(f"no conv geometry for op {op}")


def _axes_slice(g: ConvGeometry, ks: tuple[int, ...]) -> tuple[slice, ...]:
    """The input positions (in the padded input) that kernel offset ``ks`` reads, per axis."""
    return tuple(
        slice(k * d, k * d + (o - 1) * s + 1, s)
        for k, d, o, s in zip(ks, g.dilations, g.out_spatial, g.strides)
    )


def _pad_widths(g: ConvGeometry):
    return [(0, 0), (0, 0)] + list(zip(g.pads_begin, g.pads_end))


def _geometry_of(op: str, a: np.ndarray, b: np.ndarray, attrs: dict[str, Any]) -> ConvGeometry:
    types = [TensorType(a.shape, "f64"), TensorType(b.shape, "f64")]
    return geometry(op, types, attrs)


class _Conv(Op):
    arity = 2
    kind = Kind.REDUCE  # a contraction over channels and the window
    kernel = "conv"  # codegen/conv.py
    attrs: ClassVar[dict[str, Any]] = {
        "strides": None,
        "dilations": None,
        "pads": None,
        "groups": 1,
    }

    def flops(self, node: Node, in_types: list[TensorType], n: int) -> int:
        g = geometry(self.name, in_types, dict(node.attrs))
        taps = math.prod(g.kernel) * (g.channels // g.groups)
        rows = n if g.batch == BATCH else int(g.batch)
        return 2 * rows * g.out_channels * math.prod(g.out_spatial) * taps

    def _same(self, node: Node, **extra: Any) -> dict[str, Any]:
        return {k: node.attr(k) for k in _GEOMETRY_ATTRS if node.attr(k) is not None} | extra


@register
class Conv(_Conv):
    """y = the convolution (cross-correlation, as ONNX Conv and torch.nn.ConvNd) of x
    [N, C, D1..Dk] with filters w [Cout, C/groups, K1..Kk]: y [N, Cout, O1..Ok],

        y[n, co, o] = sum over ci < C/groups and window offsets k of
                      x[n, g * C/groups + ci, o * strides + k * dilations - pads_begin]
                      * w[co, ci, k],     g = co // (Cout / groups)

    (x is zero outside its bounds). k = 1, 2 or 3 spatial axes. Attrs: strides, dilations
    (ints >= 1 per spatial axis, default 1), pads (begin pads of every axis then end pads,
    ONNX's order, default 0), groups (default 1; groups = C is a depthwise conv). No bias:
    add one as ``y + b`` with b [Cout, 1, ..., 1].

    VJP: dx = conv_transpose(dy, w), dw = conv_filter_grad(dy, x) (same attrs).

    Raises:
        ShapeError: channels that do not match the filters, groups not dividing the channels,
            a window larger than the padded input, attrs of the wrong length.
    """

    name = "conv"
    channel_epilogue = True  # bias add and activation before the store (fuse_conv)

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        g = geometry(self.name, types, attrs)
        return TensorType((g.batch, g.out_channels, *g.out_spatial), types[0].dtype)

    def reference(self, x, w, **attrs):
        g = _geometry_of(self.name, x, w, attrs)
        xp = np.pad(x, _pad_widths(g))
        cg, og = g.channels // g.groups, g.out_channels // g.groups
        y = np.zeros((x.shape[0], g.out_channels, *g.out_spatial), np.result_type(x, w))
        for ks in itertools.product(*(range(k) for k in g.kernel)):
            xs = xp[(slice(None), slice(None), *_axes_slice(g, ks))]
            for gi in range(g.groups):
                wk = w[(slice(gi * og, (gi + 1) * og), slice(None), *ks)]  # [og, cg]
                part = xs[:, gi * cg : (gi + 1) * cg]
                y[:, gi * og : (gi + 1) * og] += np.einsum("nc...,oc->no...", part, wk)
        return y

    def grad(self, b: Builder, node: Node, dy: str):
        x, w = node.inputs
        xt = b.type_of(x)
        g = geometry(self.name, [xt, b.type_of(w)], dict(node.attrs))
        # the end positions that no window reaches: output_padding of the transposed conv
        outpad = tuple(
            (d + pb + pe - ((k - 1) * dl + 1)) % s
            for d, pb, pe, k, dl, s in zip(
                g.in_spatial, g.pads_begin, g.pads_end, g.kernel, g.dilations, g.strides
            )
        )
        extra = {"output_padding": outpad} if any(outpad) else {}
        return (
            b.conv_transpose(dy, w, **self._same(node, **extra)),
            b.conv_filter_grad(dy, x, **self._same(node, kernel_shape=g.kernel)),
        )


@register
class ConvTranspose(_Conv):
    """x = the transposed convolution (ONNX ConvTranspose, torch.nn.ConvTransposeNd) of y
    [N, C_in, I1..Ik] with filters w [C_in, Cout/groups, K1..Kk]: x [N, Cout, D1..Dk] with
    D = (I - 1) * strides + (K - 1) * dilations + 1 - pads_begin - pads_end + output_padding;
    the adjoint of conv: each y[n, c, i] adds y * w[c, co, k] to x[n, co', i * strides +
    k * dilations - pads_begin] (co' = g * Cout/groups + co, g = c // (C_in / groups)). It is
    conv's data gradient. Attrs as conv's, and output_padding (per axis, < strides, default 0).

    VJP: dy = conv(dx, w), dw = conv_filter_grad(y, dx) (same attrs).

    Raises:
        ShapeError: channels that do not match the filters, groups not dividing them, an
            output_padding not below the stride, pads that leave an empty output.
    """

    name = "conv_transpose"
    channel_epilogue = True  # bias add and activation before the store (fuse_conv)
    attrs: ClassVar[dict[str, Any]] = {**_Conv.attrs, "output_padding": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        g = geometry(self.name, types, attrs)
        return TensorType((g.batch, g.channels, *g.in_spatial), types[0].dtype)

    def reference(self, y, w, **attrs):
        g = _geometry_of(self.name, y, w, attrs)
        cg, og = g.channels // g.groups, g.out_channels // g.groups
        padded = [d + b + e for d, b, e in zip(g.in_spatial, g.pads_begin, g.pads_end)]
        xp = np.zeros((y.shape[0], g.channels, *padded), np.result_type(y, w))
        for ks in itertools.product(*(range(k) for k in g.kernel)):
            idx = (slice(None), slice(None), *_axes_slice(g, ks))
            for gi in range(g.groups):
                wk = w[(slice(gi * og, (gi + 1) * og), slice(None), *ks)]  # [og, cg]
                part = np.einsum("no...,oc->nc...", y[:, gi * og : (gi + 1) * og], wk)
                xp[idx][:, gi * cg : (gi + 1) * cg] += part
        inner = tuple(slice(b, b + d) for b, d in zip(g.pads_begin, g.in_spatial))
        return np.ascontiguousarray(xp[(slice(None), slice(None), *inner)])

    def grad(self, b: Builder, node: Node, dx: str):
        y, w = node.inputs
        g = geometry(self.name, [b.type_of(y), b.type_of(w)], dict(node.attrs))
        return (
            b.conv(dx, w, **self._same(node)),
            b.conv_filter_grad(y, dx, **self._same(node, kernel_shape=g.kernel)),
        )


@register
class ConvFilterGrad(_Conv):
    """w = the filter gradient of conv: for dy [N, Cout, O1..Ok] and x [N, C, D1..Dk],
    w[co, ci, k] = sum over n and o of dy[n, co, o] * x[n, g * C/groups + ci, o * strides +
    k * dilations - pads_begin] (x zero outside its bounds), w [Cout, C/groups, *kernel_shape].
    Sums over the batch. Attrs as conv's, and kernel_shape (required).

    VJP: ddy = conv(x, dw), dx = conv_transpose(dy, dw) (same attrs).

    Raises:
        ShapeError: dy's spatial sizes are not those of conv(x) with these attrs.
    """

    name = "conv_filter_grad"
    attrs: ClassVar[dict[str, Any]] = {**_Conv.attrs, "kernel_shape": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        g = geometry(self.name, types, attrs)
        return TensorType((g.out_channels, g.channels // g.groups, *g.kernel), types[0].dtype)

    def reference(self, dy, x, **attrs):
        g = _geometry_of(self.name, dy, x, attrs)
        cg, og = g.channels // g.groups, g.out_channels // g.groups
        xp = np.pad(x, _pad_widths(g))
        w = np.zeros((g.out_channels, cg, *g.kernel), np.result_type(dy, x))
        for ks in itertools.product(*(range(k) for k in g.kernel)):
            xs = xp[(slice(None), slice(None), *_axes_slice(g, ks))]
            for gi in range(g.groups):
                dyg = dy[:, gi * og : (gi + 1) * og].reshape(dy.shape[0], og, -1)
                xg = xs[:, gi * cg : (gi + 1) * cg].reshape(x.shape[0], cg, -1)
                w[(slice(gi * og, (gi + 1) * og), slice(None), *ks)] = np.einsum(
                    "nop,ncp->oc", dyg, xg
                )
        return w

    def grad(self, b: Builder, node: Node, dw: str):
        dy, x = node.inputs
        same = self._same(node)
        xt = b.type_of(x)
        g = geometry(self.name, [b.type_of(dy), xt], dict(node.attrs))
        outpad = tuple(
            (d + pb + pe - ((k - 1) * dl + 1)) % s
            for d, pb, pe, k, dl, s in zip(
                g.in_spatial, g.pads_begin, g.pads_end, g.kernel, g.dilations, g.strides
            )
        )
        extra = {"output_padding": outpad} if any(outpad) else {}
        return (b.conv(x, dw, **same), b.conv_transpose(dy, dw, **same, **extra))
