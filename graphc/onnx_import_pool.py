"""MaxPool's Indices output and MaxUnpool (the rules of ``graphc.onnx_import.OPS`` for them).

ONNX's MaxPool (https://onnx.ai/onnx/operators/onnx__MaxPool.html) may give, beside the
maxima, ``Indices``: for each window the flat position of its maximum in the whole input,
``(n * C + c) * P + p`` with P the number of spatial positions (H * W in 2-D) and p the
position in the plane, row-major (``storage_order`` 0) or column-major (1). The first
maximum in the window's scan order is taken, as ONNX Runtime's kernel does (a later element
replaces it only when strictly greater). The term ``(n * C + c) * P`` depends on the batch row,
which graphc's symbolic batch does not give as a value (and which float32 would not hold
exactly past 2**24), so graphc holds the plane position p and notes, per tensor, that the
value it stands for adds ``(n * C + c) * P`` (``PlaneIndices``). Such a value may go where
the row term is never read alone:

- ``Identity``, and ``Slice`` along the spatial axes only (the row term is constant along
  them);
- ``Sub`` of two such values of the same C and P (the row terms cancel: torch's
  ``MaxPool2d(return_indices=True)`` export subtracts the Indices of a 1x1 MaxPool of the same
  input, sliced to one element per plane, to give torch's per-plane indices); the difference
  is an ordinary integer tensor;
- ``MaxUnpool`` (https://onnx.ai/onnx/operators/onnx__MaxUnpool.html): the output, zeros of
  ``output_shape`` (or (in - 1) * stride - pads + kernel per spatial axis), takes X[i] at the
  flat position I[i] (the last write wins where two indices are equal, as ONNX Runtime's
  loop). With indices from a MaxPool whose windows tile the plane without overlap (kernel =
  stride, no padding or dilation, the plane P the output's), each output position belongs to
  one window and takes that window's X where the window's index names it (a comparison per
  kernel offset, the offsets interleaved back by reshapes: exact, linear in the size); other
  geometries compare every index with every output position (at most
  ``onnx_import.MAX_GATHER_ELEMENTS`` pairs per sample).

- a graph output (``indices_output``): c * P + p computed, n * C * P added by predict in
  int64 (``OnnxImport.output_row_terms``).

Any other reader of Indices is refused naming the node and the reason; so is a MaxUnpool whose
indices are not a MaxPool's of this graph (their row term would be data graphc cannot read
per row), or whose output plane differs from the pool's input plane (the flat positions
would then cross planes).

Tests: tests/test_onnx_pool_indices.py (ONNX Runtime, gradients by central differences).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dsl
from .dsl import Tensor

if TYPE_CHECKING:
    from .onnx_import import NodeContext


@dataclass(frozen=True)
class PlaneIndices:
    """What a tensor of plane positions p stands for: ``(n * C + c) * plane + p``, from a
    MaxPool of an input of ``channels`` channels and spatial shape ``spatial``; ``tiles``: the
    pool's kernel where its windows tile the plane without overlap (kernel = stride, no pads,
    no dilation, no partial window) and the tensor holds one index per window in the pool's
    output order, else None."""

    channels: int
    spatial: tuple[int, ...]
    tiles: tuple[int, ...] | None
    order: int  # storage_order: 0 row-major, 1 column-major plane positions

    @property
    def plane(self) -> int:
        return math.prod(self.spatial)


MAX_OUTPUT_PLANE_TERM = 1 << 24  # C * P: the per-sample part c * P + p exact in float32


def indices_output(imp: Any, name: str, v: Tensor, where: str) -> tuple[Tensor, int]:
    """MaxPool's Indices as a graph output: the per-sample part c * P + p (computed here: the
    plane positions plus a constant per channel) and the row term's factor C * P, which
    predict adds as n * C * P in int64 after the native call (``OnnxImport.output_row_terms``),
    so the flat positions (n * C + c) * P + p come back exact for any batch size.

    Raises:
        OnnxError: C * P of 2**24 or more (c * P + p would round in float32), naming the output.
    """
    from .onnx_import import OnnxError, _fmt

    mark: PlaneIndices = imp.plane_indices[id(v)]
    span = mark.channels * mark.plane
    if span > MAX_OUTPUT_PLANE_TERM or len(v.shape) < 2 or v.shape[1] != mark.channels:
        raise OnnxError(
            f"{where}: output {name!r} holds MaxPool's Indices of {_fmt(v.shape)} with C * P = "
            f"{span}: graphc gives them as an output where the channels lead the sample's axes "
            f"and C * P is below {MAX_OUTPUT_PLANE_TERM} (exact in float32)"
        )
    c = np.arange(mark.channels, dtype=np.float32) * float(mark.plane)
    term = c.reshape((1, mark.channels) + (1,) * (len(v.shape) - 2))
    # (a small float array: constant_tensor's refusals, which need a node, cannot arise)
    const = imp.constant_tensor(f"maxpool_channel_terms_{span}", term, None, False)
    out = v + const
    imp.integral.add(id(out))
    return out, span


def plane_positions(idx: list[np.ndarray], spatial: tuple[int, ...], order: int) -> np.ndarray:
    """The plane positions of the elements one kernel offset reads: ``idx[j]`` their positions
    along spatial axis j (one per output position), row-major (order 0) or column-major (1)
    flattening; the result has the output's spatial shape."""
    r = len(spatial)
    step = [math.prod(spatial[j + 1 :]) if order == 0 else math.prod(spatial[:j]) for j in range(r)]
    out = np.zeros([len(a) for a in idx], np.int64)
    for j, a in enumerate(idx):
        shape = [1] * r
        shape[j] = len(a)
        out = out + np.asarray(a, np.int64).reshape(shape) * step[j]
    return out


