"""ONNX import of the recurrent operators LSTM, GRU and RNN, unrolled over their static
sequence length (the rules of ``graphc.onnx_import.OPS`` for those three operators).

Definitions: https://onnx.ai/onnx/operators/onnx__LSTM.html, onnx__GRU.html and onnx__RNN.html
(opsets 7, 14 and 22; opset 14 adds ``layout``). Every attribute is read: ``direction``
(forward, reverse, bidirectional), ``hidden_size``, ``activations`` with ``activation_alpha`` /
``activation_beta`` (the spec's eleven functions, consumed in order as ONNX Runtime does: a
function that takes no alpha or beta consumes none), ``clip`` (of every gate's input before its
activation), ``layout``, GRU's ``linear_before_reset`` and LSTM's ``input_forget`` (f = 1 - i,
as ONNX Runtime). Optional inputs B, sequence_lens, initial_h, initial_c and P may be absent
(an empty name), and the outputs Y, Y_h and Y_c are built only where the graph reads them.

The sequence length T must be fixed: the recurrence is written out step by step with graphc's
ops (a 2-D matmul per step and gate group, slices, elementwise ops), so autodiff, fusion and
code generation are graphc's own, and W, R, B and P train when they are initializers. The
input projection X W^T of every step and both directions is one GEMM where the batch size is
fixed, one GEMM per step where it is graphc's symbolic N (N stays whole and first).

sequence_lens (a graph input or a constant, [batch] integers): a row's state stops changing
after its length (reverse: starts at its last element), so Y_h / Y_c hold its state at its
last element, and Y is 0 past the length, as ONNX Runtime computes it; a row of length 0 has
Y_h = Y_c = 0, not its initial state (ONNX Runtime's LSTM, GRU and RNN kernels zero them).

The batch axis N may sit where the ONNX layout puts it: torch's exports transpose a
batch-first input to [T, N, C] for layout 0 and read [T, D, N, H] back; such values are layout
views (``graphc.onnx_layout``), which X, initial_h and initial_c may be, and Y, Y_h, Y_c are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dsl, onnx_layout, recurrent
from .dsl import Tensor
from .recurrent import _concat, _reshape, _slice

if TYPE_CHECKING:
    from .onnx_import import NodeContext

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "RNN": ("Tanh",),
}
# lower-case name -> (alpha default, beta default); None: the function takes no such value.
# Defaults are ONNX Runtime's (those of the operators of the same name where ONNX has one).
ACTIVATIONS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None),
    "tanh": (None, None),
    "sigmoid": (None, None),
    "affine": (1.0, 0.0),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}
ATTRS = (
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "layout",
)
RULE_ATTRS = {
    "LSTM": (*ATTRS, "input_forget"),
    "GRU": (*ATTRS, "linear_before_reset"),
    "RNN": ATTRS,
}

Activation = Callable[[Tensor], Tensor]


def _activation(name: str, alpha: float | None, beta: float | None) -> Activation:
    """The function ``name`` of the spec's list (x -> y, elementwise)."""
    a = 0.0 if alpha is None else float(alpha)
    b = 0.0 if beta is None else float(beta)
    if name == "relu":
        return dsl.relu
    if name == "tanh":
        return dsl.tanh
    if name == "sigmoid":
        return dsl.sigmoid
    if name == "affine":
        return lambda x: a * x + b
    if name == "leakyrelu":  # x >= 0 ? x : alpha x, exact for any alpha
        return lambda x: dsl.relu(x) - a * dsl.relu(-x)
    if name == "thresholdedrelu":  # x >= alpha ? x : 0
        return lambda x: dsl.apply(
            "where", dsl.apply("greater_equal", x, dsl.const(a)), x, dsl.const(0.0)
        )
    if name == "scaledtanh":
        return lambda x: a * dsl.tanh(b * x)
    if name == "hardsigmoid":  # max(0, min(1, alpha x + beta))
        from .onnx_import import native

        if native("hard_sigmoid"):
            return lambda x: dsl.apply("hard_sigmoid", x, alpha=a, beta=b)
        return lambda x: 1.0 - dsl.relu(1.0 - dsl.relu(a * x + b))
    if name == "elu":
        from .onnx_import import _elu_core

        return lambda x: _elu_core(x, a)
    if name == "softsign":
        from .onnx_import import _abs

        return lambda x: x / (_abs(x) + 1.0)
    return dsl.softplus  # "softplus"


