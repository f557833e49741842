"""Ranges of the integer values an imported ONNX graph computes (used by graphc.onnx_import).

graphc holds ONNX's integers as float32: exact for whole numbers of magnitude below 2**24,
rounded beyond. ONNX Runtime computes them in int32/int64 and raises on a Gather index outside
its table, where graphc's lookup (a one-hot product) would give a row of zeros. So every
integer value the graph computes from its integer inputs, and every index it computes for a
lookup, is proven here to stay exact and in range, given the values the native entries let
through for each integer input (its ``index_rows`` B: whole numbers in -B .. B-1, checked by
every entry before it runs; codegen/checks.py). Where the proof needs a smaller B, the input's
B is lowered to the largest that proves it; where no B does, the import is refused naming the
node.

A judgement (documented in ``from_onnx``): lowering an input's B refuses, at run time and
naming the input, the row and the value, some inputs ONNX Runtime would accept (an id past the
table that an offset brings back in range, a value whose product overflows float32 but not
int64). A named refusal is preferred to a silently wrong row.

Two provers, over graphc's IR ops (the DSL tensors the importer built):

- ``interval``: interval arithmetic (Moore's), sound for every op it knows, from the inputs'
  ranges, constants' values and op semantics (argmax in 0..size-1, comparisons in 0..1);
  any op it does not know, a trainable weight or a float input gives "unknown".
- ``scan``: exact evaluation, for an index that is an elementwise function of one integer
  input and scalar constants (tf2onnx's Keras Embedding: m * (ids + V) + (1 - m) * ids with
  m = [ids < 0], whose two terms intervals cannot correlate): the function is evaluated in
  float32 by the ops' numpy references on every whole number from 0 up and from -1 down until
  the first that fails, giving the largest B with all of -B .. B-1 valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir.ops import MOVEMENT_OPS, OPS, POINTWISE_OPS

EXACT = 2**24  # float32 holds every whole number of magnitude below it (not 2**24 + 1)
SCAN_CHUNK = 1 << 20  # candidates evaluated at once by ``scan``

Interval = tuple[float, float]


def ancestors(t: Any) -> list[Any]:
    """The tensors ``t`` is computed from, ``t`` included, parents before children."""
    out: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(t, False)]
    while stack:
        u, done = stack.pop()
        if done:
            out.append(u)
            continue
        if id(u) in seen:
            continue
        seen.add(id(u))
        stack.append((u, True))
        stack.extend((p, False) for p in u.parents if id(p) not in seen)
    return out


def _operands(t: Any) -> list[Any]:
    by_name = {p.name: p for p in t.parents}
    return [by_name[i] for i in t.node.inputs]


def _count(shape: tuple) -> int | None:
    if any(not isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


def _hull(*iv: Interval) -> Interval:
    return (min(a for a, _ in iv), max(b for _, b in iv))


def _mul(a: Interval, b: Interval) -> Interval | None:
    ps = [x * y for x in a for y in b]
    if any(math.isnan(p) for p in ps):
        return None
    return (min(ps), max(ps))


def _div(a: Interval, b: Interval) -> Interval | None:
    if b[0] <= 0 <= b[1]:
        return None
    return _mul(a, (1.0 / b[1], 1.0 / b[0]))


# The importer's composite integer operators, by the tensor that holds their result: (kind,
# operands). Their internal corrections (q - [m x < 0] s, ...) are exact by construction, but
# intervals cannot see that they cancel, so the result's range is taken from the operator's
# meaning instead: "floor" / "ceil" (x), "idiv" (x, y: x / y truncated), "mod" (x, y),
# "index" (size: a position 0 .. size - 1).
Rules = dict[int, tuple[str, tuple[Any, ...]]]


def interval(
    t: Any, bounds: dict[int, int], memo: dict[int, Interval | None], rules: Rules | None = None
) -> Interval | None:
    """An interval holding every value of tensor ``t`` (None: unknown), for inputs whose ids
    are in ``bounds`` (input id -> B: whole numbers in -B .. B-1)."""
    for u in ancestors(t):
        if id(u) not in memo:
            rule = (rules or {}).get(id(u))
            memo[id(u)] = (
                _interval_of(u, bounds, memo) if rule is None else _rule_interval(rule, memo)
            )
    return memo[id(t)]


def _rule_interval(rule: tuple[str, tuple[Any, ...]], memo: dict) -> Interval | None:
    kind, operands = rule
    if kind == "index":  # a position along an axis of a known size (TopK's indices)
        return (0.0, float(operands[0] - 1))
    xs = [memo.get(id(o)) for o in operands]
    if any(x is None for x in xs):
        return None
    if kind in ("floor", "ceil"):
        f = math.floor if kind == "floor" else math.ceil
        lo, hi = xs[0]
        return None if math.isinf(lo) or math.isinf(hi) else (float(f(lo)), float(f(hi)))
    if kind == "idiv":
        d = operands[1]
        x, y = xs
        if y[0] <= 0 <= y[1]:
            if d.node.op != "state" or d.value is None or not (d.value != 0).all():
                return None
            m = math.floor(max(abs(x[0]), abs(x[1])) / float(np.min(np.abs(d.value))))
            return (float(-m), float(m))
        q = _div(x, y)
        return None if q is None else (float(math.trunc(q[0])), float(math.trunc(q[1])))
    if kind in ("mod", "imod"):  # |x mod y| < |y|: at most |y| - 1 for integers
        m = max(abs(xs[1][0]), abs(xs[1][1])) - (1 if kind == "imod" else 0)
        return (-m, m)
    return None


def _interval_of(t: Any, bounds: dict[int, int], memo: dict) -> Interval | None:
    n = t.node
    op = n.op
    if op == "input":
        b = bounds.get(id(t))
        return None if b is None else (float(-b), float(b - 1))
    if op == "const":
        v = float(n.attr("value"))
        return None if math.isnan(v) else (v, v)
    if op == "state":
        if t.value is None or np.size(t.value) == 0 or np.isnan(t.value).any():
            return None
        return (float(np.min(t.value)), float(np.max(t.value)))
    if op in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
        return (0.0, 1.0)
    if op == "argmax":
        size = t.parents[0].type.shape[int(n.attr("axis", -1))]
        return (0.0, float(size - 1)) if isinstance(size, int) else None
    xs = [memo.get(id(p)) for p in _operands(t)]
    if op == "broadcast_to":  # the second operand gives the shape only (its values unread)
        return xs[0]
    if op == "where":  # (the condition's value does not matter)
        return None if xs[1] is None or xs[2] is None else _hull(xs[1], xs[2])
    if any(x is None for x in xs):
        return None
    if op in MOVEMENT_OPS and op not in ("concat", "pad"):
        return xs[0]
    if op == "concat":
        return _hull(*xs)
    if op == "pad":
        return _hull(xs[0], (0.0, 0.0))
    if op == "cast":
        return xs[0]
    if op == "add":
        return (xs[0][0] + xs[1][0], xs[0][1] + xs[1][1])
    if op == "sub":
        return (xs[0][0] - xs[1][1], xs[0][1] - xs[1][0])
    if op == "mul":
        return _mul(xs[0], xs[1])
    if op == "div":
        d = _operands(t)[1]
        if d.node.op == "state" and d.value is not None and (d.value != 0).all():
            # divisors of both signs, none 0: |x / d| <= max|x| / min|d|
            m = max(abs(xs[0][0]), abs(xs[0][1])) / float(np.min(np.abs(d.value)))
            return (-m, m) if xs[1][0] < 0 < xs[1][1] else _div(xs[0], xs[1])
        return _div(xs[0], xs[1])
    if op == "neg":
        return (-xs[0][1], -xs[0][0])
    if op in ("abs", "square"):
        lo, hi = xs[0]
        m = max(abs(lo), abs(hi))
        low = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        return (low, m) if op == "abs" else (low * low, m * m)
    if op == "relu":
        return (max(xs[0][0], 0.0), max(xs[0][1], 0.0))
    if op == "maximum":
        return (max(xs[0][0], xs[1][0]), max(xs[0][1], xs[1][1]))
    if op == "minimum":
        return (min(xs[0][0], xs[1][0]), min(xs[0][1], xs[1][1]))
    if op == "clip":
        lo, hi = float(n.attr("min")), float(n.attr("max"))
        return (min(max(xs[0][0], lo), hi), min(max(xs[0][1], lo), hi))
    if op in ("max", "min", "mean"):
        return xs[0]
    if op == "sum":
        shape_in, shape_out = tuple(t.parents[0].type.shape), tuple(t.type.shape)
        if shape_in[:1] == ("N",) and shape_out[:1] == ("N",):  # per sample: N not summed
            shape_in, shape_out = shape_in[1:], shape_out[1:]
        k_in, k_out = _count(shape_in), _count(shape_out)
        if k_in is None or k_out is None:
            return None
        k = k_in // k_out
        return (min(k * xs[0][0], xs[0][0]), max(k * xs[0][1], xs[0][1]))
    if op == "matmul":
        a, b = _operands(t)
        ta = bool(n.attr("transpose_a"))
        k = a.type.shape[-2 if ta else -1]
        prod = _mul(xs[0], xs[1])
        if not isinstance(k, int) or prod is None:
            return None
        return (min(k * prod[0], prod[0]), max(k * prod[1], prod[1]))
    return None


def span(rows: int | tuple[int, int]) -> tuple[int, int]:
    """The indices a lookup accepts: -V .. V-1 for a table of V rows (Gather counts negative
    ones from the end), or an explicit (lo, hi) (ArrayFeatureExtractor's 0 .. C-1)."""
    return (-rows, rows - 1) if isinstance(rows, int) else rows


def dependent(dag: list[Any], sources: set[int]) -> set[int]:
    """ids of the tensors of ``dag`` (parents first) computed from one of ``sources``."""
    dep = set(sources)
    for u in dag:
        if any(id(p) in dep for p in u.parents):
            dep.add(id(u))
    return dep


def proves(
    dag: list[Any],
    bounds: dict[int, int],
    rows: int | tuple[int, int] | None,
    integral: set[int],
    rules: Rules | None = None,
) -> tuple[bool, Interval | None]:
    """Whether every integer value in ``dag`` (ids in ``integral``, and the last one) computed
    from a bounded input stays below 2**24 in magnitude (exact in float32) and, with ``rows``,
    the last one (an index) lies in span(rows); and that last one's interval. (Float
    values computed from integers, such as a mask's -inf, are not integers: not bounded.)"""
    memo: dict[int, Interval | None] = {}
    last = interval(dag[-1], bounds, memo, rules)
    dep = dependent(dag, set(bounds))
    for u in dag:
        watched = id(u) in integral or u is dag[-1]
        if watched and id(u) in dep and u.node.op != "input":
            iv = memo.get(id(u))
            # a sound interval within +-2**24: every whole number in it is a float32
            if iv is None or not -EXACT <= iv[0] <= iv[1] <= EXACT:
                return False, last
    if rows is not None and (
        last is None or not span(rows)[0] <= last[0] <= last[1] <= span(rows)[1]
    ):
        return False, last
    return True, last


def largest_bound(
    dag: list[Any],
    inputs: list[Any],
    start: dict[int, int],
    rows: int | tuple[int, int] | None,
    integral: set[int],
    rules: Rules | None = None,
) -> int:
    """The largest s (0 if none) such that ``proves`` holds with each input's B lowered to
    min(start B, s): a binary search (the intervals grow with s)."""
    top = max(start[id(x)] for x in inputs)

    def ok(s: int) -> bool:
        bounds = {id(x): min(start[id(x)], s) for x in inputs}
        return proves(dag, bounds, rows, integral, rules)[0]

    if ok(top):
        return top
    lo, hi = 0, top  # ok(lo) assumed (s = 0: no value passes the entry's check), not ok(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def scan_function(
    dag: list[Any], x: Any, integral: set[int]
) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """The elementwise function from input ``x``'s values to the integer values of ``dag``
    computed from it (ids in ``integral``, in dag order, the last value of ``dag`` last),
    evaluated in float32 by the ops' numpy references; None
    where the values are no such function: another non-constant source, a constant of more
    than one element, an op that is neither pointwise nor a movement, or a pointwise op
    combining operands of which one went through a movement (elements of other positions)."""
    dep = dependent(dag, {id(x)})
    moved: set[int] = set()
    consts: dict[int, np.ndarray] = {}
    for u in dag:
        op = u.node.op
        if id(u) not in dep:
            if op == "const":
                consts[id(u)] = np.float32(u.node.attr("value"))
            elif op == "state" and u.value is not None and np.size(u.value) == 1:
                consts[id(u)] = np.float32(np.ravel(u.value)[0])
            elif op in POINTWISE_OPS and all(id(p) in consts for p in u.parents):
                with np.errstate(all="ignore"):
                    v = OPS[op].evaluate(
                        *(consts[id(p)] for p in _operands(u)), **dict(u.node.attrs)
                    )
                consts[id(u)] = np.float32(np.ravel(v)[0]) if np.size(v) == 1 else None
                if consts[id(u)] is None:
                    return None
            else:
                return None
            continue
        if u is x:
            continue
        if op in MOVEMENT_OPS and op not in ("concat", "pad"):
            moved.add(id(u))
            continue
        if op not in POINTWISE_OPS:
            return None
        ds = [p for p in u.parents if id(p) in dep]
        if len(ds) > 1 and any(id(p) in moved for p in ds):
            return None
        if any(id(p) in moved for p in ds):
            moved.add(id(u))
    order = [u for u in dag if id(u) in dep]

    def run(v: np.ndarray) -> list[np.ndarray]:
        env: dict[int, np.ndarray] = {id(x): v}
        out = [v]
        for u in order:
            if u is x:
                continue
            args = [env[id(p)] if id(p) in env else consts[id(p)] for p in _operands(u)]
            if u.node.op in MOVEMENT_OPS:
                r = args[0]
            else:
                with np.errstate(all="ignore"):
                    r = OPS[u.node.op].evaluate(*args, **dict(u.node.attrs))
                r = np.asarray(r, dtype=np.float32)
            env[id(u)] = r
            if id(u) in integral or u is dag[-1]:
                out.append(r)
        return out

    return run