def pool_indices(
    cx: NodeContext,
    reads: list[tuple[Tensor, Tensor, list[np.ndarray]]],
    spatial: tuple[int, ...],
    tiles: tuple[int, ...] | None,
) -> Tensor:
    """MaxPool's Indices from ``reads``: per kernel offset (in the kernel's row-major order)
    the elements it reads (t), the running maximum before it (None for the first) and the
    positions it reads along each spatial axis. The first maximum's plane position: a later
    offset replaces it where strictly greater. Registered as ``PlaneIndices``."""
    order = int(cx.attr("storage_order", 0))
    if order not in (0, 1):
        cx.fail(f"storage_order {order} must be 0 (row-major) or 1 (column-major)")
    if math.prod(spatial) > 1 << 24:
        cx.fail(f"a plane of {math.prod(spatial)} positions: float32 holds them exactly to 2**24")
    first = reads[0][0]
    r = len(first.shape)
    out: Tensor | None = None
    for k, (t, before, idx) in enumerate(reads):
        pos = plane_positions(idx, spatial, order).astype(np.float32)
        c = cx.imp.constant_tensor(f"pool_index_{k}", pos.reshape((1, 1, *pos.shape)), cx, False)
        if out is None:
            zero = cx.imp.constant_tensor(
                "pool_index_zero", np.zeros((1,) * r, np.float32), cx, False
            )
            out = c + dsl.apply("broadcast_to", zero, t)  # [N, C, ...]: shape only
        else:
            assert before is not None
            out = dsl.apply("where", dsl.apply("greater", t, before), c, out)
    assert out is not None
    channels = first.shape[1]
    if not isinstance(channels, int):
        cx.fail(f"input {first.shape}: MaxPool's Indices need a fixed channel count")
    cx.imp.plane_indices[id(out)] = PlaneIndices(channels, spatial, tiles, order)
    cx.imp.integral.add(id(out))
    return out


