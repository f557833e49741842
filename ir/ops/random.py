"""Random ops: inverted dropout with a counter-based mask (a pure function of its coordinates).

The mask bit of element ``i`` (the flat row-major index in the output) is drawn from the
SplitMix64 generator (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014; the finalizer constants are Stafford's "Mix13", as in Java's SplittableRandom)
used as a counter-based generator: the i-th output of a SplitMix64 stream is
``mix64(state0 + (i + 1) * GAMMA)``, so any element can be drawn on its own, in any order,
inside a vectorized loop::

    key  = mix64(mix64(seed + stream * GAMMA) + step * GAMMA)        (all arithmetic mod 2^64)
    u_i  = mix64(key + (i + 1) * GAMMA)
    keep_i = (u_i >> 40) >= T,   T = round(p * 2^24)                  (P(keep) = 1 - T / 2^24)

``seed`` and ``stream`` (one per dropout node) are attrs, ``step`` is the optimizer's step
counter (a runtime value), so every training step draws a fresh mask, and the reference
interpreter, the JIT and an exported training library draw the identical one (integer
arithmetic only). ``keep_mask`` below is the numpy form; ``codegen.lower`` emits the same
integer operations in LLVM IR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..graph import Graph
from ..types import INT_DTYPES, TensorType
from .base import REQUIRED, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node

GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1


def mix64(z: np.ndarray | np.uint64) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping multiplication)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return np.asarray(z ^ (z >> np.uint64(31)))


def threshold(p: float) -> int:
    """T = round(p * 2^24): an element is kept when the top 24 bits of its draw are >= T."""
    return round(float(p) * (1 << 24))


def mask_key(seed: int, stream: int, step: int) -> int:
    """The per-(seed, stream, step) key: mix64(mix64(seed + stream*GAMMA) + step*GAMMA)."""
    k = int(mix64(np.uint64((int(seed) + int(stream) * GAMMA) & MASK64)))
    return int(mix64(np.uint64((k + int(step) * GAMMA) & MASK64)))


def keep_mask(
    shape: tuple[int, ...], p: float, seed: int, stream: int, step: int, first: int = 0
) -> np.ndarray:
    """Boolean keep-mask of ``shape`` for one dropout node at one step (see the module doc);
    ``first`` is the counter index of its first element (0, or the global index of the first
    element when the rows are a slice of a larger batch, as in data-parallel training)."""
    n = int(np.prod(shape))
    key = np.uint64(mask_key(seed, stream, step))
    with np.errstate(over="ignore"):
        idx = np.arange(first + 1, first + n + 1, dtype=np.uint64)
        counters = key + idx * np.uint64(GAMMA)
    u = mix64(counters)
    return ((u >> np.uint64(40)) >= np.uint64(threshold(p))).reshape(shape)


@register
class Dropout(Op):
    """Inverted dropout in training: ``y = x * keep / (1 - p)``, keep drawn per element.

    Operands: ``x`` (any float shape), ``step`` (a scalar: the optimizer's i64 step counter;
    a float one of x's dtype is read as an integer too) and optionally ``row0`` (an integer
    scalar: the index of x's first row in the global batch, when x's rows are one rank's slice
    of it in data-parallel training; element ``i`` then draws counter
    ``i + row0 * elements_per_row``, so the mask equals the one the whole batch draws in one
    process; ignored when x has no batch dimension). Attrs: ``p`` in [0, 1), ``seed`` and
    ``stream`` (ints). The mask is
    ``keep_mask(x.shape, p, seed, stream, step)``; dropped elements give 0.

    VJP: dx = dropout(dy, step) with the same attrs, i.e. dy * keep / (1 - p) with the same mask
    (the op is linear in x). The compiler replaces the op by the identity in the evaluation
    and inference graphs (``strip_dropout``).
    """

    name = "dropout"
    arity = None  # x, step and the optional row0 (checked in infer)
    needs_index = True
    attrs = {"p": REQUIRED, "seed": 0, "stream": 0}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        if len(types) not in (2, 3):
            raise ShapeError(
                f"dropout: expects 2 or 3 operands (x, step[, row0]), got {len(types)}"
            )
        x = types[0]
        same_float_dtype(self.name, [x] + [t for t in types[1:] if t.dtype not in INT_DTYPES])
        for what, t in zip(("step", "row0"), types[1:]):
            if t.shape != ():
                raise ShapeError(f"dropout: the {what} operand must be a scalar, got {t}")
        p = attrs.get("p")
        if not isinstance(p, float | int) or isinstance(p, bool) or not 0 <= p < 1:
            raise ShapeError(f"dropout: p must be a number in [0, 1), got {p!r}")
        for k in ("seed", "stream"):
            v = attrs.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
                raise ShapeError(f"dropout: {k} must be an int in [0, 2^63), got {v!r}")
        return x

    def reference(self, x, step, row0=None, *, p, seed=0, stream=0):
        first = int(row0) * int(np.prod(x.shape[1:])) if row0 is not None and x.ndim else 0
        keep = keep_mask(x.shape, p, seed, stream, int(step), first if x.ndim else 0)
        return np.where(keep, x * (1.0 / (1.0 - p)), 0.0).astype(x.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        if b.type_of(dy).shape != node.type.shape:
            dy = b.broadcast_to(dy, node.name)
        return (b.dropout(dy, *node.inputs[1:], **dict(node.attrs)),) + (None,) * (
            len(node.inputs) - 1
        )


def strip_dropout(g: Graph) -> Graph:
    """The evaluation/inference form of ``g``: every dropout becomes the identity.

    Uses of a dropout value are redirected to its input (a dropout that is a graph output
    becomes ``reshape`` to its own shape, an identity that keeps the output's name); the step
    counter it read is dropped when nothing else reads it. Returns ``g`` itself when it has no
    dropout.
    """
    from ..graph import make_node

    if not any(n.op == "dropout" for n in g.nodes):
        return g
    alias: dict[str, str] = {}
    nodes = []
    outputs = set(g.outputs)
    for n in g.nodes:
        ins = tuple(alias.get(i, i) for i in n.inputs)
        if n.op == "dropout":
            if n.name in outputs:
                nodes.append(
                    make_node(
                        n.name,
                        "reshape",
                        ins[:1],
                        n.type,
                        {"shape": n.type.shape},
                        section=n.section,
                        loc=n.loc,
                        origin="dropout at evaluation",
                    )
                )
            else:
                alias[n.name] = ins[0]
            continue
        nodes.append(n.with_(inputs=ins) if ins != n.inputs else n)
    used = {i for n in nodes for i in n.inputs} | set(g.outputs) | {x for u in g.updates for x in u}
    nodes = [n for n in nodes if not (n.op == "state" and n.name == "step" and n.name not in used)]
    return g.with_(nodes=tuple(nodes))


def number_dropout_streams(g: Graph) -> Graph:
    """``g`` with a ``stream`` attr on every dropout node that has none, derived from the
    graph's structure only (never from names, which may come from a process-wide counter).

    A node's structural digest is SHA-256 over its op, type, attrs (``stream`` left out) and
    its inputs' digests, with no names (a Merkle hash of the subgraph it depends on); the
    dropout's stream is the low 63 bits of SHA-256(its digest, k), k counting earlier dropouts
    of ``g`` with the same digest (two dropouts of one value get different streams). So the
    same network declared twice draws the same masks, and a checkpoint of one loads into the
    other. Dropouts given a stream (a user-named dropout: CRC-32 of its name) keep it.
    Returns ``g`` itself when every dropout has a stream.
    """
    import hashlib

    if all(n.op != "dropout" or "stream" in dict(n.attrs) for n in g.nodes):
        return g
    digest: dict[str, bytes] = {}
    seen: dict[bytes, int] = {}
    nodes = []
    for n in g.nodes:
        attrs = tuple((k, v) for k, v in n.attrs if k != "stream")
        item = (n.op, str(n.type), attrs, [digest.get(i, b"").hex() for i in n.inputs])
        d = hashlib.sha256(repr(item).encode()).digest()
        digest[n.name] = d
        if n.op == "dropout" and "stream" not in dict(n.attrs):
            k = seen.get(d, 0)
            seen[d] = k + 1
            h = hashlib.sha256(d + k.to_bytes(8, "little")).digest()
            stream = int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
            n = n.with_(attrs=tuple(sorted(n.attrs + (("stream", stream),))))
        nodes.append(n)
    return g.with_(nodes=tuple(nodes))