def scan_bound(
    run: Callable[[np.ndarray], list[np.ndarray]], top: int, rows: int | tuple[int, int]
) -> int:
    """The largest B <= ``top`` such that for every whole number v in -B .. B-1 the values
    ``run`` computes from v are finite and below 2**24 in magnitude, and the last (an index)
    is a whole number in span(rows)."""
    lo_ok, hi_ok = span(rows)

    def first_bad(vals: np.ndarray) -> int | None:
        vs = run(vals.astype(np.float32))
        ok = np.ones(vals.shape, bool)
        for r in vs[1:]:
            r = np.broadcast_to(r, vals.shape)
            ok &= np.isfinite(r) & (np.abs(r) < EXACT)
        last = np.broadcast_to(vs[-1], vals.shape)
        ok &= (np.floor(last) == last) & (last >= lo_ok) & (last <= hi_ok)
        bad = np.flatnonzero(~ok)
        return None if bad.size == 0 else int(bad[0])

    pos = top
    for lo in range(0, top, SCAN_CHUNK):
        vals = np.arange(lo, min(lo + SCAN_CHUNK, top), dtype=np.float64)
        k = first_bad(vals)
        if k is not None:
            pos = lo + k
            break
    neg = top
    for hi in range(0, top, SCAN_CHUNK):
        vals = -1.0 - np.arange(hi, min(hi + SCAN_CHUNK, top), dtype=np.float64)
        k = first_bad(vals)
        if k is not None:
            neg = hi + k  # -1 - neg is the first bad value below 0
            break
    return min(pos, neg)