def check_reader(cx: NodeContext, args: list[Any]) -> PlaneIndices | None:
    """For a node reading a ``PlaneIndices`` tensor: refuse (naming the node) unless it is one
    of the readers of the module's docstring; returns what its output stands for (Identity,
    a spatial Slice) or None (a plain result: Sub, MaxUnpool)."""
    held = cx.imp.plane_indices
    marks = [held.get(id(a)) if isinstance(a, Tensor) else None for a in args]
    if not any(marks):
        return None
    op = cx.node.op_type
    why = (
        "the flat positions (n * C + c) * P + p of MaxPool's Indices hold the batch row n, "
        "which graphc does not compute; graphc follows them into Identity, Slice along the "
        "spatial axes, Sub of two of them (the row terms cancel: torch's per-plane indices) "
        "and MaxUnpool"
    )
    if op == "Identity":
        return marks[0]
    if op == "Slice" and marks[0] is not None and not any(marks[1:]):
        axes = cx.value(3) if len(args) > 3 and args[3] is not None else None
        if axes is None or not isinstance(axes, np.ndarray):
            cx.fail(f"a Slice of MaxPool's Indices without spatial axes known at import: {why}")
        r = len(args[0].shape)
        if any(int(a) % r < 2 for a in np.asarray(axes).reshape(-1)):
            cx.fail(f"a Slice of MaxPool's Indices along the batch or channel axis: {why}")
        return dataclasses.replace(marks[0], tiles=None)  # (no longer one per window)
    if op == "Sub" and marks[0] is not None and marks[1] is not None:
        a, b = marks[0], marks[1]
        if (a.channels, a.plane) != (b.channels, b.plane):
            cx.fail(
                f"MaxPool's Indices of {a.channels} x {a.plane} and {b.channels} x {b.plane} "
                "positions: their row terms do not cancel"
            )
        return None
    if op == "MaxUnpool" and marks[1] is not None and not marks[0]:
        return None
    cx.fail(f"input(s) {[n for n, m in zip(cx.node.input, marks) if m]} read here: {why}")
    return None


def max_unpool(cx: NodeContext) -> list[Any]:
    """MaxUnpool (opsets 9, 11, 22) of X [N, C, D1, ...] with MaxPool's Indices I (X's shape),
    kernel_shape, strides, pads and the optional output_shape (known at import time). See the
    module's docstring."""
    from .onnx_import import MAX_GATHER_ELEMENTS, _fmt, _reshape
    from .onnx_import_onnxops import _scatter_computed

    x, ind = cx.x(0), cx.x(1)
    r = len(x.shape)
    nsp = r - 2
    if r < 3 or "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: MaxUnpool needs [N, C, D1, ...] with N first only")
    ks = [int(v) for v in cx.attr("kernel_shape", [])]
    strides = [int(v) for v in cx.attr("strides", [1] * nsp)]
    pads = [int(v) for v in cx.attr("pads", [0] * (2 * nsp))]
    if len(ks) != nsp or len(strides) != nsp or len(pads) != 2 * nsp:
        cx.fail(f"kernel_shape {ks}, strides {strides}, pads {pads} do not fit {nsp} axes")
    if min(ks) < 1 or min(strides) < 1 or min(pads) < 0:
        cx.fail(f"kernel_shape {ks} and strides {strides} must be >= 1, pads {pads} >= 0")
    spatial = [
        (int(x.shape[2 + j]) - 1) * strides[j] - pads[j] - pads[nsp + j] + ks[j] for j in range(nsp)
    ]
    if len(cx.node.input) > 2 and cx.node.input[2]:
        shape = cx.value(2)
        if not isinstance(shape, np.ndarray):
            cx.fail("output_shape must be known at import time")
        want = [int(v) for v in np.asarray(shape).reshape(-1)]
        if len(want) != r or want[1] != x.shape[1] or min(want[2:]) < 1:
            cx.fail(f"output_shape {want} does not fit X {_fmt(x.shape)}")
        spatial = want[2:]
    if min(spatial) < 1:
        cx.fail(f"an output of spatial shape {spatial}: graphc has no dimension of size 0")
    mark = cx.imp.plane_indices.get(id(ind))
    if mark is None:
        cx.fail(
            "its indices are not a MaxPool's Indices output of this graph: their flat "
            "positions (n * C + c) * P + p hold the batch row n, which graphc does not read "
            "per row"
        )
    assert mark is not None
    if tuple(ind.shape) != tuple(x.shape):
        cx.fail(f"indices {_fmt(ind.shape)} must have X's shape {_fmt(x.shape)}")
    channels, plane = int(x.shape[1]), math.prod(spatial)
    if (mark.channels, mark.plane) != (channels, plane):
        cx.fail(
            f"the indices index {mark.channels} planes of {mark.plane} positions (the MaxPool's "
            f"input); the output has {channels} of {plane}: the flat positions would cross planes"
        )
    inner = tuple(int(v) for v in x.shape[2:])
    if mark.tiles is not None and mark.order == 0 and tuple(spatial) == mark.spatial:
        return [_unpool_tiled(cx, x, ind, mark, inner)]
    j = math.prod(inner)
    if channels * j * plane > MAX_GATHER_ELEMENTS:
        cx.fail(
            f"{channels} x {j} indices among {plane} positions per sample, from a MaxPool "
            "whose windows overlap or pad (graphc compares at most MAX_GATHER_ELEMENTS = "
            f"{MAX_GATHER_ELEMENTS} pairs; windows that tile the plane, kernel = stride, have "
            "no such limit)"
        )
    u = _reshape(cx, x, ("N", channels, j))
    t = _reshape(cx, ind, ("N", channels, j))
    cx.imp.integral.add(id(t))  # (whole plane positions)
    zero = cx.imp.constant_tensor("unpool_zero", np.zeros((1, 1, plane), np.float32), cx, False)
    one = cx.imp.constant_tensor("unpool_zero1", np.zeros((1, 1, 1), np.float32), cx, False)
    col = dsl.apply("slice", u, axes=(2,), starts=(0,), ends=(1,))
    data = zero + dsl.apply("broadcast_to", one, col)  # zeros [N, C, plane]
    out = _scatter_computed(cx, data, t, u, 2, "none")
    return [_reshape(cx, out, ("N", channels, *spatial))]


