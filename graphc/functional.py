"""DSL functions for the ops of issue #14: activations, pointwise math and comparisons,
reductions, log_softmax, movement (slice, concat, squeeze, expand_dims), normalization
(layer_norm, batch_norm) and the losses built from them.

Attr defaults live on the op classes (graphc.ir.ops): an argument left at None takes the op's
default, so each default is written once.
"""

from __future__ import annotations

import builtins
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, GraphcError, OptionTypeError, ShapeError
from graphc.ir.ops.norm import BatchNorm as BatchNormOp
from graphc.ir.ops.sources import narrow_input, narrowed_range
from graphc.runtime.checks import check_bool, check_real

from .dsl import (
    _IDENTITY_HINT,
    LOSSES,
    OP_FUNCTIONS,
    Tensor,
    _axes,
    _fresh,
    _operands,
    _tag,
    apply,
    check_logits,
    class_weights,
    constant,
    index_value,
    loss_reduction,
    maximum,
    mean,
    names_user_line,
    param,
    reshape,
    shares_weights,
    softmax_along,
    sum,
)

# The pointwise ops' own functions (gc.elu(x, alpha=1.0), gc.gelu(x, approximate="none"), gc.abs,
# gc.erf, ...) are generated from the registry by graphc.dsl (OP_FUNCTIONS); the functions here
# add what a generated one cannot: Python numbers as operands, aliases.

swish = OP_FUNCTIONS["silu"]


def minimum(x: Tensor | float, y: Tensor | float) -> Tensor:
    """Elementwise min with broadcasting (a number on either side; NaN if either is NaN; at a
    tie the gradient is split 0.5/0.5, as in PyTorch and JAX)."""
    return apply("minimum", *_operands("minimum", x, y))


