"""Ranges of the integer values an imported ONNX graph computes (used by graphc.onnx_import).

graphc holds ONNX's integers as float32: exact for whole numbers of magnitude below 2**24,
rounded beyond. ONNX Runtime computes them in int32/int64 and raises on a Gather index outside
its table, where graphc's lookup (a one-hot product) would give a row of zeros. So every
integer value the graph computes from its integer inputs, and every index it computes for a
lookup, is proven here to stay exact and in range, given the values the native entries let
through for each integer input (its range lo .. hi of whole numbers, ``index_low`` and
``index_rows`` - 1, checked by every entry before it runs; codegen/checks.py). Where the proof
needs a narrower range, the input's range is narrowed to one that proves it (``fit_ranges``:
the values an offset such as ids - 1 or ids + 100 brings into the table, not a range around 0
only); where none does, the import is refused naming the node.

A judgement (documented in ``from_onnx``): narrowing an input's range refuses, at run time and
naming the input, the row and the value, some inputs ONNX Runtime would accept (ids whose
computed indices leave the table and come back by a later offset that the intervals cannot
follow, a value whose product overflows float32 but not int64). A named refusal is preferred to
a silently wrong row.

Two provers, over graphc's IR ops (the DSL tensors the importer built):

- ``interval``: interval arithmetic (Moore's), sound for every op it knows, from the inputs'
  ranges, constants' values and op semantics (argmax in 0..size-1, comparisons in 0..1);
  any op it does not know, a trainable weight or a float input gives "unknown". ``narrow``
  runs it backwards (HC4's revise step: a + b in R gives a in R - b, ...) from the table's
  rows to the inputs, giving the candidate range ``fit_ranges`` checks and shrinks.
- ``scan``: exact evaluation, for an index that is an elementwise function of one integer
  input and scalar constants (tf2onnx's Keras Embedding: m * (ids + V) + (1 - m) * ids with
  m = [ids < 0], whose two terms intervals cannot correlate): the function is evaluated in
  float32 by the ops' numpy references on every whole number from an anchor (0 where it is
  valid, else a value ``narrow`` finds) up and down until the first that fails, giving the
  run of consecutive valid values around the anchor.
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
Ranges = dict[int, tuple[int, int]]  # input id -> (lo, hi): the whole numbers lo .. hi


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
# meaning instead: "floor" / "ceil" (x), "idiv" (x, y: x / y truncated), "iquot" (x, y: the
# float quotient x / y of whole numbers, |x / y| <= |x| for a divisor other than 0, which is
# undefined in ONNX's integer Div and Mod: the premise holds where the importer refuses a 0 (a
# constant divisor, or one that moves integer inputs: onnx_import._refuse_zero_divisor); a
# divisor computed otherwise (b + 1) that holds 0 gives inf or NaN, outside these ranges), "mod" / "imod" (x, y, fmod: the remainder of floats /
# integers, the sign of x for fmod=1, of y for fmod=0), "index" (size: a position 0 .. size
# - 1).
Rules = dict[int, tuple[str, tuple[Any, ...]]]


def interval(
    t: Any, bounds: Ranges, memo: dict[int, Interval | None], rules: Rules | None = None
) -> Interval | None:
    """An interval holding every value of tensor ``t`` (None: unknown), for inputs whose ids
    are in ``bounds`` (input id -> (lo, hi): whole numbers in lo .. hi)."""
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
    xs = [memo.get(id(o)) for o in operands if not isinstance(o, bool)]
    if any(x is None for x in xs):
        return None
    if kind in ("floor", "ceil"):
        f = math.floor if kind == "floor" else math.ceil
        lo, hi = xs[0]
        return None if math.isinf(lo) or math.isinf(hi) else (float(f(lo)), float(f(hi)))
    if kind in ("idiv", "iquot"):
        d = operands[1]
        x, y = xs
        if y[0] <= 0 <= y[1]:
            if d.node.op == "state" and d.value is not None and (d.value != 0).all():
                m = max(abs(x[0]), abs(x[1])) / float(np.min(np.abs(d.value)))
                q = (-m, m)
            else:  # a whole-number divisor other than 0: in y[0] .. -1 or 1 .. y[1]
                sides = [(y[0], min(y[1], -1.0)), (max(y[0], 1.0), y[1])]
                parts = [_div(x, b) for b in sides if b[0] <= b[1]]
                if not parts or any(p is None for p in parts):
                    return None
                q = _hull(*parts)
        else:
            q = _div(x, y)
        if q is None or kind == "iquot":
            return q
        return (float(math.trunc(q[0])), float(math.trunc(q[1])))
    if kind in ("mod", "imod"):  # |x mod y| < |y|: at most |y| - 1 for integers
        (x, y), fmod = xs, len(operands) > 2 and operands[2]
        one = 1 if kind == "imod" else 0  # |r| < |y|: |y| - 1 for whole numbers
        m = max(abs(y[0]), abs(y[1])) - one
        # the sign of the result: the dividend's (fmod=1, also |r| <= |x|) or the divisor's
        # (fmod=0), so that an unsigned x mod y stays in 0 .. max(y) - 1
        s = x if fmod else y
        lo = 0.0 if s[0] >= 0 else (max(s[0], -m) if fmod else max(s[0] + one, -m))
        hi = 0.0 if s[1] <= 0 else (min(s[1], m) if fmod else min(s[1] - one, m))
        return (lo, hi)
    return None


def _interval_of(t: Any, bounds: Ranges, memo: dict) -> Interval | None:
    n = t.node
    op = n.op
    if op == "input":
        b = bounds.get(id(t))
        return None if b is None else (float(b[0]), float(b[1]))
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
    bounds: Ranges,
    rows: int | tuple[int, int] | None,
    integral: set[int],
    rules: Rules | None = None,
    rounded: bool = False,
) -> tuple[bool, Interval | None]:
    """Whether every integer value in ``dag`` (ids in ``integral``, and the last one) computed
    from a bounded input stays below 2**24 in magnitude (exact in float32) and, with ``rows``,
    the last one (an index) lies in span(rows); and that last one's interval. (Float
    values computed from integers, such as a mask's -inf, are not integers: not bounded.)
    ``rounded``: the last value need not be exact, only in span(rows) (one rounded product
    read as a float: Importer.read_as_float_only)."""
    memo: dict[int, Interval | None] = {}
    last = interval(dag[-1], bounds, memo, rules)
    dep = dependent(dag, set(bounds))
    for u in dag:
        watched = (id(u) in integral or u is dag[-1]) and not (rounded and u is dag[-1])
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


class _Empty(Exception):
    """No value of the inputs meets a requirement (``narrow``)."""


def narrow(
    dag: list[Any],
    bounds: Ranges,
    target: tuple[int, int] | None,
    integral: set[int],
    rules: Rules | None = None,
    rounded: bool = False,
) -> Ranges | None:
    """The inputs' ranges cut to the values that can meet the requirements: the last value of
    ``dag`` in ``target`` (both ends included; None: no such requirement) and every integer
    value (ids in ``integral``, and the last one unless ``rounded``) within +-2**24. The requirements run
    backwards through the ops whose inverse interval is known (HC4's revise step:
    a + b in R gives a in R - iv(b); a - b, -a, a * c and a / c for c not spanning 0, casts
    and movements), each side taking the other's forward interval. One range holds for every
    element of an input, so a requirement on the elements a movement picks is one on all.
    The cut is a candidate for ``proves`` to check (necessary where the ops act elementwise on
    the inputs; elsewhere it may cut more than needed: a narrower range, still sound); None
    where no value of some input meets them."""
    memo: dict[int, Interval | None] = {}
    interval(dag[-1], bounds, memo, rules)
    dep = dependent(dag, set(bounds))
    need: dict[int, Interval] = {}

    def require(u: Any, r: Interval) -> None:
        if any(math.isnan(v) for v in r):
            return
        cur = need.get(id(u), (-math.inf, math.inf))
        lo, hi = max(cur[0], r[0]), min(cur[1], r[1])
        if lo > hi:
            raise _Empty
        need[id(u)] = (lo, hi)

    try:
        for u in dag:
            last = u is dag[-1]
            watched = (id(u) in integral or last) and not (rounded and last)
            if id(u) in dep and watched and u.node.op != "input":
                require(u, (-EXACT, EXACT))
        if target is not None:
            require(dag[-1], (float(target[0]), float(target[1])))
        for u in reversed(dag):
            r = need.get(id(u))
            op = u.node.op
            if r is None or id(u) not in dep or id(u) in (rules or {}) or op == "input":
                continue
            ps = _operands(u)
            xs = [memo.get(id(p)) for p in ps]
            # (one range holds for every element of an input: a requirement on the elements a
            # movement picks is one on all)
            if (op in MOVEMENT_OPS and op not in ("concat", "pad")) or op in (
                "cast",
                "broadcast_to",
            ):
                require(ps[0], r)
            elif op == "concat":
                for p in ps:
                    require(p, r)
            elif op == "neg":
                require(ps[0], (-r[1], -r[0]))
            elif op in ("add", "sub") and xs[0] is not None and xs[1] is not None:
                a, b = xs
                if op == "add":
                    require(ps[0], (r[0] - b[1], r[1] - b[0]))
                    require(ps[1], (r[0] - a[1], r[1] - a[0]))
                else:
                    require(ps[0], (r[0] + b[0], r[1] + b[1]))
                    require(ps[1], (a[0] - r[1], a[1] - r[0]))
            elif op in ("mul", "div"):
                for k in (0, 1) if op == "mul" else (0,):
                    c = xs[1 - k]
                    if c is None or c[0] <= 0 <= c[1]:
                        continue
                    got = _div(r, c) if op == "mul" else _mul(r, c)
                    if got is not None:
                        require(ps[k], got)
    except _Empty:
        return None
    out: Ranges = {}
    for x, (lo, hi) in bounds.items():
        r = need.get(x, (-math.inf, math.inf))  # (no requirement reached x: its own range)
        lo = max(lo, math.ceil(r[0])) if math.isfinite(r[0]) else lo
        hi = min(hi, math.floor(r[1])) if math.isfinite(r[1]) else hi
        if lo > hi:
            return None
        out[x] = (int(lo), int(hi))
    return out


def fit_ranges(
    dag: list[Any],
    inputs: list[Any],
    start: Ranges,
    rows: int | tuple[int, int] | None,
    integral: set[int],
    rules: Rules | None = None,
    rounded: bool = False,
) -> Ranges | None:
    """Ranges of ``inputs``, within their ``start`` ranges, for which ``proves`` holds (with
    ``rounded``), or None
    where none with at least one value each does: ``start`` itself where it proves; else the
    ranges ``narrow`` cuts from it; else those cut ranges shrunk around an anchor each to
    a - s .. a + s - 1 with the largest s that proves (a binary search: the intervals grow
    with s). An input's anchor is 0 where ``narrow``, with the earlier inputs pinned to their
    anchors, keeps 0, else the middle of what it keeps (ids + 100 - o into 10 rows: ids
    around 0, o around 100)."""
    if proves(dag, start, rows, integral, rules, rounded)[0]:
        return start
    target = None if rows is None else span(rows)
    cut = narrow(dag, start, target, integral, rules, rounded)
    if cut is None:
        return None
    if proves(dag, cut, rows, integral, rules, rounded)[0]:
        return cut
    anchor: dict[int, int] = {}
    for x in inputs:  # 0 where the cut with the earlier anchors pinned keeps it, else its middle
        pins = {k: (a, a) for k, a in anchor.items()}
        pinned = narrow(dag, {**cut, **pins}, target, integral, rules, rounded)
        lo, hi = cut[id(x)] if pinned is None else pinned[id(x)]
        anchor[id(x)] = 0 if lo <= 0 <= hi else (lo + hi) // 2

    def shrunk(s: int) -> Ranges:
        return {
            k: (max(lo, anchor[k] - s), min(hi, anchor[k] + s - 1)) for k, (lo, hi) in cut.items()
        }

    top = max(max(anchor[k] - lo, hi + 1 - anchor[k]) for k, (lo, hi) in cut.items())
    lo_s, hi_s = 0, top + 1  # s = 0: no value passes (assumed), s = top + 1: cut (fails)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        lo_s, hi_s = (
            (mid, hi_s)
            if proves(dag, shrunk(mid), rows, integral, rules, rounded)[0]
            else (lo_s, mid)
        )
    if lo_s < 1:
        return None
    out = shrunk(lo_s)
    return None if any(lo > hi for lo, hi in out.values()) else out


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


def scan_range(
    run: Callable[[np.ndarray], list[np.ndarray]],
    lo: int,
    hi: int,
    rows: int | tuple[int, int],
    anchor: int,
) -> tuple[int, int] | None:
    """The run of consecutive whole numbers v around ``anchor``, within lo .. hi, such that the
    values ``run`` computes from v are finite and below 2**24 in magnitude and the last (an
    index) is a whole number in span(rows); None where ``anchor`` itself fails."""
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

    if first_bad(np.array([anchor], np.float64)) is not None:
        return None
    top = hi
    for at in range(anchor, hi + 1, SCAN_CHUNK):
        k = first_bad(np.arange(at, min(at + SCAN_CHUNK, hi + 1), dtype=np.float64))
        if k is not None:
            top = at + k - 1
            break
    bottom = lo
    for at in range(anchor - 1, lo - 1, -SCAN_CHUNK):
        k = first_bad(np.arange(at, max(at - SCAN_CHUNK, lo - 1), -1, dtype=np.float64))
        if k is not None:
            bottom = at - k + 1
            break
    return bottom, top