def _unpool_tiled(
    cx: NodeContext,
    x: Tensor,
    ind: Tensor,
    mark: PlaneIndices,
    inner: tuple[int, ...],
) -> Tensor:
    """MaxUnpool of windows that tile the plane: per kernel offset o, X where I names the
    position o of its window, else 0; the offsets interleaved back axis by axis (the last
    first: stacked on a new axis after it, merged with it by a reshape); positions past the
    pooled windows (the pool's floor left them out) padded with zeros."""
    from .onnx_import import _reshape

    assert mark.tiles is not None
    ks, spatial, order = mark.tiles, mark.spatial, mark.order
    nsp = len(ks)
    zero = dsl.const(0.0)
    parts: dict[tuple[int, ...], Tensor] = {}
    for off in np.ndindex(*ks):
        idx = [np.arange(inner[j]) * ks[j] + off[j] for j in range(nsp)]
        pos = plane_positions(idx, spatial, order).astype(np.float32)
        c = cx.imp.constant_tensor(
            f"unpool_pos_{'_'.join(map(str, off))}", pos.reshape((1, 1, *pos.shape)), cx, False
        )
        parts[off] = dsl.apply("where", dsl.apply("equal", ind, c), x, zero)
    # interleave: along the last spatial axis first
    cur = parts
    lead: tuple[Any, ...] = ("N", int(x.shape[1]))
    sizes = list(inner)
    for j in range(nsp - 1, -1, -1):
        nxt: dict[tuple[int, ...], Tensor] = {}
        for key in {k[:j] for k in cur}:
            group = [cur[(*key, o)] for o in range(ks[j])]
            shape = (*lead, *sizes)
            wide = [_reshape(cx, g, (*shape[: 3 + j], 1, *shape[3 + j :])) for g in group]
            st = dsl.apply("concat", *wide, axis=3 + j) if len(wide) > 1 else wide[0]
            sizes_j = list(sizes)
            sizes_j[j] = sizes[j] * ks[j]
            nxt[key] = _reshape(cx, st, (*lead, *sizes_j))
        sizes[j] = sizes[j] * ks[j]
        cur = nxt
    out = cur[()]
    after = tuple(spatial[j] - sizes[j] for j in range(nsp))
    if any(after):
        axes = tuple(2 + j for j in range(nsp))
        out = dsl.apply("pad", out, axes=axes, before=(0,) * nsp, after=after)
    return out