def _activations(cx: NodeContext, op: str, dirs: int) -> list[list[Activation]]:
    """The activation functions of each direction, from ``activations`` / ``activation_alpha``
    / ``activation_beta`` (names case-insensitive, as ONNX Runtime)."""
    per = len(DEFAULT_ACTIVATIONS[op])
    names = cx.attr("activations")
    if names is None:
        names = list(DEFAULT_ACTIVATIONS[op]) * dirs
    if len(names) != per * dirs:
        cx.fail(
            f"activations lists {len(names)} functions ({', '.join(names)}); {op} with "
            f"{dirs} direction(s) takes {per * dirs} ({per} per direction)"
        )
    alphas = [float(v) for v in cx.attr("activation_alpha", [])]
    betas = [float(v) for v in cx.attr("activation_beta", [])]
    out: list[Activation] = []
    for name in names:
        key = str(name).lower()
        if key not in ACTIVATIONS:
            cx.fail(
                f"activation {name!r} is not one of the spec's functions "
                f"({', '.join(sorted(ACTIVATIONS))})"
            )
        alpha, beta = ACTIVATIONS[key]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        out.append(_activation(key, alpha, beta))
    return [out[d * per : (d + 1) * per] for d in range(dirs)]


def _batch_major(
    cx: NodeContext, i: int, b_ax: int, what: str, rank: int | None = 3, other: str = ""
) -> Tensor | np.ndarray:
    """Operand ``i`` (its batch on ONNX axis ``b_ax``, 0 or 1) with ONNX axes 0 and 1 in the
    order batch, other: a graphc tensor (the batch may be N) or an array. ``rank``: the rank
    required (None: any from 2); ``other``: what axis 1 - b_ax holds, for the refusal of a
    symbolic size there (default: the sequence length, when b_ax is 1)."""
    name = cx.node.input[i]
    o_ax = 1 - b_ax

    def check_rank(r: int, shape: Any) -> None:
        if (rank is not None and r != rank) or r < 2:
            cx.fail(f"{what} has shape {list(shape)}; expected rank {rank or '2 or more'}")

    if name in cx.imp.views:
        v = cx.imp.views[name]
        check_rank(len(v.groups), v.shape)
        g = v.groups
        return onnx_layout.materialize(cx, onnx_layout.View(v.base, (g[b_ax], g[o_ax], *g[2:])))
    val = cx.value(i)
    if isinstance(val, np.ndarray):
        a = np.asarray(val, np.float32)
        check_rank(a.ndim, a.shape)
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if b_ax == 1 else a
    t = cx.x(i)
    check_rank(len(t.shape), t.shape)
    if t.shape[o_ax] == "N":
        what_else = other or ("sequence length" if o_ax == 0 else "directions")
        cx.fail(
            f"{what} {list(t.shape)} has a symbolic size (read as the batch N) on axis {o_ax}, "
            f"which holds the {what_else}: graphc unrolls over a fixed sequence length; export "
            "the model with a fixed length, or with the batch first (the sequence on axis 1, "
            "whose size dims= can fix)"
        )
    if b_ax == 0:
        return t
    from .functional import permute

    return permute(t, [1, 0, *range(2, len(t.shape))])


def _weight(cx: NodeContext, i: int, shape: tuple, what: str) -> Tensor:
    t = cx.x(i)
    if tuple(t.shape) != shape:
        cx.fail(f"{what} has shape {list(t.shape)}; expected {list(shape)}")
    return t


