"""Recurrent layers for the DSL: ``lstm``, ``gru``, ``simple_rnn`` and their layer objects for
``Sequential`` (``LSTM``, ``GRU``, ``SimpleRNN``), unrolled over a static sequence length with
graphc's ops (2-D matmuls, slices, elementwise ops), so autodiff, fusion, export and ONNX
export are graphc's own. ``cell`` is the one step of the three cells, shared with the ONNX
importer's LSTM / GRU / RNN rules (graphc.onnx_import_rnn).

Layout: batch first, x [N, T, C] (Keras's, and torch's ``batch_first=True``); T must be a
fixed int, N may be the symbolic batch.

Formulas (ONNX's operator definitions, https://onnx.ai/onnx/operators/onnx__LSTM.html,
onnx__GRU.html, onnx__RNN.html; the same cells as torch.nn.LSTM / GRU / RNN and Keras's
LSTM / GRU(reset_after=True) / SimpleRNN), with f the recurrent activation (sigmoid), g the
activation (tanh), ``(.)`` the elementwise product, x_t [N, C], h, c [N, H]:

    LSTM  i = f(x_t Wi^T + h Ri^T + bi)    o = f(x_t Wo^T + h Ro^T + bo)
          f_ = f(x_t Wf^T + h Rf^T + bf)   c~ = g(x_t Wc^T + h Rc^T + bc)
          c' = f_ (.) c + i (.) c~          h' = o (.) g(c')
    GRU   z = f(x_t Wz^T + h Rz^T + bz)    r = f(x_t Wr^T + h Rr^T + br)
          reset_after (default; torch, ONNX linear_before_reset=1, Keras reset_after=True):
              h~ = g(x_t Wh^T + Wbh + r (.) (h Rh^T + Rbh))
          reset_after=False (ONNX linear_before_reset=0, Keras reset_after=False):
              h~ = g(x_t Wh^T + (r (.) h) Rh^T + Wbh + Rbh)
          h' = (1 - z) (.) h~ + z (.) h
    RNN   h' = g(x_t W^T + h R^T + Wb + Rb)

where each b is the sum of the gate's input bias Wb and recurrent bias Rb (except GRU's Rbh
under reset_after). The initial states are zeros unless given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.ir.errors import GraphcError, ShapeError
from graphc.ir.ops.sources import narrow_input, narrowed_range
from graphc.runtime.checks import check_bool

from . import dsl
from .dsl import Tensor, _fresh, _source, activation_name, param, shares_weights

Activation = Callable[[Tensor], Tensor]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _slice(x: Tensor, axis: int, start: int, stop: int) -> Tensor:
    if start == 0 and stop == int(x.shape[axis]):
        return x
    return dsl.apply("slice", x, axes=(axis,), starts=(start,), ends=(stop,))


def _reshape(x: Tensor, shape: tuple) -> Tensor:
    return x if tuple(x.shape) == tuple(shape) else dsl.reshape(x, shape)


def _concat(xs: list[Tensor], axis: int) -> Tensor:
    return xs[0] if len(xs) == 1 else dsl.apply("concat", *xs, axis=axis)


def cell(
    kind: str,
    xt: Tensor,
    h: Tensor | None,
    c: Tensor | None,
    r: Tensor,
    rbh: Tensor | None,
    p: Tensor | None,
    acts: Sequence[Activation],
    hidden: int,
    *,
    clip: float | None = None,
    linear_before_reset: bool = False,
    input_forget: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """One step of an LSTM, GRU or RNN cell (``kind``; ONNX's formulas and gate orders:
    LSTM i, o, f, c; GRU z, r, h): (h', c') from ``xt`` = x_t W^T + biases [B, gates*H] (GRU
    under ``linear_before_reset``: without Rbh, which is ``rbh`` [H] or None), the previous
    states ``h``, ``c`` [B, H] (None: zero, the first step without an initial state), the
    recurrent kernel ``r`` [gates*H, H] and LSTM's peepholes ``p`` [3*H] (i, o, f; or None).
    ``acts``: ONNX's activation list of one direction (LSTM f, g, h; GRU f, g; RNN g).
    ``clip``: each gate's input clipped to [-clip, clip] before its activation;
    ``input_forget``: LSTM's f = 1 - i. c' is None but for LSTM."""
    n = hidden

    def part(v: Tensor | None, k: int, m: int = 1) -> Tensor | None:
        return None if v is None else _slice(v, len(v.shape) - 1, k * n, (k + m) * n)

    def gate(z: Tensor, fn: Activation) -> Tensor:
        if clip is not None:
            z = dsl.apply("clip", z, min=-clip, max=clip)
        return fn(z)

    if kind == "GRU":  # gates z, r, h
        f, g = acts
        zr = part(xt, 0, 2)
        if h is not None:
            zr = zr + dsl.matmul(h, _slice(r, 0, 0, 2 * n), transpose_b=True)
        z, rr = gate(part(zr, 0), f), gate(part(zr, 1), f)
        rh = _slice(r, 0, 2 * n, 3 * n)
        pre = part(xt, 2)
        if linear_before_reset:  # r (.) (H Rh^T + Rbh)
            lin = None if h is None else dsl.matmul(h, rh, transpose_b=True)
            lin = lin if rbh is None else rbh if lin is None else lin + rbh
            pre = pre if lin is None else pre + rr * lin
        elif h is not None:  # (r (.) H) Rh^T
            pre = pre + dsl.matmul(rr * h, rh, transpose_b=True)
        ht = gate(pre, g)
        hn = (1.0 - z) * ht if h is None else (1.0 - z) * ht + z * h
        return hn, None
    zall = xt if h is None else xt + dsl.matmul(h, r, transpose_b=True)
    if kind == "RNN":
        return gate(zall, acts[0]), None
    f, g, hf = acts  # LSTM, gates i, o, f, c; P holds i, o, f

    def peep(k: int, v: Tensor | None) -> Tensor | None:
        return None if p is None or v is None else part(p, k) * v

    def plus(a: Tensor, b: Tensor | None) -> Tensor:
        return a if b is None else a + b

    i_g = gate(plus(part(zall, 0), peep(0, c)), f)
    f_g = 1.0 - i_g if input_forget else gate(plus(part(zall, 2), peep(2, c)), f)
    c_g = gate(part(zall, 3), g)
    cn = i_g * c_g if c is None else f_g * c + i_g * c_g
    o_g = gate(plus(part(zall, 1), peep(1, cn)), f)
    return o_g * hf(cn), cn


def projection(
    x: Tensor, w: Tensor, bias: Tensor | None, dirs: int, gh: int
) -> Callable[[int, int], Tensor]:
    """(t, d) -> x_t W_d^T + bias_d [B, gh] for x [B, T, C], w [dirs, gh, C], bias [dirs*gh]
    or None: one GEMM for every step and direction when the batch B is fixed, one per step
    (shared by the directions) when it is graphc's symbolic N (N stays whole and first)."""
    batch, steps, size = x.shape
    wall = _reshape(w, (dirs * gh, size))

    def biased(v: Tensor) -> Tensor:
        return v if bias is None else v + bias

    if batch != "N":
        flat = _reshape(x, (batch * steps, size))
        allp = biased(dsl.matmul(flat, wall, transpose_b=True))
        allp = _reshape(allp, (batch, steps, dirs * gh))

        def fixed(t: int, d: int) -> Tensor:
            row = _reshape(_slice(allp, 1, t, t + 1), (batch, dirs * gh))
            return _slice(row, 1, d * gh, (d + 1) * gh)

        return fixed
    done: dict[int, Tensor] = {}

    def per_step(t: int, d: int) -> Tensor:
        if t not in done:
            xt = _reshape(_slice(x, 1, t, t + 1), ("N", size))
            done[t] = biased(dsl.matmul(xt, wall, transpose_b=True))
        return _slice(done[t], 1, d * gh, (d + 1) * gh)

    return per_step