def pow(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent for a Python number (integer exponents: exact products, any sign of x).

    ``exponent``: a real number (int, float, numpy's, Fraction) or a 0-d array of one.

    Raises:
        ShapeError: ``exponent`` a bool (True was read as 1) or not a finite number.
        OptionTypeError: ``exponent`` a Tensor (torch.pow(x, y)): for x > 0 write
            exp(y * log(x)); or not a real number (a string, a complex)."""
    if isinstance(exponent, Tensor):
        raise OptionTypeError(
            f"pow({x.name}, {exponent.name}): graphc's pow takes a number as the exponent; "
            f"for x > 0 write gc.exp({exponent.name} * gc.log({x.name}))"
        )
    if isinstance(exponent, np.ndarray) and exponent.ndim == 0:
        exponent = exponent[()]  # numpy's scalar of the array's dtype
    if not isinstance(exponent, numbers.Real | np.bool_):
        raise OptionTypeError(
            f"pow({x.name}, ...): the exponent must be a number, a real one, got {exponent!r}"
        )
    e = exponent if isinstance(exponent, bool | np.bool_) else float(exponent)
    return apply("pow", x, exponent=e)


def _compare(op: str):
    def f(x: Tensor | float, y: Tensor | float) -> Tensor:
        return apply(op, *_operands(op, x, y))

    f.__name__ = op
    f.__code__ = f.__code__.replace(co_name=op)
    f.__doc__ = f"1.0 where x {op.replace('_', ' ')} y, else 0.0 (a mask; no gradient)."
    return f


greater = _compare("greater")
greater_equal = _compare("greater_equal")
less = _compare("less")
less_equal = _compare("less_equal")
equal = _compare("equal")
not_equal = _compare("not_equal")


def where(cond: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """a where cond != 0 else b (all broadcast; NaN in cond counts as true, as numpy's bool);
    cond is usually a comparison's mask.

    Gradient: dz flows to a where cond != 0 and to b elsewhere, summed over broadcast axes.
    The branch not taken receives 0, and its own derivative there multiplies that 0: where it
    is infinite or NaN the result is NaN, as in torch.where and jnp.where (JAX FAQ, "gradients
    contain NaN where using where"): ``where(x > 0, sqrt(x), 0.0)`` has a NaN gradient at
    x < 0, ``where(x > 0, log(x), x)`` at x = 0. Keep the untaken branch finite with a second
    where inside it: ``where(x > 0, sqrt(where(x > 0, x, 1.0)), 0.0)`` (gradient 0 there).

    Raises:
        ArgumentError: ``cond`` not a Tensor (a bool: ``x == y`` of two Tensors is Python's
            identity in graphc; the mask is gc.equal(x, y)).
    """
    if not isinstance(cond, Tensor):
        hint = _IDENTITY_HINT if isinstance(cond, bool | np.bool_) else ""
        raise ArgumentError(
            f"where: cond must be a graphc Tensor (a mask such as x > 0), got "
            f"{type(cond).__name__} {cond!r:.40}{hint}"
        )
    return apply("where", cond, cond._lift(a), cond._lift(b))


# ---------------------------------------------------------------- reductions, rows


def max(x: Tensor, axes: Iterable[int] | int | None = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axes`` (all when None); the gradient is split evenly among ties.
    Raises OptionTypeError: ``keepdims`` not a bool."""
    keepdims = check_bool(keepdims, "max: keepdims")
    return apply("max", x, axes=_axes(axes), keepdims=keepdims or None)


def min(x: Tensor, axes: Iterable[int] | int | None = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axes`` (all when None); the gradient is split evenly among ties.
    Raises OptionTypeError: ``keepdims`` not a bool."""
    keepdims = check_bool(keepdims, "min: keepdims")
    return apply("min", x, axes=_axes(axes), keepdims=keepdims or None)


def argmax(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """i32 index of the largest element along ``axis`` (default: the last); no gradient.
    Raises OptionTypeError: ``keepdims`` not a bool."""
    keepdims = check_bool(keepdims, "argmax: keepdims")
    return apply("argmax", x, axis=axis, keepdims=keepdims or None)


def log_softmax(x: Tensor, axis: int = -1, *, name: str | None = None) -> Tensor:
    """log(softmax(x)) over ``axis`` (default the last) of x of rank >= 2, in the stable form
    (see ``softmax_along``). Raises ShapeError: a rank below 2 or ``axis`` out of range."""
    return softmax_along(x, axis, log=True, name=name)


# ---------------------------------------------------------------- batched products


def batched_matmul(
    a: Tensor, b: Tensor, *, transpose_a: bool = False, transpose_b: bool = False
) -> Tensor:
    """numpy's and torch's ``op(a) @ op(b)`` of operands [..., M, K] @ [..., K, P] -> [..., M, P]
    (``op`` swaps an operand's last two axes when its flag is set: torch's
    ``a.transpose(-1, -2)``): a product of matrices per position of the leading axes, which
    broadcast as numpy's (the batch dimension N leading one or both operands; attention's
    scores q @ k^T and weights @ v). The op ``batched_matmul`` (graphc.ir.ops.linalg): the
    transposes read in place, each output element a sum over k in the operands' dtype, no
    product materialized; its gradients are batched products again (summed over the leading
    axes an operand was broadcast along).

    Raises:
        ShapeError: an operand of rank < 2; N among an operand's last two axes, or N beside a
            fixed leading axis of the other operand; leading axes that do not broadcast; inner
            dimensions that differ; each names the operands.
    """
    try:
        flags = {"transpose_a": transpose_a or None, "transpose_b": transpose_b or None}
        return apply("batched_matmul", a, b, **flags)
    except ShapeError as e:
        raise ShapeError(f"matmul ({a.name}, {b.name}): {e}") from None


# ---------------------------------------------------------------- movement


def slice(
    x: Tensor, starts: Iterable[int], ends: Iterable[int], axes: Iterable[int] | None = None
) -> Tensor:
    """x[..., starts[k]:ends[k], ...] along ``axes`` (default: the first len(starts) axes);
    static bounds with Python's rules; not along the batch axis."""
    starts, ends = tuple(starts), tuple(ends)
    axes = tuple(range(len(starts))) if axes is None else tuple(axes)
    return apply("slice", x, axes=axes, starts=starts, ends=ends)


def transpose(x: Tensor, perm: Iterable[int] | None = None, *, name: str | None = None) -> Tensor:
    """numpy's ``np.transpose(x, perm)``: axis i of the result is axis ``perm[i]`` of x (all
    axes reversed when None; torch's ``x.permute(*perm)``, and ``x.transpose(1, 2)`` of a
    [N, T, C] is perm (0, 2, 1)). A 2-D x reversed is the op ``transpose`` (read in place by
    a GEMM); any other permutation keeps the batch dimension N where it is and is exact
    (``permute``).

    ``name`` names the result whatever the permutation (the key of predict's dict, the
    exported output).

    Raises:
        ShapeError: ``perm`` not a permutation of x's axes (negative axes count from the end),
            one that moves N (except the 2-D reversal, the op ``transpose``: [N, C] -> [C, N]);
            each names x.
    """
    r = x.type.rank
    if perm is None:
        perm = tuple(range(r))[::-1]
    axes = list(perm)
    if any(isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer) for a in axes):
        raise ShapeError(f"transpose: perm must hold ints, got {perm!r} ({x.name})")
    full = [int(a) % r if -r <= a < r else -1 for a in axes]
    if sorted(full) != list(range(r)):
        raise ShapeError(
            f"transpose: perm={list(axes)} is not a permutation of the axes of {x.type} ({x.name})"
        )
    if r == 2 and full == [1, 0]:
        return apply("transpose", x, name=name)
    if full == list(range(r)):  # the identity: x (under ``name``, a reshape to itself)
        return x if name is None else apply("reshape", x, name=name, shape=x.shape)
    return permute(x, full, name=name)


def permute(x: Tensor, perm: list[int], *, name: str | None = None) -> Tensor:
    """np.transpose(x, perm) for a permutation (of non-negative axes) that keeps N where it is:
    the op ``permute`` (one strided copy, exact; x itself for the identity).

    Raises ShapeError: the permutation moves N, naming x."""
    if list(perm) == list(range(x.type.rank)):
        return x
    if "N" in x.shape and perm[x.shape.index("N")] != x.shape.index("N"):
        raise ShapeError(f"perm={list(perm)} on {x.type} moves the batch dimension N ({x.name})")
    return apply("permute", x, name=name, perm=tuple(int(a) for a in perm))


def move_axis(x: Tensor, j: int, q: int) -> Tensor:
    """np.moveaxis(x, j, q) for axes other than N: each slice along j, reshaped with its
    size-1 axis at q (the same element order), concatenated along q."""
    size = int(x.shape[j])
    rest = [d for i, d in enumerate(x.shape) if i != j]
    target = (*rest[:q], 1, *rest[q:])
    parts = []
    for i in range(size):
        part = apply("slice", x, axes=(j,), starts=(i,), ends=(i + 1,)) if size > 1 else x
        parts.append(part if tuple(target) == tuple(part.shape) else reshape(part, target))
    return apply("concat", *parts, axis=q) if size > 1 else parts[0]


_WHOLE = 1 << 62  # the length getitem gives the batch axis N to read a slice of it


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]`` with numpy's basic indexing: an int takes one position and drops the axis
    (negative counts from the end), a slice with any nonzero step (Python's bounds; a negative
    step reverses; exact), ``...`` stands for the axes not named, ``None`` adds an axis of
    length 1. The batch axis N is taken whole (``:``): ``out[:, -1]`` is an LSTM's last step,
    ``x[..., :3]`` the first three features, ``x[:, ::2]`` every other position. A slice, a
    flip and a reshape (each only when needed), and per step other than 1 or -1 a pad, a
    reshape and a slice (``_every``).

    Raises:
        ShapeError: more indices than axes, an int out of range, an empty slice, an index of
            the batch axis N other than the whole axis (``:``, ``0:``, ``::1``).
        ArgumentError: another kind of index (an array, a list, a Tensor, a bool, a slice
            bound that is not an int, a step of 0, two ``...``), on any axis.
    """
    keys = key if isinstance(key, tuple) else (key,)
    rank = x.type.rank
    named = [k for k in keys if k is not None and k is not Ellipsis]
    if builtins.sum(k is Ellipsis for k in keys) > 1:
        raise ArgumentError(f"{x.name}[{key!r}]: at most one ... in an index")
    if len(named) > rank:
        raise ShapeError(f"{x.name}[{key!r}]: {len(named)} indices for {x.type}")
    rest = (builtins.slice(None),) * (rank - len(named))
    at = next((i for i, k in enumerate(keys) if k is Ellipsis), len(keys))
    keys = (*keys[:at], *rest, *keys[at + 1 :])
    starts, ends, axes, flips, shape = [], [], [], [], []
    strides: list[tuple[int, int]] = []  # (axis of the result, step) of steps other than +-1

    def batch_axis(axis: int) -> ShapeError:
        return ShapeError(
            f"{x.name}[{key!r}]: axis {axis} of {x.type} is the batch dimension N, "
            "taken whole (:); graphc keeps samples apart"
        )

    axis = 0
    for k in keys:
        if k is None:
            shape.append(1)
            continue
        d = x.shape[axis]
        if isinstance(k, builtins.slice):
            try:  # N: a length no index reaches, so that only the whole axis gives (0, it, 1)
                lo, hi, step = k.indices(_WHOLE if d == "N" else d)
            except (TypeError, ValueError) as e:  # a float bound, a step of 0
                raise ArgumentError(
                    f"{x.name}[{key!r:.60}]: slice {k!r} of axis {axis} of {x.type}: its bounds "
                    f"must be ints or None, the step a nonzero int ({e})"
                ) from None
            if d == "N":
                if (lo, hi, step) != (0, _WHOLE, 1):
                    raise batch_axis(axis)
                shape.append(d)
            else:
                count = len(range(lo, hi, step))
                if count == 0:
                    raise ShapeError(f"{x.name}[{key!r}]: axis {axis} of {x.type} sliced empty")
                # the block from the first to the last element taken, ascending; reversed
                # for a negative step, then every |step|-th of it (``_every``)
                span = (count - 1) * builtins.abs(step) + 1
                lo = lo if step > 0 else lo + (count - 1) * step
                if step < 0:
                    flips.append(len(shape))
                if builtins.abs(step) > 1 and count > 1:
                    strides.append((len(shape), builtins.abs(step)))
                if (lo, lo + span) != (0, d):
                    starts.append(lo)
                    ends.append(lo + span)
                    axes.append(axis)
                shape.append(span)
        else:
            # The key's kind first, on every axis: an array or a Tensor on N would otherwise
            # meet the N test (numpy's ambiguous truth value, or a misleading ShapeError).
            if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer):
                raise ArgumentError(
                    f"{x.name}[{key!r:.60}]: graphc indexes with ints, slices, ... and None "
                    f"(got {type(k).__name__})"
                )
            if d == "N":
                raise batch_axis(axis)
            if not -d <= k < d:
                raise ShapeError(f"{x.name}[{key!r}]: index {k} of axis {axis} of {x.type}")
            starts.append(int(k) % d)
            ends.append(int(k) % d + 1)
            axes.append(axis)
        axis += 1
    y = slice(x, starts, ends, axes) if axes else x
    if tuple(shape) != tuple(y.shape):
        y = reshape(y, tuple(shape))
    y = flip(y, flips) if flips else y
    for a, step in strides:
        y = _every(y, a, step)
    return y


def _every(y: Tensor, a: int, step: int) -> Tensor:
    """Elements 0, step, 2 step, .. of axis ``a`` of y, whose length is (count - 1) * step + 1:
    padded to count * step, that axis split into [count, step], position 0 of the second
    taken (exact: a pad, two reshapes and a slice; the pad's zeros are never read)."""
    count = (int(y.shape[a]) - 1) // step + 1
    y = apply("pad", y, axes=(a,), before=(0,), after=(step - 1,))
    y = reshape(y, (*y.shape[:a], count, step, *y.shape[a + 1 :]))
    y = slice(y, (0,), (1,), (a + 1,))
    return reshape(y, (*y.shape[: a + 1], *y.shape[a + 2 :]))


def flip(x: Tensor, axes: Iterable[int] | int) -> Tensor:
    """x with its elements in reverse order along ``axes`` (numpy's ``np.flip``, torch's
    ``flip``): op ``reverse``, exact; not along the batch axis.

    Raises:
        ShapeError: an axis out of range, repeated, or the batch axis.
    """
    axes = index_value(axes)
    return apply("reverse", x, axes=(axes,) if isinstance(axes, int) else tuple(axes))


def concat(xs: list[Tensor], axis: int) -> Tensor:
    """The tensors joined along ``axis`` (other dimensions equal; not the batch axis)."""
    return apply("concat", *xs, axis=axis)


def squeeze(x: Tensor, axes: Iterable[int] | int | None = None) -> Tensor:
    """x without the given axes of length 1 (all of them when None): a reshape.

    Raises:
        ShapeError: an axis is out of range or its length is not 1.
    """
    rank = x.type.rank
    if axes is None:
        drop = {a for a, d in enumerate(x.shape) if d == 1}
    else:
        drop = set()
        for a in _axes(axes) or ():
            if not -rank <= a < rank or x.shape[a % rank] != 1:
                raise ShapeError(f"squeeze: axis {a} of {x.type} is not of length 1 ({x.name})")
            drop.add(a % rank)
    return reshape(x, tuple(d for a, d in enumerate(x.shape) if a not in drop))


def expand_dims(x: Tensor, axis: int) -> Tensor:
    """x with a new axis of length 1 at ``axis`` (negative counts from the end): a reshape.
    Raises ShapeError: ``axis`` not an int (True was axis 1) or out of range."""
    if isinstance(axis, bool | np.bool_) or not isinstance(axis, int | np.integer):
        raise ShapeError(f"expand_dims: axis must be one int, got {axis!r} ({x.name})")
    axis = int(axis)
    rank = x.type.rank + 1
    if not -rank <= axis < rank:
        raise ShapeError(f"expand_dims: axis {axis} is out of range for {x.type} ({x.name})")
    shape = list(x.shape)
    shape.insert(axis % rank, 1)
    return reshape(x, tuple(shape))


# ---------------------------------------------------------------- normalization


def layer_norm(
    x: Tensor,
    *,
    eps: float = 1e-5,
    name: str | None = None,
    axes: Iterable[int] | int = -1,
) -> Tensor:
    """Layer normalization (Ba et al., 2016) over ``axes`` (default the last), with learned
    scale ``NAME.gamma`` (ones) and shift ``NAME.beta`` (zeros) of those axes' shape, as
    torch.nn.LayerNorm (eps = 1e-5): y = (x - mean) / sqrt(var + eps) * gamma + beta, mean
    and var (biased) over the axes. ``axes=(-2, -1)`` of x [N, T, C] is torch's
    ``LayerNorm((T, C))`` and Keras's ``LayerNormalization(axis=[1, 2])`` (gamma [T, C]);
    axes other than the trailing ones (Keras's axis=1 of [N, T, C]: gamma [T]) broadcast
    their gamma and beta over the others.

    Composed of primitives (mean, sub, square, rsqrt, mul, add), so fusion and autodiff see
    them; the statistics are two reductions over the axes.

    Raises:
        ShapeError: an axis out of range, repeated, or not of a fixed size (the batch N).
        OptionTypeError / GraphcError: ``eps`` not a finite number >= 0 (as batch_norm's).
    """
    rank = x.type.rank
    picked = _axes(axes) or ()
    norm = sorted({a % rank for a in picked if -rank <= a < rank})
    if not picked or len(norm) != len(picked) or any(not isinstance(x.shape[a], int) for a in norm):
        raise ShapeError(
            f"layer_norm: axes {axes!r} must be distinct axes of fixed size of {x.type} ({x.name})"
        )
    eps = check_real(eps, "layer_norm: eps", 0.0)  # -1 or NaN made rsqrt's NaN silently
    name = name or _fresh("layer_norm")
    dims = tuple(x.shape[a] for a in norm)
    gamma = param(f"{name}.gamma", dims, init="ones", dtype=x.dtype)
    beta = param(f"{name}.beta", dims, init="zeros", dtype=x.dtype)
    if norm != list(range(rank - len(norm), rank)):  # not trailing: gamma [.., 1, ..]
        spread = tuple(x.shape[i] if i in norm else 1 for i in range(norm[0], rank))
        gamma, beta = reshape(gamma, spread), reshape(beta, spread)
    over = tuple(norm)
    d = x - mean(x, axes=over, keepdims=True)
    var = mean(d * d, axes=over, keepdims=True)
    return d * apply("rsqrt", var + eps) * gamma + beta


def batch_norm(
    x: Tensor,
    *,
    momentum: float | None = None,
    eps: float | None = None,
    name: str | None = None,
    axis: int = -1,
) -> Tensor:
    """Batch normalization over the feature axis ``axis`` with torch.nn.BatchNorm1d's
    conventions (momentum 0.1, eps 1e-5, the op's defaults): in training the batch's
    statistics, and the compiled step updates the running mean and variance (states
    ``NAME.running_mean``, ``NAME.running_var``); evaluate, predict and exported libraries use
    the running statistics. Learned ``NAME.gamma`` (ones), ``NAME.beta`` (zeros), all [C].

    ``axis``: the features' axis, statistics over every other one: -1 (default, the last:
    x [N, C], or [N, T, C] as Keras's BatchNormalization(axis=-1)); 1 for graphc's
    channels-first conv outputs [N, C, H, W], per channel as torch's BatchNorm2d (and
    BatchNorm1d on [N, C, L]): with the default, x [N, C, H, W] is normalized per position of
    W. See graphc.ir.ops.norm.BatchNorm for the formulas.

    Raises:
        ShapeError: x of rank < 2, ``axis`` out of range or the batch axis N.
    """
    from .dsl import _source

    if x.type.rank < 2:
        raise ShapeError(f"batch_norm: expects x [N, C] or [N, ..., C], got {x.type} ({x.name})")
    a = BatchNormOp.feature_axis(x.type, axis)
    name = name or _fresh("batch_norm")
    c = (x.shape[a],)
    gamma = param(f"{name}.gamma", c, init="ones", dtype=x.dtype)
    beta = param(f"{name}.beta", c, init="zeros", dtype=x.dtype)
    rm = _source("state", f"{name}.running_mean", c, x.dtype, {"init": "zeros"})
    rv = _source("state", f"{name}.running_var", c, x.dtype, {"init": "ones"})
    axis = None if a == x.type.rank - 1 else a  # the default is not written (models as before)
    return apply(
        "batch_norm", x, gamma, beta, rm, rv, name=name, momentum=momentum, eps=eps, axis=axis
    )


def embedding(
    ids: Tensor,
    vocab: int,
    dim: int,
    *,
    name: str | None = None,
    dtype: str = "f32",
    padding_idx: int | None = None,
) -> Tensor:
    """Rows of a learned table ``NAME.table`` [vocab, dim] (Keras's Embedding, its uniform
    -0.05 .. 0.05 initializer; torch's nn.Embedding): ids [N, ...] -> [N, ..., dim], as
    one-hot(ids) @ table: onehot [N, ..., vocab] = [ids == k] for k in 0..vocab-1, then one
    GEMM of all its rows. Exact (each output element is one table element times 1 plus
    zeros, for a finite table); the table's gradient is onehot^T @ dy, the scatter-add of
    repeated ids. Memory: the one-hot is N * ... * vocab elements.

    ``ids`` must be a graph input of dtype i32 or float (whole numbers; gc.input("ids",
    ("N", T), dtype="i32")): every entry, predict included, and the exported library check its
    values before they run (ArgumentError naming the input, the row and the value outside
    0 .. vocab-1; an id out of range would otherwise look up a row of zeros, silently). The
    range is kept on the input: a second embedding of the same input (of another vocab size)
    narrows it to the smaller vocab for both, and the refusal names both embeddings with their
    ranges. A call that raises changes nothing (the range is written last); a name used twice is
    refused only by compile, and the input keeps that call's range.

    ``padding_idx`` (torch's nn.Embedding(padding_idx=p); negative counts from the end): row p
    starts at zeros and gets no gradient, so the optimizer never moves it (weight decay of a
    zero row included); ids equal to p still read row p (whatever set_weights put there). Built
    as onehot(ids) with column p left out, times the table, plus [ids == p] times row p read
    through a nondifferentiable cast (exact as before).

    Raises:
        ShapeError: ids not a graph input (computed ids cannot be checked), of another dtype
            or of rank 0; vocab or dim not an int >= 1; padding_idx not an int in
            -vocab .. vocab-1; dtype not f32 / f64; ids already limited elsewhere to a range
            with no value in 0 .. vocab-1 (an ONNX import's lower bound > 0).
    """
    for what, v in (("vocab", vocab), ("dim", dim)):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer) or v < 1:
            raise ShapeError(f"embedding: {what} must be an int >= 1, got {v!r}")
    vocab, dim = int(vocab), int(dim)
    pad = padding_idx
    if pad is not None and (
        isinstance(pad, bool | np.bool_)
        or not isinstance(pad, int | np.integer)
        or not -vocab <= pad < vocab
    ):
        raise ShapeError(
            f"embedding: padding_idx must be an int in {-vocab}..{vocab - 1}, got {pad!r}"
        )
    pad = None if pad is None else int(pad) % vocab
    node = ids.node
    if node.op != "input" or ids.dtype not in ("i32", "f32", "f64") or ids.type.rank < 1:
        raise ShapeError(
            f"embedding: ids must be a graph input of dtype i32 or float (its values checked "
            f"before each run), got {ids.name}: {ids.type} (op {node.op})"
        )
    lo, hi = narrowed_range(node, 0, vocab - 1, f"embedding: ids {ids.name!r}")
    # Everything that can raise runs before the input's range is written (review rvD M1).
    zero = {} if pad is None else {"zero_row": pad}  # torch's padding row starts at zeros
    table = param(
        f"{name or _fresh('embedding')}.table", (vocab, dim), init="uniform", dtype=dtype, **zero
    )
    label = table.name.removesuffix(".table")  # a shared layer's later calls: its first name
    col = reshape(ids, (*ids.shape, 1))
    if ids.dtype != dtype:  # whole numbers below 2**24: exact in f32
        col = apply("cast", col, dtype=dtype)
    keys = np.arange(vocab)
    if pad is not None:  # column p of the one-hot is 0 (-1 is no id): no gradient to row p
        keys[pad] = -1
    onehot = equal(col, constant(keys, name=f"{label}.ids", dtype=dtype))
    out = onehot @ table
    if pad is not None:  # + [ids == p] * row p, read through a cast (nondifferentiable)
        row = apply("cast", slice(table, (pad,), (pad + 1,)), dtype=dtype)
        out = out + equal(col, float(pad)) * row
    mine = f"the rows of embedding {label}: 0 .. {vocab - 1}"
    ids.node = narrow_input(node, lo, hi, mine, lookup=True)
    return out


class Embedding:
    """Layer object for Sequential: ``Embedding(vocab, dim, name=None, dtype="f32",
    padding_idx=None)`` (see
    ``embedding``; the Sequential's input must be the ids). Called on several inputs, it
    shares one table, named by its first call (``name``, or a fresh ``embeddingK``), and the
    refusals of every input name that embedding."""

    def __init__(
        self,
        vocab: int,
        dim: int,
        *,
        name: str | None = None,
        dtype: str = "f32",
        padding_idx: int | None = None,
    ):
        self.vocab, self.dim, self.name, self.dtype = vocab, dim, name, dtype
        self.padding_idx = padding_idx

    @shares_weights
    def __call__(self, x: Tensor) -> Tensor:
        return embedding(
            x, self.vocab, self.dim, name=self.name, dtype=self.dtype, padding_idx=self.padding_idx
        )

    def __repr__(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.vocab}, {self.dim}{pad})"


class LayerNorm:
    """Layer object for Sequential: ``LayerNorm(eps=1e-5, name=None, axes=-1)`` (see
    ``layer_norm``)."""

    def __init__(
        self, *, eps: float = 1e-5, name: str | None = None, axes: Iterable[int] | int = -1
    ) -> None:
        self.eps, self.name, self.axes = eps, name, axes

    @shares_weights
    def __call__(self, x: Tensor) -> Tensor:
        return layer_norm(x, eps=self.eps, name=self.name, axes=self.axes)

    def __repr__(self) -> str:
        return (
            f"LayerNorm(eps={self.eps})"
            if np.array_equal(self.axes, -1)  # axes as given: an int, a tuple, an array
            else (f"LayerNorm(eps={self.eps}, axes={self.axes!r})")
        )


class BatchNorm:
    """Layer object for Sequential: ``BatchNorm(momentum=None, eps=None, name=None,
    axis=-1)`` (see ``batch_norm``; ``axis=1`` after a Conv: per channel, torch's
    BatchNorm2d)."""

    def __init__(
        self,
        *,
        momentum: float | None = None,
        eps: float | None = None,
        name: str | None = None,
        axis: int = -1,
    ) -> None:
        self.momentum, self.eps, self.name, self.axis = momentum, eps, name, axis

    @shares_weights
    def __call__(self, x: Tensor) -> Tensor:
        """``batch_norm(x, ...)`` with this object's gamma, beta and running statistics: a
        second call shares all four (gradients summed) and, in a training step, updates the
        running statistics once per call in call order, as torch's BatchNorm1d module called
        twice does: rm <- (1 - m)((1 - m) rm + m mu1) + m mu2 (see ir.passes.decompose).
        The later calls' outputs are named ``NAME_K`` (a fresh K), the first call's ``NAME``.

        Raises:
            ShapeError: a later call on an input with another feature count or dtype.
        """
        name = self.name
        if getattr(self, "_weights", None):  # the op of a later call needs its own name
            name = _fresh(f"{self.name or 'batch_norm'}_")
        return batch_norm(x, momentum=self.momentum, eps=self.eps, name=name, axis=self.axis)

    def __repr__(self) -> str:
        return "BatchNorm()"


# ---------------------------------------------------------------- losses


def _same_shape(loss: str, pred: Tensor, target: Tensor) -> None:
    if target.shape != pred.shape:
        raise ShapeError(f"{loss}: target {target.type} must match prediction {pred.type}")


def categorical_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    label_smoothing: float = 0.0,
    weight: Any = None,
    reduction: str | None = "mean",
) -> Tensor:
    """Mean over rows of -sum_c t_c log softmax(z)_c, from logits z [N,C] and float targets
    t [N,C] (one-hot or soft, rows summing to 1); or z, t [N, ..., C] (a sequence's tokens,
    Keras's CategoricalCrossentropy on [N, T, C]): the classes on the last axis, the mean over
    every row and position. With label smoothing e the targets become
    (1 - e) t + e / C (as tf.keras.losses.CategoricalCrossentropy and torch.nn.CrossEntropyLoss).
    A class whose target is 0 adds 0 even where its logit is -inf (a masked class: 0 log 0 = 0,
    as scipy.special.xlogy and optax); a -inf logit where the target is above 0 gives an
    infinite loss.

    torch's F.cross_entropy with class-probability targets: ``weight`` w (C numbers >= 0)
    makes row i's term -sum_c w_c t_c log p_c; ``reduction`` "mean" (default) divides the
    sum by the rows (positions), not by the weights (torch's rule for probability targets,
    and Keras's "sum_over_batch_size", taken as a name too), "sum" adds them up, "none"
    returns each row's term, f32[N] (f32[N, T, ..]), to reduce before training. The weights
    are a constant of the graph (gc.constant: saved and exported with the model).

    Raises:
        ShapeError: the shapes differ or the logits are of rank < 2; weight not of C entries,
            negative, not finite or all 0.
        OptionTypeError: label_smoothing not a number (a bool, a string); weight not numbers;
            an unknown reduction.
        GraphcError: label_smoothing outside [0, 1] or NaN.

    Warns ``LossInputWarning`` when ``logits`` is a softmax's output (probabilities).
    """
    _same_shape("categorical_cross_entropy", logits, targets)
    check_logits("categorical_cross_entropy", logits, "softmax", "or predict with softmax(logits)")
    if logits.type.rank < 2:
        raise ShapeError(
            f"categorical_cross_entropy: logits must be [N, C] or [N, ..., C], got {logits.type}"
        )
    # a bool is no rate: True was read as 1.0, every target the uniform 1/C, silently
    label_smoothing = check_real(label_smoothing, "categorical_cross_entropy: label_smoothing", 0.0)
    if label_smoothing > 1.0:
        raise GraphcError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    red = loss_reduction("categorical_cross_entropy", reduction, False)
    t = targets
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    if weight is not None:  # w_c t_c: the class weights on the last axis
        w = class_weights("categorical_cross_entropy", weight, logits)
        t = t * constant(np.array(w), dtype=logits.dtype)
    # t log p with 0 log 0 = 0 (scipy's xlogy): a class masked out with a -inf logit and a
    # target of 0 adds nothing (t * -inf was NaN, optax #896); log p is raised to the dtype's
    # lowest finite value only where t == 0, so the product is 0 and its gradients finite
    ls = log_softmax(logits)
    lowest = float(np.finfo(logits.type.np_dtype).min)
    ls = where(equal(t, 0.0), maximum(ls, lowest), ls)
    per_row = sum(t * ls, axes=logits.type.rank - 1)
    loss = -mean(per_row) if red == "mean" else -sum(per_row) if red == "sum" else -per_row
    return _tag(loss, "categorical_cross_entropy", logits, targets)