def _mask_of(cx: NodeContext, steps: int, batch: Any) -> list[Any] | None:
    """Per step t, the rows still inside their sequence (a [B, 1] 0/1 tensor, or an array), or
    None where every row runs all ``steps`` (no sequence_lens, or all equal to T)."""
    if not cx.has(4):
        return None
    val = cx.value(4)
    if isinstance(val, np.ndarray):
        lens = np.asarray(val).reshape(-1)
        if batch != "N" and lens.size != int(batch):
            cx.fail(f"sequence_lens has {lens.size} values for a batch of {batch}")
        if (lens < 0).any() or (lens > steps).any():
            cx.fail(
                f"sequence_lens {lens.tolist()} lies outside [0, {steps}] (the sequence length)"
            )
        if (lens == steps).all():
            return None
        if batch == "N" and lens.size != 1:
            cx.fail(
                f"sequence_lens is a constant of {lens.size} values but the batch is N (any "
                "size): give it as an input, or fix the batch size"
            )
        return [(lens > t).astype(np.float32).reshape(-1, 1) for t in range(steps)]
    lens_t = cx.x(4)
    if len(lens_t.shape) != 1 or (lens_t.shape[0] != batch and lens_t.shape[0] != 1):
        cx.fail(f"sequence_lens has shape {list(lens_t.shape)}; expected [{batch}]")
    _check_lengths(cx, lens_t, steps)
    col = _reshape(lens_t, (lens_t.shape[0], 1))
    return [dsl.apply("greater", col, dsl.const(t + 0.5)) for t in range(steps)]


def _check_lengths(cx: NodeContext, lens: Tensor, steps: int) -> None:
    """Lengths computed at run time must lie in 0 .. steps (ONNX Runtime raises on others):
    read straight from an integer graph input, the entries check its values (ArgumentError
    naming the row and the value); computed from one, Importer.bound_integers proves the
    range or narrows the input's; lengths of float values are left unchecked."""
    from .onnx_import import _index_input

    if id(lens) not in cx.imp.integral:
        return
    if lens.node.op == "input":
        _index_input(cx, lens, steps + 1, (0, steps))
        note = f"the sequence_lens of {cx.where()}: lengths 0 .. {steps}, ONNX Runtime raises on others"
        attrs = {**dict(lens.node.attrs), "index_note": note, "index_table": False}
        lens.node = lens.node.with_(attrs=attrs)
    else:
        cx.imp.lookups.append((lens, (0, steps), cx.where()))


def reads_lengths(node: Any, name: str) -> bool:
    """Whether ONNX ``node`` reads value ``name`` only as the sequence_lens of an LSTM, GRU,
    RNN or ReverseSequence (compared with the step numbers: exact as float32, so an integer
    graph input may feed it)."""
    ins = list(node.input)
    at = 1 if node.op_type == "ReverseSequence" else 4 if node.op_type in GATES else None
    return (
        at is not None
        and node.domain in ("", "ai.onnx")
        and len(ins) > at
        and ins[at] == name
        and ins.count(name) == 1
    )


def _const(cx: NodeContext, what: str, a: np.ndarray) -> Tensor:
    """An array the rule computed, as a graphc constant of the import."""
    return cx.imp.constant_tensor(what, np.ascontiguousarray(a, np.float32), cx, False)


def _blend(cx: NodeContext, m: Any, new: Tensor, old: Tensor | None) -> Tensor:
    """new where the row is inside its sequence (m = 1), old (or 0 for None) elsewhere."""
    if isinstance(m, np.ndarray):
        if m.all():
            return new
        m = _const(cx, "sequence_mask", m)
    if old is None:
        return new * m
    return dsl.apply("where", m, new, old)


def _where_else_zero(cx: NodeContext, m: Any, v: Tensor) -> Tensor:
    """v where m (a row mask, [B, 1]) is 1, else 0 (a select: an infinite v of a masked row
    gives 0, not NaN)."""
    if isinstance(m, np.ndarray):
        if m.all():
            return v
        m = _const(cx, "sequence_mask", m)
    return dsl.apply("where", m, v, dsl.const(0.0))