# ---------------------------------------------------------------- the DSL layers


def _masks(where: str, lengths: Any, batch: Any, steps: int, dt: str) -> list[Tensor]:
    """Per step t, [N, 1] of dtype ``dt``: 1.0 where t < the row's length, else 0.0. Lengths read straight
    from an i32 input are checked by every entry before it runs (ArgumentError naming the row
    and the value outside 0 .. T, or the library's error code: the input's index range)."""
    if not isinstance(lengths, Tensor) or tuple(lengths.shape) != (batch,):
        got = lengths.type if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ShapeError(
            f"{where}: sequence_lengths must be a tensor [{batch}] (one length per row), got {got}"
        )
    node = lengths.node
    if lengths.dtype == "i32" and node.op == "input":
        lo, hi = narrowed_range(node, 0, steps, f"{where}: sequence_lengths {lengths.name!r}")
        mine = f"the sequence lengths of {where}: 0 .. {steps}"
        lengths.node = narrow_input(node, lo, hi, mine, lookup=False)
    col = _reshape(lengths, (batch, 1))
    if lengths.dtype != dt:  # i32 lengths: exact in f32 (T is far below 2^24)
        col = dsl.apply("cast", col, dtype=dt)
    return [dsl.apply("greater", col, dsl.const(t + 0.5, dtype=dt)) for t in range(steps)]