BCE_EPSILON = 1e-7  # tf.keras.backend.epsilon(): the clamp of binary_cross_entropy on probabilities


def binary_cross_entropy_from_probs(probs: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of probabilities p against targets t in [0, 1], in the clamped
    Keras form: p is clipped to [eps, 1 - eps] with eps = 1e-7, then
    -mean(t log p + (1 - t) log(1 - p)). The clamp keeps the loss finite for p = 0 or 1 (at
    most -log(1e-7) = 16.1 per element) and stops the gradient outside the clamp; the logits
    form (``binary_cross_entropy``) is exact and preferred when logits are at hand.
    """
    _same_shape("binary_cross_entropy", probs, targets)
    p = apply("clip", probs, min=BCE_EPSILON, max=1.0 - BCE_EPSILON)
    ll = targets * apply("log", p) + (1.0 - targets) * apply("log", 1.0 - p)
    return _tag(-mean(ll), "binary_cross_entropy_probs", probs, targets)


def huber(pred: Tensor, target: Tensor, *, delta: float = 1.0) -> Tensor:
    """Mean Huber loss: 0.5 d^2 where |d| <= delta, else delta (|d| - 0.5 delta), d = pred -
    target (torch.nn.HuberLoss, tf.keras.losses.Huber), computed as 0.5 q^2 + delta (|d| - q)
    with q = min(|d|, delta).

    Raises:
        ShapeError: the shapes differ. OptionTypeError / GraphcError: ``delta`` not a finite
            number > 0 (a string raised Python's TypeError).
    """
    _same_shape("huber", pred, target)
    delta = check_real(delta, "huber: delta", 0.0, open_low=True)
    a = apply("abs", pred - target)
    q = minimum(a, delta)
    return _tag(mean(0.5 * q * q + delta * (a - q)), "huber", pred, target)


def mean_absolute_error(pred: Tensor, target: Tensor) -> Tensor:
    """mean(|pred - target|) over all elements (gradient 0 where they are equal)."""
    _same_shape("mean_absolute_error", pred, target)
    return _tag(mean(apply("abs", pred - target)), "mean_absolute_error", pred, target)


# every GraphcError a user can cause here names the user's line (as in graphc.dsl)
for _name, _fn in list(globals().items()):
    if (
        callable(_fn)
        and not isinstance(_fn, type)
        and not _name.startswith("_")
        and getattr(_fn, "__module__", None) == __name__
    ):
        globals()[_name] = names_user_line(_fn)
for _name in ("categorical_cross_entropy", "huber", "mean_absolute_error"):
    LOSSES[_name] = globals()[_name]  # the losses compile_sequential accepts by name
del _name, _fn