def rnn_rule(op: str) -> Callable[[NodeContext], list]:
    """The rule of ONNX operator ``op`` (LSTM, GRU or RNN)."""

    def convert(cx: NodeContext) -> list:
        return _Recurrence(cx, op).run()

    return convert


class _Recurrence:
    def __init__(self, cx: NodeContext, op: str) -> None:
        self.cx, self.op = cx, op
        direction = cx.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            cx.fail(f"direction {direction!r} is not forward, reverse or bidirectional")
        self.direction = direction
        self.dirs = 2 if direction == "bidirectional" else 1
        self.layout = int(cx.attr("layout", 0))
        if self.layout not in (0, 1):
            cx.fail(f"layout {self.layout} is not 0 or 1")
        self.b_ax = 1 if self.layout == 0 else 0
        self.gates = GATES[op]

    def run(self) -> list:
        cx, op, dirs, gates = self.cx, self.op, self.dirs, self.gates
        x = _batch_major(cx, 0, self.b_ax, "X")
        if isinstance(x, np.ndarray):
            x = _const(cx, "X", x)
        batch, steps, size = x.shape
        if not isinstance(steps, int):
            cx.fail(f"X's sequence length is {steps}: graphc unrolls a fixed length")
        r = cx.x(2)
        if len(r.shape) != 3 or "N" in r.shape:
            cx.fail(f"R has shape {list(r.shape)}; expected [num_directions, {gates}*H, H]")
        hidden = int(r.shape[2])
        h_attr = cx.attr("hidden_size")
        if h_attr is not None and int(h_attr) != hidden:
            cx.fail(f"hidden_size={h_attr} but R has shape {list(r.shape)}")
        gh = gates * hidden
        r = _weight(cx, 2, (dirs, gh, hidden), "R")
        w = _weight(cx, 1, (dirs, gh, size), "W")
        b = _weight(cx, 3, (dirs, 2 * gh), "B") if cx.has(3) else None
        p = _weight(cx, 7, (dirs, 3 * hidden), "P") if op == "LSTM" and cx.has(7) else None
        clip = cx.attr("clip")
        self.clip = None if clip is None else float(clip)
        if self.clip is not None and not self.clip > 0:
            cx.fail(f"clip={clip}: the threshold must be positive")
        self.lbr = op == "GRU" and bool(cx.attr("linear_before_reset", 0))
        self.forget = op == "LSTM" and bool(cx.attr("input_forget", 0))
        acts = _activations(cx, op, dirs)
        h0 = self._state(5, batch, hidden, "initial_h")
        c0 = self._state(6, batch, hidden, "initial_c") if op == "LSTM" else [None] * dirs
        masks = _mask_of(cx, steps, batch)
        bias, rbh = None, [None] * dirs
        if b is not None:  # Wb + Rb, added to the input projection once (GRU's linear before
            # reset keeps Rbh apart: it is multiplied by the reset gate)
            wb, rb = _slice(b, 1, 0, gh), _slice(b, 1, gh, 2 * gh)
            if self.lbr:
                keep = np.ones((1, gh), np.float32)
                keep[:, 2 * hidden :] = 0.0
                rbh = [
                    _reshape(_slice(_slice(rb, 0, d, d + 1), 1, 2 * hidden, gh), (hidden,))
                    for d in range(dirs)
                ]
                rb = rb * _const(cx, "gru_bias_zr", keep)
            bias = _reshape(wb + rb, (dirs * gh,))
        proj = self._projection(x, w, bias, batch, steps, size, gh)
        ys, hs, cs = [], [], []
        for d in range(dirs):
            rd = _reshape(_slice(r, 0, d, d + 1), (gh, hidden))
            pd = None if p is None else _reshape(_slice(p, 0, d, d + 1), (3 * hidden,))
            reverse = self.direction == "reverse" or d == 1
            order = range(steps - 1, -1, -1) if reverse else range(steps)
            h, c = h0[d], c0[d]
            y: list[Tensor | None] = [None] * steps
            for t in order:
                xt = proj(t, d)
                hn, cn = self._step(xt, h, c, rd, rbh[d], pd, acts[d], hidden)
                if masks is None:
                    h, c = hn, cn
                    y[t] = h
                else:
                    y[t] = _blend(cx, masks[t], hn, None)
                    h = _blend(cx, masks[t], hn, h)
                    c = None if cn is None else _blend(cx, masks[t], cn, c)
            if masks is not None:  # a row of length 0 (masks[0]: length > 0) ends at 0
                h = _where_else_zero(cx, masks[0], h)
                c = None if c is None else _where_else_zero(cx, masks[0], c)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        return self._outputs(ys, hs, cs, batch, hidden)

    def _state(self, i: int, batch: Any, hidden: int, what: str) -> list[Any]:
        """initial_h / initial_c of each direction as [B, H] (None where absent or all 0)."""
        cx = self.cx
        if not cx.has(i):
            return [None] * self.dirs
        s = _batch_major(cx, i, self.b_ax, what)
        if isinstance(s, np.ndarray):
            if not s.any():
                return [None] * self.dirs
            if s.shape[1:] != (self.dirs, hidden) or s.shape[0] not in (batch, 1):
                cx.fail(f"{what} has {self._state_shape(s.shape)}")
            return [_const(cx, what, s[:, d]) for d in range(self.dirs)]
        if tuple(s.shape[1:]) != (self.dirs, hidden) or s.shape[0] != batch:
            cx.fail(f"{what} has {self._state_shape(s.shape)}")
        return [_reshape(_slice(s, 1, d, d + 1), (batch, hidden)) for d in range(self.dirs)]

    def _state_shape(self, bah: tuple) -> str:
        b, a, h = bah
        shape = [a, b, h] if self.layout == 0 else [b, a, h]
        return (
            f"shape {list(shape)}; expected [num_directions={self.dirs}, batch, hidden_size] "
            + ("(layout 0)" if self.layout == 0 else "with the batch first (layout 1)")
        )

    def _projection(
        self, x: Tensor, w: Tensor, bias: Tensor | None, batch: Any, steps: int, size: int, gh: int
    ) -> Callable[[int, int], Tensor]:
        """(t, d) -> X_t W_d^T + Wb_d + Rb_d, [B, gates*H] (graphc.recurrent.projection)."""
        return recurrent.projection(x, w, bias, self.dirs, gh)

    def _step(
        self,
        xt: Tensor,
        h: Tensor | None,
        c: Tensor | None,
        rd: Tensor,
        rbh: Tensor | None,
        pd: Tensor | None,
        acts: list[Activation],
        hidden: int,
    ) -> tuple[Tensor, Tensor | None]:
        """One step of one direction: graphc.recurrent.cell, the DSL layers' cell."""
        return recurrent.cell(
            self.op, xt, h, c, rd, rbh, pd, acts, hidden,
            clip=self.clip, linear_before_reset=self.lbr, input_forget=self.forget,
        )  # fmt: skip

    def _outputs(self, ys: list, hs: list, cs: list, batch: Any, hidden: int) -> list:
        """Y, Y_h (and Y_c) in the node's layout: graphc tensors, or layout views where N is
        not the first ONNX axis; None for an output the node leaves out."""
        outs = self.cx.node.output
        want = [bool(o) for o in outs]
        res: list[Any] = []
        steps = len(ys[0])
        for k in range(len(outs)):
            if not want[k]:
                res.append(None)
                continue
            if k == 0:  # Y: [B, T, D, H] in graphc
                parts = [
                    _concat(
                        [_reshape(ys[d][t], (batch, 1, 1, hidden)) for d in range(self.dirs)], 2
                    )
                    for t in range(steps)
                ]
                res.append(self._placed(_concat(parts, 1), (1, 2, 0, 3)))
            else:  # Y_h, Y_c: [B, D, H] in graphc
                states = hs if k == 1 else cs
                both = _concat([_reshape(s, (batch, 1, hidden)) for s in states], 1)
                res.append(self._placed(both, (1, 0, 2)))
        return res

    def _placed(self, t: Tensor, perm0: tuple[int, ...]) -> Any:
        """``t`` (batch first) in the ONNX layout: layout 1 is batch first already; layout 0
        is np.transpose(t, perm0)."""
        return t if self.layout == 1 else _place(self.cx, t, perm0)