def _keep(m: Tensor, new: Tensor, old: Tensor | None) -> Tensor:
    """new where the mask ``m`` is 1, old (None: 0) where it is 0."""
    return new * m if old is None else dsl.apply("where", m, new, old)


def _act(where: str, kind: Any) -> Activation:
    name = activation_name(kind, f"{where}: ")
    if name is None:
        return lambda v: v
    return lambda v: dsl.activation(v, name)


def _recurrent(
    kind: str,
    where: str,
    x: Tensor,
    units: int,
    *,
    activation: Any,
    recurrent_activation: Any = None,
    return_sequences: bool,
    return_state: bool,
    go_backwards: bool,
    bidirectional: bool,
    initial_state: Sequence[Tensor] | None,
    sequence_lengths: Tensor | None,
    name: str | None,
    use_bias: bool,
    kernel_init: str,
    recurrent_init: str,
    reset_after: bool = True,
    unit_forget_bias: bool = True,
) -> Any:
    return_sequences = check_bool(return_sequences, f"{where}: return_sequences")
    return_state = check_bool(return_state, f"{where}: return_state")
    go_backwards = check_bool(go_backwards, f"{where}: go_backwards")
    bidirectional = check_bool(bidirectional, f"{where}: bidirectional")
    use_bias = check_bool(use_bias, f"{where}: use_bias")
    reset_after = check_bool(reset_after, f"{where}: reset_after")
    unit_forget_bias = check_bool(unit_forget_bias, f"{where}: unit_forget_bias")
    units = dsl.index_value(units)
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise GraphcError(f"{where}: units must be a positive int, got {units!r}")
    if x.type.rank != 3 or not all(isinstance(d, int) for d in x.shape[1:]):
        raise ShapeError(
            f"{where}: expects x [N, T, C] (batch first) with a fixed sequence length T and "
            f"features C, got {x.type} ({x.name})"
        )
    g = _act(where, activation)
    f = _act(where, recurrent_activation)
    acts = {"LSTM": (f, g, g), "GRU": (f, g), "RNN": (g,)}[kind]
    batch, steps, size = x.shape
    dt = x.dtype
    dirs = 2 if bidirectional else 1
    hidden, gates = units, GATES[kind]
    gh = gates * hidden
    states = 2 if kind == "LSTM" else 1
    h0: list[Tensor | None] = [None] * dirs
    c0: list[Tensor | None] = [None] * dirs
    if initial_state is not None:
        given = list(initial_state) if isinstance(initial_state, list | tuple) else [initial_state]
        want = states * dirs
        if len(given) != want:
            which = "h, c" if kind == "LSTM" else "h"
            raise GraphcError(
                f"{where}: initial_state holds {len(given)} tensors; expected {want} ({which}"
                + (" of the forward, then of the backward direction" if dirs == 2 else "")
                + ")"
            )
        for k, s in enumerate(given):
            if not isinstance(s, Tensor) or (tuple(s.shape), s.dtype) != ((batch, hidden), dt):
                got = s.type if isinstance(s, Tensor) else type(s).__name__
                raise ShapeError(
                    f"{where}: initial_state[{k}] must be a tensor {dt}[{batch}, {hidden}] "
                    f"(batch, units, x's dtype), got {got}"
                )
            (h0 if k % states == 0 else c0)[k // states] = s
    name = name or _fresh(kind.lower())
    w = param(f"{name}.w", (dirs, gh, size), init=kernel_init, dtype=dt)
    r = param(f"{name}.r", (dirs, gh, hidden), init=recurrent_init, dtype=dt)
    bias, rbh = None, [None] * dirs
    if use_bias:
        b0 = np.zeros((dirs, 2 * gh), {"f32": np.float32, "f64": np.float64}[dt])
        if kind == "LSTM" and unit_forget_bias:
            b0[:, 2 * hidden : 3 * hidden] = 1.0  # the input bias of the forget gate
        b = _source("param", f"{name}.b", b0.shape, dt, {"init": "array"})
        b.value = b0
        wb, rb = _slice(b, 1, 0, gh), _slice(b, 1, gh, 2 * gh)
        if kind == "GRU" and reset_after:  # Rbh is multiplied by the reset gate
            zr = _slice(wb, 1, 0, 2 * hidden) + _slice(rb, 1, 0, 2 * hidden)
            bias = _reshape(_concat([zr, _slice(wb, 1, 2 * hidden, gh)], 1), (dirs * gh,))
            rbh = [
                _reshape(_slice(_slice(rb, 0, d, d + 1), 1, 2 * hidden, gh), (hidden,))
                for d in range(dirs)
            ]
        else:
            bias = _reshape(wb + rb, (dirs * gh,))
    proj = projection(x, w, bias, dirs, gh)
    masks = (
        None if sequence_lengths is None else _masks(where, sequence_lengths, batch, steps, x.dtype)
    )
    ys: list[list[Tensor]] = []
    finals: list[Tensor] = []
    last: list[Tensor] = []
    for d in range(dirs):
        rd = _reshape(_slice(r, 0, d, d + 1), (gh, hidden))
        backward = go_backwards != (d == 1)
        order = list(range(steps - 1, -1, -1) if backward else range(steps))
        h, c = h0[d], c0[d]
        y: list[Tensor] = []
        for t in order:
            hn, cn = cell(
                kind, proj(t, d), h, c, rd, rbh[d], None, acts, hidden,
                linear_before_reset=kind == "GRU" and reset_after,
            )  # fmt: skip
            if masks is None:
                h, c = hn, cn
                y.append(h)
            else:  # past a row's length: its state stays, its output is 0
                y.append(hn * masks[t])
                h = _keep(masks[t], hn, h)
                c = None if cn is None else _keep(masks[t], cn, c)
        if d == 1:  # Bidirectional: the backward outputs back in the input's time order
            y.reverse()
        ys.append(y)
        finals += [h] if c is None else [h, c]
        last.append(h)
    if return_sequences:
        per_t = [_concat([ys[d][t] for d in range(dirs)], 1) for t in range(steps)]
        out = _concat([_reshape(v, (batch, 1, dirs * hidden)) for v in per_t], 1)
    else:  # each direction's final state
        out = _concat(last, 1)
    return [out, *finals] if return_state else out


def lstm(
    x: Tensor,
    units: int,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    *,
    activation: Any = "tanh",
    recurrent_activation: Any = "sigmoid",
    bidirectional: bool = False,
    initial_state: Sequence[Tensor] | None = None,
    sequence_lengths: Tensor | None = None,
    name: str | None = None,
    use_bias: bool = True,
    unit_forget_bias: bool = True,
    kernel_init: str = "glorot_uniform",
    recurrent_init: str = "orthogonal",
) -> Any:
    """A long short-term memory layer (Hochreiter & Schmidhuber 1997; the cell of the module
    docstring, as torch.nn.LSTM, Keras's LSTM and ONNX LSTM without peepholes). Gates in
    ONNX's order i, o, f, c (torch: i, f, g, o; Keras: i, f, c, o). ``unit_forget_bias``
    (Keras's, default True): the forget gate's input bias starts at 1 (Jozefowicz et al.
    2015), the other biases at 0.

    x [N, T, C] (batch first; T fixed) -> [N, T, D*units] with ``return_sequences``, else the
    last output [N, D*units] (D = 2 with ``bidirectional``: the forward and backward
    directions' outputs concatenated on the last axis, as Keras's Bidirectional(merge_mode=
    "concat") and torch's bidirectional=True; the backward outputs are in the input's time
    order, and its last output is its state after step 0). ``go_backwards`` (Keras): the
    sequence is read from its end, and the returned sequence is in that reversed order (as
    Keras; in a bidirectional layer the first direction reads from the end, the second from
    the start, and the sequence comes in that reversed order). ``return_state``: returns
    [output, h(, c)] per direction (forward first, as Keras), each [N, units].
    ``initial_state``: those states' tensors in the same order ([N, units] each; default
    zeros). ``activation`` / ``recurrent_activation``: names as ``dense``'s (None: identity).
    ``sequence_lengths``: a tensor [N] of each row's length L (i32, or whole numbers in f32;
    default: all T), as torch's packed sequences and ONNX's sequence_lens: a row's state stops
    changing after its step L - 1 (a backward direction starts at step L - 1), its outputs are
    0 from step L on, and the last output and returned states are those at its end (a row of
    length 0 keeps its initial state). Lengths read straight from an i32 input outside 0 .. T
    are refused before anything runs (ArgumentError); f32 lengths are not checked.

    Params (ONNX's W, R, B layouts and gate orders, so an ONNX node's initializers load with
    set_weights; torch's weight_ih_l0, weight_hh_l0 and [bias_ih_l0, bias_hh_l0] after
    reordering the gate blocks): ``NAME.w`` [D, gates*units, C] (input kernel, init
    ``kernel_init``: glorot_uniform, Keras's), ``NAME.r`` [D, gates*units, units]
    (recurrent kernel, ``recurrent_init``: orthogonal, Keras's), ``NAME.b`` [D,
    2*gates*units] (input biases, then recurrent biases; zeros) unless ``use_bias=False``.

    Raises:
        ShapeError: x not [N, T, C] with T and C fixed ints; an initial state not [N, units]
            of x's dtype;
            sequence_lengths not [N], or an i32 input limited elsewhere to values outside
            0 .. T (no value fits both).
        GraphcError: units not a positive int; an unknown activation or initializer; an
            initial_state of the wrong count.
        OptionTypeError: a flag that is not a bool.
    """
    return _recurrent("LSTM", "lstm", **locals())  # the arguments as given


def gru(
    x: Tensor,
    units: int,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    *,
    activation: Any = "tanh",
    recurrent_activation: Any = "sigmoid",
    reset_after: bool = True,
    bidirectional: bool = False,
    initial_state: Sequence[Tensor] | None = None,
    sequence_lengths: Tensor | None = None,
    name: str | None = None,
    use_bias: bool = True,
    kernel_init: str = "glorot_uniform",
    recurrent_init: str = "orthogonal",
) -> Any:
    """A gated recurrent unit layer (Cho et al. 2014; the cell of the module docstring).
    Gates in ONNX's order z, r, h (torch: r, z, n; Keras: z, r, h). ``reset_after=True``
    (the default) is torch's GRU, ONNX's linear_before_reset=1 and Keras's reset_after=True
    (Keras 2's and 3's default): the reset gate multiplies h Rh^T + Rbh; False is the original
    form of Cho et al. (ONNX's default linear_before_reset=0, Keras reset_after=False).
    Arguments, outputs, params (gates = 3) and errors as ``lstm``'s; ``initial_state``: h.
    """
    return _recurrent("GRU", "gru", **locals())  # the arguments as given


def simple_rnn(
    x: Tensor,
    units: int,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    *,
    activation: Any = "tanh",
    bidirectional: bool = False,
    initial_state: Sequence[Tensor] | None = None,
    sequence_lengths: Tensor | None = None,
    name: str | None = None,
    use_bias: bool = True,
    kernel_init: str = "glorot_uniform",
    recurrent_init: str = "orthogonal",
) -> Any:
    """A fully connected recurrent layer, h' = activation(x_t W^T + h R^T + Wb + Rb) (Elman
    1990; torch.nn.RNN, Keras's SimpleRNN, ONNX RNN). Arguments, outputs, params (gates =
    1) and errors as ``lstm``'s; ``initial_state``: h.
    """
    return _recurrent("RNN", "simple_rnn", **locals())  # the arguments as given


class _Layer:
    """A recurrent layer object for Sequential: the function's arguments but x."""

    has_params = True
    fn: Callable[..., Any]

    def __init__(self, units: int, *args: Any, **kw: Any) -> None:
        self.units, self.args = units, args
        self.name = kw.pop("name", None)
        self.kw = kw
        where = type(self).__name__
        for key in ("activation", "recurrent_activation"):
            if key in kw:
                activation_name(kw[key], f"{where}: ")
        units = dsl.index_value(units)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise GraphcError(f"{where}: units must be a positive int, got {units!r}")

    @shares_weights
    def __call__(self, x: Tensor) -> Any:
        return type(self).fn(x, self.units, *self.args, name=self.name, **self.kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.units}, name={self.name!r})"


class LSTM(_Layer):
    """Layer object for Sequential: ``LSTM(units, return_sequences=False, ...)`` (see
    ``lstm``)."""

    fn = staticmethod(lstm)


class GRU(_Layer):
    """Layer object for Sequential: ``GRU(units, return_sequences=False, ...)`` (see
    ``gru``)."""

    fn = staticmethod(gru)


class SimpleRNN(_Layer):
    """Layer object for Sequential: ``SimpleRNN(units, return_sequences=False, ...)`` (see
    ``simple_rnn``)."""

    fn = staticmethod(simple_rnn)