def _place(cx: NodeContext, t: Tensor, perm: tuple[int, ...]) -> Any:
    """The ONNX value np.transpose(t, perm) of graphc tensor ``t`` (batch first): a layout view
    where that moves N, a transpose of fixed axes otherwise."""
    if list(perm) == list(range(len(perm))):
        return t
    if t.shape[0] == "N":
        return onnx_layout._out(onnx_layout.View(t, tuple((j,) for j in perm)))
    from .functional import permute

    return permute(t, list(perm))


def reverse_sequence(cx: NodeContext) -> list:
    """ReverseSequence (opset 10): along ``time_axis``, each batch row's first
    sequence_lens[b] elements reversed, the rest kept (https://onnx.ai/onnx/operators/
    onnx__ReverseSequence.html). Output step t of a row of length L is input step L - 1 - t for
    t < L, step t otherwise: a chain of selects per step (exact), one per candidate source step
    (those a constant sequence_lens never picks are left out)."""
    b_ax, t_ax = int(cx.attr("batch_axis", 1)), int(cx.attr("time_axis", 0))
    if {b_ax, t_ax} != {0, 1}:
        cx.fail(f"batch_axis={b_ax} and time_axis={t_ax}: the spec takes 0 and 1, in either order")
    x = _batch_major(cx, 0, b_ax, "input", None, "time steps")
    if isinstance(x, np.ndarray):
        x = _const(cx, "input", x)
    batch, steps = x.shape[0], x.shape[1]
    if not isinstance(steps, int):
        cx.fail(f"input's time axis has the symbolic size {steps}: graphc needs it fixed")
    rest = tuple(x.shape[2:])
    lens = cx.value(1)
    if isinstance(lens, np.ndarray):
        lens = np.asarray(lens).reshape(-1)
        if batch != "N" and lens.size != batch:
            cx.fail(f"sequence_lens has {lens.size} values for a batch of {batch}")
        if (lens < 0).any() or (lens > steps).any():  # ONNX Runtime raises on these
            cx.fail(f"sequence_lens {lens.tolist()} lies outside [0, {steps}] (the time axis)")
        if batch == "N" and len(set(lens.tolist())) > 1:
            cx.fail(
                f"sequence_lens is a constant of {lens.size} different values but the batch "
                "is N (any size): give it as an input, or fix the batch size"
            )
        ones = (1,) * (1 + len(rest))
        lens_of: Any = lens.reshape(-1, *ones).astype(np.float32)
    else:
        lt = cx.x(1)
        if len(lt.shape) != 1 or lt.shape[0] not in (batch, 1):
            cx.fail(f"sequence_lens has shape {list(lt.shape)}; expected [{batch}]")
        _check_lengths(cx, lt, steps)
        lens_of = _reshape(lt, (lt.shape[0], *(1,) * (1 + len(rest))))
    step = [_slice(x, 1, t, t + 1) for t in range(steps)]
    out = []
    for t in range(steps):
        y = step[t]  # kept where t >= L
        for s in range(steps - t):  # source step s where L == s + t + 1
            if isinstance(lens_of, np.ndarray):
                pick = lens_of == s + t + 1
                if pick.all():
                    y = step[s]
                elif pick.any():
                    y = dsl.apply("where", _const(cx, "pick", pick), step[s], y)
            else:
                y = dsl.apply("where", _equal_to(lens_of, s + t + 1), step[s], y)
        out.append(y)
    y = _concat(out, 1)
    return [_place(cx, y, (1, 0, *range(2, 2 + len(rest)))) if b_ax else y]


def _equal_to(v: Tensor, k: int) -> Tensor:
    """[v == k] (0/1) for whole numbers v."""
    return dsl.apply("greater", v, dsl.const(k - 0.5)) * dsl.apply("greater", dsl.const(k + 0.5), v)
