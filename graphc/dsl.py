"""The Python DSL: tensors that record a graph as they are combined, with shapes checked on the spot.

x = gc.input("x", ("N", 64))
h = gc.dense(x, 32, activation="relu")
logits = gc.dense(h, 10)
loss = gc.softmax_cross_entropy(logits, gc.input("labels", ("N",), dtype="i32"))
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import itertools
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from graphc.ir.builder import infer_type
from graphc.ir.errors import ArgumentError, GraphcError, OptionTypeError, ShapeError
from graphc.ir.graph import Graph, Node, make_attrs, make_node
from graphc.ir.ops import ACTIVATIONS as ACTIVATION_OPS
from graphc.ir.ops import OPS, POINTWISE_OPS, REQUIRED
from graphc.ir.ops.random import number_dropout_streams
from graphc.ir.types import DTYPES, TensorType
from graphc.runtime.checks import check_bool

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_counter = itertools.count()
_given: set[str] = set()  # names tensors were given, and their prefixes: _fresh skips them
_layer_calls: list[list] = []  # [layer, its weights, how many this call took]: call_layer
_sequential_named: set[str] = set()  # layer names a Sequential gave (hint of collect's error)
# activation names that are an op with other attrs, or another name for an op
ACTIVATION_ALIASES: dict[str, tuple[str, dict]] = {
    "swish": ("silu", {}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
}
# the names dense(..., activation=...) accepts: every op with the activation trait, the
# aliases, or None
ACTIVATIONS: tuple[str | None, ...] = (*sorted([*ACTIVATION_OPS, *ACTIVATION_ALIASES]), None)


def _in_graphc(path: str) -> bool:
    """Whether source file ``path`` (absolute) belongs to graphc's packages."""
    return any(
        path.startswith(os.path.join(_PKG_DIR, d) + os.sep)
        for d in ("graphc", "ir", "codegen", "runtime")
    )


def _user_loc() -> str | None:
    """file:line of the first stack frame outside graphc (the user's call site); None when
    there is none (graphc's command line: no frame but the interpreter's frozen modules)."""
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen "):  # runpy etc. of `python -m graphc`
            f = f.f_back
            continue
        path = os.path.abspath(f.f_code.co_filename)
        if not _in_graphc(path):
            rel = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
            return f"{rel}:{f.f_lineno}"
        f = f.f_back
    return None


def _user_stacklevel() -> int:
    """``warnings.warn``'s stacklevel of the first frame outside graphc, for a warning issued
    in the caller of this function (so the warning names the user's line)."""
    level, f = 1, sys._getframe(1)
    while f is not None:
        if not _in_graphc(os.path.abspath(f.f_code.co_filename)):
            return level
        level, f = level + 1, f.f_back
    return 1


_OPERATORS = {
    "__add__": "+",
    "__radd__": "+",
    "__sub__": "-",
    "__rsub__": "-",
    "__mul__": "*",
    "__rmul__": "*",
    "__truediv__": "/",
    "__rtruediv__": "/",
    "__matmul__": "@",
    "__neg__": "unary -",
    "__pow__": "**",
    "__rpow__": "**",
    "__abs__": "abs()",
    "__getitem__": "[]",
    "__gt__": ">",
    "__ge__": ">=",
    "__lt__": "<",
    "__le__": "<=",
}


def _dsl_call() -> str | None:
    """Provenance: the graphc call the user wrote (``gc.dense``, ``Dense fc1``, ``operator *``)."""
    f = sys._getframe(1)
    last: str | None = None
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not any(
            path.startswith(os.path.join(_PKG_DIR, d) + os.sep)
            for d in ("graphc", "ir", "codegen", "runtime")
        ):
            return last
        name = f.f_code.co_name
        owner = f.f_locals.get("self") if name == "__call__" else None
        if owner is not None:  # a layer object: the innermost one names the call
            label = getattr(owner, "name", None)
            return type(owner).__name__ + (f" {label}" if isinstance(label, str) else "")
        if name in _OPERATORS:
            last = f"operator {_OPERATORS[name]}"
        elif not name.startswith("_"):
            layer = f.f_locals.get("name") if name in ("dense", "perceptron") else None
            last = f"gc.{name}" + (f" {layer}" if isinstance(layer, str) else "")
        f = f.f_back
    return None


# A bool where a Tensor or a number belongs is often the identity result of x == y / x != y.
_IDENTITY_HINT = (
    " (x == y and x != y of two graphc Tensors are Python's identity, a bool: "
    "for a mask write gc.equal(x, y) / gc.not_equal(x, y))"
)


class Tensor:
    """A value of the graph being declared: its node and the tensors it was computed from.

    Supports ``+ - * / @`` and unary ``-`` with tensors and Python numbers (numbers become
    scalar constants of the tensor's dtype), ``x ** number`` (gc.pow), ``number ** x`` for a
    finite number > 0 and a float x (exp(x * log(number)); numpy's values), ``abs(x)``, and
    numpy's basic indexing ``x[:, -1]``, ``x[..., 1:3]``, ``x[:, None]``
    (graphc.functional.getitem; the batch axis whole).
    ``x > y``, ``>=``, ``<``, ``<=`` are gc.greater & co. (masks of 1.0 / 0.0); ``==`` and
    ``!=`` between Tensors stay Python's identity (a Tensor is hashed by it), and against a
    number or an array raise an OptionTypeError naming gc.equal / gc.not_equal. Not iterable
    (a TypeError, not Python's walk of x[0], x[1], ...), and no truth value (``if x > 0:``
    would always have been true): a TypeError, as TensorFlow's graph tensors and JAX's
    tracers.
    """

    __slots__ = ("kind", "node", "parents", "prediction", "target", "value")
    # numpy defers to the Tensor's operators: ``np.ones(4) + x`` was numpy's broadcast of the
    # array over the Tensor (an object array of 4 Tensors 1 + x, which compile took as 4
    # outputs); now ``x.__radd__`` refuses the array as ``x + np.ones(4)`` does. A numpy
    # scalar on the left (np.float32(2) * x) still gives a Tensor.
    __array_ufunc__ = None

    def __init__(self, node: Node, parents: tuple[Tensor, ...] = ()) -> None:
        self.node = node
        self.parents = parents
        self.kind: str | None = None  # the loss it computes, for the runtime's metrics
        self.prediction: str | None = None  # that loss's prediction operand (its name)
        self.target: str | None = None  # and its target operand (labels, targets: its name)
        self.value: np.ndarray | None = None  # a constant's array (gc.constant)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def type(self) -> TensorType:
        return self.node.type

    @property
    def shape(self) -> tuple:
        return self.node.type.shape

    @property
    def dtype(self) -> str:
        return self.node.type.dtype

    def __repr__(self) -> str:
        return f"Tensor({self.name}: {self.type}, op={self.node.op})"

    def _lift(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, bool) or not isinstance(other, int | float | np.number):
            raise ArgumentError(
                f"{self.name} : {self.type} combined with {type(other).__name__} {other!r:.40}: "
                f"use a graphc Tensor or a number"
                f"{_IDENTITY_HINT if isinstance(other, bool) else ''} (at {_user_loc()})"
            )
        return const(float(other), dtype=self.dtype)

    def __add__(self, o):
        return apply("add", self, self._lift(o))

    def __radd__(self, o):
        return apply("add", self._lift(o), self)

    def __sub__(self, o):
        return apply("sub", self, self._lift(o))

    def __rsub__(self, o):
        return apply("sub", self._lift(o), self)

    def __mul__(self, o):
        return apply("mul", self, self._lift(o))

    def __rmul__(self, o):
        return apply("mul", self._lift(o), self)

    def __truediv__(self, o):
        return apply("div", self, self._lift(o))

    def __rtruediv__(self, o):
        return apply("div", self._lift(o), self)

    def __matmul__(self, o):
        return matmul(self, o)

    def __neg__(self):
        return apply("neg", self)

    def __pow__(self, o):
        from .functional import pow as pow_

        return pow_(self, o)

    def __rpow__(self, o):
        # number ** x is exp(x * log(number)): numpy's value for every x, inf and NaN included,
        # for a finite number > 0 other than 1; 1 ** x is 1 everywhere (numpy's, NaN included).
        if (
            isinstance(o, bool | np.bool_)
            or not isinstance(o, numbers.Real)
            or not 0 < float(o) < math.inf
        ):
            raise ArgumentError(
                f"{o!r:.40} ** {self.name}: graphc raises a number > 0 (finite) to a tensor's "
                f"power (exp(x * log(number))), got {type(o).__name__} {o!r:.40} "
                f"(at {_user_loc()})"
            )
        if self.dtype not in ("f32", "f64"):
            raise ArgumentError(
                f"{o!r:.40} ** {self.name}: the exponent must be a float tensor, got "
                f"{self.type}; cast it first: gc.cast({self.name}, dtype='f32') "
                f"(at {_user_loc()})"
            )
        if float(o) == 1.0:
            return apply("where", self, *(const(1.0, dtype=self.dtype),) * 2)
        return apply("exp", self * math.log(float(o)))

    def __abs__(self):
        return apply("abs", self)

    def __getitem__(self, key):
        from .functional import getitem

        return getitem(self, key)

    def _compare(self, op: str, o: Any) -> Tensor:
        return apply(op, *_operands(op, self, o))

    # == and != between Tensors stay Python's identity: a Tensor is hashed by it (dict keys and
    # sets of tensors, in the compiler and in users' code). Against a number or an array, numpy
    # and torch users mean a mask: identity would be a silent False / True, so it is refused,
    # naming gc.equal / gc.not_equal.
    __hash__ = object.__hash__

    def _identity(self, op: str, o: Any) -> bool:
        if isinstance(o, int | float | np.number | np.ndarray):
            mask = "equal" if op == "==" else "not_equal"
            raise OptionTypeError(
                f"{self.name} {op} {o!r:.40}: == and != compare graphc Tensors by identity "
                f"(a Tensor is hashed by it); for the mask of x {op} y write "
                f"gc.{mask}(x, y) (at {_user_loc()})"
            )
        return self is o if op == "==" else self is not o

    def __eq__(self, o):
        return self._identity("==", o)

    def __ne__(self, o):
        return self._identity("!=", o)

    def __gt__(self, o):
        return self._compare("greater", o)

    def __ge__(self, o):
        return self._compare("greater_equal", o)

    def __lt__(self, o):
        return self._compare("less", o)

    def __le__(self, o):
        return self._compare("less_equal", o)

    def __bool__(self):
        raise TypeError(
            f"the truth value of a graphc Tensor is not known while the graph is declared "
            f"({self.name}: {self.type}); compare with gc.greater / gc.where, or test "
            f"'is None' (at {_user_loc()})"
        )

    def __iter__(self):
        raise TypeError(
            f"a graphc Tensor is not iterable ({self.name}: {self.type}); index it, "
            f"x[:, i], or slice it"
        )


def _fresh(prefix: str = "%") -> str:
    """An automatic name: ``prefix`` and the next number of the process's counter, skipping
    names a tensor was given (see ``_taken``): ``dense(x, 8, name="dense3")`` and then an
    unnamed ``dense`` numbered 3 made two different ``dense3.w``."""
    while True:
        name = f"{prefix}{next(_counter)}"
        if name not in _given:
            return name


def _taken(name: str) -> str:
    """Record ``name``, given to a tensor, and each of its dotted prefixes (the layer name
    "dense3" of "dense3.w"), so that ``_fresh`` never makes them; returns ``name``."""
    _given.add(name)
    for i, c in enumerate(name):
        if c == ".":
            _given.add(name[:i])
    return name


def apply(op: str, *inputs: Tensor, name: str | None = None, **attrs: Any) -> Tensor:
    """Emit ``op`` on ``inputs``; the result type is inferred now (a mismatch raises here)."""
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise ArgumentError(
                f"{op}: operand {i} must be a graphc Tensor, got {type(t).__name__} {t!r:.40}"
            )
    attrs = {k: _plain(v) for k, v in attrs.items() if v is not None}
    name = _taken(name) if name else _fresh()
    loc = _user_loc()
    names = tuple(t.name for t in inputs)
    typ = infer_type(op, names, [t.type for t in inputs], attrs, name, loc)
    return Tensor(
        Node(name, op, names, typ, make_attrs(attrs), loc=loc, origin=_dsl_call()), tuple(inputs)
    )


def _plain(v: Any) -> Any:
    """An attr value with numpy scalars as Python numbers (np.int64(1) from a shape computation
    is the axis 1), inside tuples and lists too; anything else unchanged (the op checks it)."""
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, tuple | list):
        return type(v)(_plain(e) for e in v)
    return v


def dtype_name(dtype: Any) -> str:
    """graphc's name of a dtype ("f32", "f64", "i32", "i64"), also from numpy's spellings of
    the same types ("float32", np.int32, np.dtype("int64"), "i4").

    Raises:
        ValueError: any other type, listing the four.
    """
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        nd = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        nd = None
    for k, v in DTYPES.items():
        if nd is not None and nd == np.dtype(v):
            return k
    ours = ", ".join(DTYPES)
    theirs = ", ".join(np.dtype(v).name for v in DTYPES.values())
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {ours} (numpy's {theirs})")


def index_value(v: Any) -> Any:
    """``v`` as a Python int when it is a numpy integer scalar (``X.shape[1] // 2`` is an int,
    but ``y.max() + 1`` or ``np.prod(...)`` is not), else unchanged: the DSL's checks of sizes,
    counts and axes then take both, as torch's and Keras's do."""
    return int(v) if isinstance(v, np.integer) else v


def real_value(v: Any) -> Any:
    """``v`` as a Python float when it is a numpy real scalar (np.float32(0.5), a rate read
    from an array), else unchanged; a numpy bool stays a bool-like refusal for the checks."""
    return float(v) if isinstance(v, np.floating | np.integer) else v


def _source(op: str, name: str, shape: Iterable, dtype: str, attrs: dict | None = None) -> Tensor:
    if not isinstance(name, str) and isinstance(shape, str):  # gc.input(("N", 4), "x")
        raise GraphcError(
            f"{op}: the name comes first, then the shape: gc.{op}({shape!r}, {name!r})"
        )
    if not isinstance(name, str) or not name.replace("_", "a").replace(".", "a").isalnum():
        raise GraphcError(f"{op} name {name!r}: use letters, digits, '_' and '.'")
    if isinstance(shape, int) or not isinstance(shape, Iterable):
        example = f"('N', {shape!r})" if op == "input" else f"({shape!r},)"
        raise ShapeError(
            f"{op} {name!r}: the shape must be a tuple of sizes, such as {example}; got {shape!r}"
        )
    dims = tuple(index_value(d) for d in shape)
    try:
        t = TensorType(dims, dtype_name(dtype))
    except (ValueError, TypeError) as e:
        batch = op == "input" and any(d is None or (type(d) is int and d < 0) for d in dims)
        hint = " (the batch size is 'N': Keras's None, torch's and ONNX's -1)" if batch else ""
        raise ShapeError(f"{op} {name!r}: {e}{hint}") from None
    if 0 in t.shape:
        raise ShapeError(f"{op} {name!r}: shape {t.shape} has a dimension of size 0 (no elements)")
    if _layer_calls and op != "input":  # a weight of a layer object (see call_layer)
        layer, sources, i = _layer_calls[-1]
        _layer_calls[-1][2] = i + 1
        if i < len(sources):
            if sources[i].type != t:
                raise ShapeError(
                    f"{layer!r} is called again, on an input that needs its weight "
                    f"{sources[i].name} as {t}; it is {sources[i].type} since its first call "
                    "(a layer object's calls share its weights, as in Keras and torch)"
                )
            return sources[i]
        sources.append(Tensor(make_node(_taken(name), op, (), t, attrs, loc=_user_loc())))
        return sources[-1]
    return Tensor(make_node(_taken(name), op, (), t, attrs, loc=_user_loc()))


def call_layer(layer: Any, fn: Callable[[], Tensor]) -> Tensor:
    """``fn()`` (a layer object's functional form) with the params and states it declares
    bound to ``layer``: its first call declares them, every later call gets the same tensors
    back in the same order, so that calling a layer object twice shares its weights (their
    gradients summed) as calling a Keras layer or a torch module twice does.

    Raises:
        ShapeError: a later call needs a weight of another shape or dtype (an input of another
            width).
    """
    sources = layer.__dict__.setdefault("_weights", [])
    _layer_calls.append([layer, sources, 0])
    try:
        return fn()
    finally:
        _layer_calls.pop()


def shares_weights(call: Callable[[Any, Tensor], Any]) -> Callable[[Any, Tensor], Any]:
    """Decorator of a layer object's ``__call__(self, x)``: its body runs under
    ``call_layer(self, ...)``, so that every call of the object shares its weights."""

    @functools.wraps(call)
    def shared(self: Any, x: Tensor) -> Any:
        return call_layer(self, lambda: call(self, x))

    return shared


def _named(op: str, name: Any, shape: Any, example: str) -> None:
    """Refuse a source declared without its name or its shape (Python's TypeError 'missing 1
    required positional argument' said neither why nor how), naming the call meant."""
    word, role = ("x", "the feeds of predict and fit") if op == "input" else ("w", "get_weights")
    if name is None or (shape is None and isinstance(name, tuple | list)):
        # no name at all, or the shape given alone (gc.param((3, 4)))
        shown = repr(tuple(name)) if name is not None else example if shape is None else shape
        raise OptionTypeError(
            f"{op}: needs a name, then the shape: gc.{op}({word!r}, {shown}) (the name keys "
            f"the value in {role}, saved files and the exported library)"
        )
    if shape is None:
        raise OptionTypeError(f"{op} {name!r}: needs a shape: gc.{op}({name!r}, {example})")


def input(name: str | None = None, shape: Iterable | None = None, dtype: str = "f32") -> Tensor:
    """A data placeholder; use "N" for the batch dimension, e.g. ``input("x", ("N", 64))``.

    ``dtype``: "f32" (features, targets), "i32" (class labels), "f64" or "i64"; numpy's
    spellings of these (``"int32"``, ``np.float32``) are accepted.

    Raises:
        ShapeError: a shape that is not ints and "N", a dimension of 0, or another dtype.
        OptionTypeError: no name or no shape (naming the call meant).
    """
    _named("input", name, shape, "('N', 4)")
    return _source("input", name, shape, dtype)


def param(
    name: str | None = None,
    shape: Iterable | None = None,
    init: str = "glorot_uniform",
    dtype: str = "f32",
    *,
    trainable: bool = True,
    l1: float = 0.0,
    l2: float = 0.0,
    **init_args: float,
) -> Tensor:
    """A parameter initialized by ``init`` (see graphc.init) when the model is built.

    ``init`` is an initializer's name, or the starting values themselves (an array of
    ``shape``, or one number for every element: torch's ``nn.Parameter(torch.tensor(...))``,
    Keras's ``Constant`` initializer), converted to ``dtype`` with gc.constant's checks.
    ``trainable=False`` makes it a weight the optimizer never changes (no gradient is
    computed for it), like Keras's non-trainable weights: it is still saved, exported and
    settable with ``set_weights``. ``l1``/``l2``: weight penalties; compile adds
    l1 * sum(|P|) + l2 * sum(P^2) to the loss (the Keras regularizers' formulas) when the loss
    depends on P.

    Raises:
        OptionTypeError: no name or no shape (naming the call meant: ``gc.param('w', (3, 4))``).
        GraphcError: an unknown initializer, ``trainable`` not a bool, a negative penalty;
            init values that are not numbers, hold NaN or infinity, exceed ``dtype``'s range
            or are not of ``shape``.
    """
    from graphc.init import check_initializer

    _named("param", name, shape, "(3, 4)")

    if not isinstance(trainable, bool):
        raise GraphcError(f"param {name!r}: trainable must be True or False, got {trainable!r}")
    values = None
    if not isinstance(init, str):  # the starting values (an ndarray failed in `init == ...`)
        values = _array_value(init, dtype, f"param {name!r}: init")
        want = tuple(index_value(d) for d in shape)  # type: ignore[union-attr]  # given
        if values.ndim == 0 and all(type(d) is int for d in want):
            values = np.full(want, values, values.dtype)
        if tuple(values.shape) != want:
            raise GraphcError(
                f"param {name!r}: init values of shape {values.shape} for the declared shape {want}"
            )
        if init_args:
            raise GraphcError(f"param {name!r}: init values take no options {sorted(init_args)}")
        init = "array"
    elif init == "array":
        raise GraphcError(
            f"param {name!r}: give the values themselves as init (gc.constant(array) for fixed "
            "ones)"
        )
    else:
        check_initializer(init, init_args, {"f32": np.float32, "f64": np.float64}.get(dtype))
    attrs: dict[str, Any] = {"init": init}
    for key, w in (("l1", real_value(l1)), ("l2", real_value(l2))):
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w < float("inf"):
            raise GraphcError(f"param {name!r}: {key} must be a finite number >= 0, got {w!r}")
        if w:
            attrs[key] = float(w)
    if init_args:
        attrs["init_args"] = tuple(sorted((k, float(v)) for k, v in init_args.items()))
    if not trainable:
        attrs["trainable"] = False
    t = _source("param", name, shape, dtype, attrs)
    if values is not None:
        t.value = values  # travels as Program.constants, as gc.constant's values
    return t


def constant(value: Any, name: str | None = None, dtype: str = "f32") -> Tensor:
    """A constant array in the graph: a non-trainable parameter holding ``value``.

    Its values live in the model's parameter region, so that they travel with ``save``,
    ``export`` (the library computes with them) and the model file, and ``set_weights`` can
    replace them; the optimizer never changes them. Scalars are better written as numbers
    (``x * 2.0``), which become IR constants.

    Args:
        value: an array-like of numbers (any shape, converted to ``dtype``).
        name: the parameter's name (default: ``constant_`` and a digest of the values and
            shape, so the same array gives the same name in every process).
        dtype: "f32" (default) or "f64".

    Raises:
        GraphcError: ``value`` is not numeric or is empty, or holds NaN or infinity.
    """
    arr = _array_value(value, dtype, "constant: value")
    if name is None:
        digest = hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()[:12]
        name = f"constant_{digest}"
    t = _source("param", name, arr.shape, dtype, {"init": "array", "trainable": False})
    t.value = arr
    return t


def _array_value(value: Any, dtype: str, what: str) -> np.ndarray:
    """``value`` as a finite array of ``dtype`` ("f32" or "f64"); GraphcError naming ``what``
    when it is not numbers, is empty, holds NaN or infinity or exceeds the dtype's range."""
    np_dtype = {"f32": np.float32, "f64": np.float64}.get(dtype)
    if np_dtype is None:
        raise GraphcError(f"{what.split(':')[0]}: dtype must be 'f32' or 'f64', got {dtype!r}")
    try:
        with np.errstate(over="ignore"):
            arr = np.array(value, dtype=np_dtype)
    except (TypeError, ValueError) as e:
        raise GraphcError(f"{what} is not an array of numbers ({e})") from None
    if arr.size == 0:
        raise GraphcError(f"{what} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        wide = np.asarray(value, dtype=np.float64)
        if np.all(np.isfinite(wide)):  # finite numbers that the cast made inf
            at = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise GraphcError(
                f"{what}{list(at)} = {float(wide[at])!r} is beyond "
                f"{np.dtype(np_dtype).name}'s range (largest {np.finfo(np_dtype).max:.4g})"
            )
        raise GraphcError(f"{what} holds NaN or infinity")
    return arr


def constant_values(outputs: Iterable[Tensor]) -> dict[str, np.ndarray]:
    """name -> array of every ``gc.constant`` that ``outputs`` depend on."""
    out: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.value is not None:
            out[t.name] = t.value
        stack.extend(t.parents)
    return out


def const(value: float, dtype: str = "f32") -> Tensor:
    """A scalar constant (a Python or numpy number, or a 0-d array).

    Raises:
        ArgumentError: ``value`` is not one number (an array: use ``gc.constant``).
    """
    if (
        isinstance(value, bool)
        or np.ndim(value) != 0
        or not isinstance(
            np.asarray(value).item() if isinstance(value, np.ndarray) else value,
            int | float | np.number,
        )
    ):
        shape = f" of shape {np.shape(value)}" if np.ndim(value) else ""
        raise ArgumentError(
            f"const: expects one number, got {type(value).__name__}{shape}; for an array of "
            "values use gc.constant(array)"
        )
    v = float(np.asarray(value).item() if isinstance(value, np.ndarray) else value)
    if dtype == "i32" and not (v.is_integer() and -(2**31) <= v < 2**31):
        raise ArgumentError(
            f"const: {value!r} is not a whole number in int32's range, so it cannot be an i32 "
            "constant (an i32 tensor compared or combined with it): cast the tensor to f32 "
            "first (gc.cast), or give a whole number"
        )
    return apply("const", value=v, dtype=dtype)


def op_function(op: str) -> Callable[..., Tensor]:
    """The DSL function of a registered op: ``f(x[, y], *, name=None, **attrs) -> Tensor``.

    Its keyword arguments are the op's declared attrs with their defaults (``Op.attrs``, the one
    place a default is written); an attr given as None takes its default (np.clip(x, None, 1)).
    A one-operand op also takes its attrs positionally after the tensor, in their declared
    order (``gc.clip(x, 0.0, 6.0)`` as torch.clamp, ``gc.leaky_relu(x, 0.2)`` as
    F.leaky_relu). Its docstring is the op's. Unknown keywords raise GraphcError.
    """
    spec = OPS[op]

    def f(*xs: Tensor, name: str | None = None, **attrs: Any) -> Tensor:
        if spec.arity == 1 and len(xs) > 1 and not any(isinstance(v, Tensor) for v in xs[1:]):
            extra, xs = xs[1:], xs[:1]
            order = list(spec.attrs)
            twice = [k for k in order[: len(extra)] if k in attrs]
            if len(extra) > len(order) or twice:
                raise GraphcError(
                    f"{op}: takes one tensor, then at most {len(order)} attrs "
                    f"({', '.join(order)}) by position or keyword; got {len(extra)} after the "
                    f"tensor"
                    + (f", and {', '.join(twice)} twice" if twice else "")
                    + f" ({_user_loc()})"
                )
            attrs = {**dict(zip(order, extra)), **attrs}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        unknown = sorted(set(attrs) - set(spec.attrs))
        if unknown or len(xs) != spec.arity:
            raise GraphcError(
                f"{op}: takes {spec.arity} tensor(s) and the keywords "
                f"{', '.join(spec.attrs) or 'none'} (plus name); got {len(xs)} tensor(s)"
                + (f" and {', '.join(unknown)}" if unknown else "")
                + f" ({_user_loc()})"
            )
        if len(xs) == 2 and op in POINTWISE_OPS:  # a number on either side, as add's
            xs = _operands(op, *xs)
        return apply(op, *xs, name=name, **spec.attr_values(attrs))

    f.__name__ = f.__qualname__ = op
    f.__code__ = f.__code__.replace(co_name=op)  # provenance reads the frame's name: gc.tanh
    f.__doc__ = type(spec).__doc__
    params = [
        inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a in "xyz"[: spec.arity or 0]
    ]
    defaults = [v is not REQUIRED for v in spec.attrs.values()]
    in_order = defaults == sorted(defaults)  # a positional one without default after one with
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if spec.arity == 1 and in_order else None
    params += [
        inspect.Parameter(
            k,
            kind or inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if v is REQUIRED else v,
        )
        for k, v in spec.attrs.items()
    ]
    params.append(inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None))
    f.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return f


transpose = op_function("transpose")


def softmax(x: Tensor, axis: int = -1, *, name: str | None = None) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) over ``axis`` (default the last, Keras's
    ``softmax(x, axis=-1)``, torch's ``softmax(x, dim)``) of x of rank >= 2; see
    ``softmax_along`` for how. Over the batch axis N it normalizes across the samples (as
    the row-wise op does over x [C, N]): predict then runs all rows in one call.

    Raises:
        ShapeError: a rank below 2 or ``axis`` out of range.
    """
    return softmax_along(x, axis, log=False, name=name)


def softmax_along(x: Tensor, axis: int, *, log: bool, name: str | None = None) -> Tensor:
    """softmax (or log_softmax with ``log``) of x over ``axis``: the row-wise op on x [N, C],
    or on x reshaped to rows [R, C] when the axis is the last and N is no other axis's
    neighbour to merge (x without N); otherwise (x [N, T, C], another axis) composed per the
    definition with the maximum subtracted first (stable; never overflows):
    y = exp(x - m) / sum(exp(x - m)), log y = (x - m) - log(sum(exp(x - m))).

    Raises:
        ShapeError: a rank below 2 or ``axis`` not an int in range.
    """
    op = "log_softmax" if log else "softmax"
    r = x.type.rank
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or not -r <= axis < r:
        raise ShapeError(f"{op}: axis {axis!r} is not an axis of {x.type} ({x.name})")
    a = int(axis) % r
    if r < 2:
        raise ShapeError(f"{op}: expects x of rank >= 2, got {x.type} ({x.name})")
    if a == r - 1 and (r == 2 or "N" not in x.shape):
        if r == 2:
            return apply(op, x, name=name)
        rows = reshape(x, (math.prod(x.shape[:-1]), x.shape[-1]))
        return (
            reshape(apply(op, rows), x.shape)
            if name is None
            else apply("reshape", apply(op, rows), name=name, shape=x.shape)
        )
    d = x - apply("max", x, axes=(a,), keepdims=True)
    e = apply("exp", d)
    s = apply("sum", e, axes=(a,), keepdims=True)
    if log:
        return apply("sub", d, apply("log", s), name=name)
    return apply("div", e, s, name=name)


def _operands(op: str, x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """(x, y) of a binary pointwise op as Tensors: a Python or numpy number on either side
    becomes a constant of the other operand's dtype (as the operators ``+ - * /`` do).

    Raises:
        ArgumentError: neither operand is a Tensor, or one is neither a Tensor nor a number.
    """
    if isinstance(x, Tensor):
        return x, x._lift(y)
    if isinstance(y, Tensor):
        return y._lift(x), y
    raise ArgumentError(
        f"{op}: at least one operand must be a graphc Tensor, got {type(x).__name__} and "
        f"{type(y).__name__} (at {_user_loc()})"
    )


def add(x: Tensor | float, y: Tensor | float) -> Tensor:
    """x + y, elementwise with broadcasting (a number on either side)."""
    return apply("add", *_operands("add", x, y))


def sub(x: Tensor | float, y: Tensor | float) -> Tensor:
    """x - y, elementwise with broadcasting (a number on either side)."""
    return apply("sub", *_operands("sub", x, y))


def mul(x: Tensor | float, y: Tensor | float) -> Tensor:
    """x * y, elementwise with broadcasting (a number on either side)."""
    return apply("mul", *_operands("mul", x, y))


def div(x: Tensor | float, y: Tensor | float) -> Tensor:
    """x / y, elementwise with broadcasting (a number on either side)."""
    return apply("div", *_operands("div", x, y))


def maximum(x: Tensor | float, y: Tensor | float) -> Tensor:
    """Elementwise max with broadcasting (a number on either side; NaN if either is NaN; at a
    tie the gradient is split 0.5/0.5, as in PyTorch and JAX)."""
    return apply("maximum", *_operands("maximum", x, y))


def dropout(x: Tensor, p: float, *, seed: int = 0, name: str | None = None) -> Tensor:
    """Inverted dropout: in training each element is kept with probability 1 - p and scaled by
    1 / (1 - p); at evaluation, prediction and in exported inference code it is the identity.

    The mask is a pure function of (seed, training step, this node, element index), drawn
    inside the compiled kernel by a counter-based generator (SplitMix64; see
    graphc.ir.ops.random), so the JIT, an exported training library and the reference
    interpreter draw the same mask, and the backward pass reuses it. The node's stream is
    the CRC-32 of ``name`` when given, else derived from the graph's structure (what the
    dropout depends on; ``number_dropout_streams``), so the same network built twice in one
    process draws the same masks and each one's checkpoint loads into the other.

    Raises:
        GraphcError: p outside [0, 1) or seed not an int in [0, 2^63).
    """
    import zlib

    p, seed = real_value(p), index_value(seed)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
        raise GraphcError(f"dropout: p must be a number in [0, 1), got {p!r} ({_user_loc()})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise GraphcError(f"dropout: seed must be an int in [0, 2^63), got {seed!r}")
    if p == 0:
        return x
    # A named dropout's stream is the CRC-32 of its name; an unnamed one gets its stream from
    # the graph's structure when the graph is collected (ir.ops.random.number_dropout_streams),
    # never from the process-wide counter behind automatic names.
    stream = zlib.crc32(name.encode()) if name is not None else None
    step = Tensor(make_node("step", "state", (), TensorType((), "i64"), {"init": "zeros"}))
    return apply("dropout", x, step, name=name or _fresh(), p=float(p), seed=seed, stream=stream)


def matmul(a: Tensor, b: Tensor, *, transpose_a: bool = False, transpose_b: bool = False) -> Tensor:
    """``op(a) @ op(b)`` as numpy's and torch's matmul, ``op`` swapping an operand's last two
    axes when its flag is set; ``a @ b`` is this function. 2-D: [M, K] @ [K, P] -> [M, P].
    An ``a`` of higher rank [..., K] times a 2-D b [K, P] (or op(b) = b^T) is the stack of
    products [..., P]: ONE GEMM whose rows are all of a's leading axes (M = N * T of a
    [N, T, K]; the matmul op reads an operand of rank > 2 as the matrix of its rows, and
    autodiff's dB = a^T dY is one GEMM with K = N * T). Any other operand of rank > 2 (two
    stacks of matrices: attention's q @ k^T, a [N, T, K] with transpose_a) is a product of
    matrices per position of the broadcast leading axes (graphc.functional.batched_matmul).

    Raises:
        ShapeError: inner dimensions differ, or leading axes that do not broadcast
            (batched_matmul lists its refusals).
        ArgumentError: a transpose flag that is not a bool."""
    for k, v in (("transpose_a", transpose_a), ("transpose_b", transpose_b)):
        if not isinstance(v, bool):
            raise ArgumentError(f"matmul: {k} must be True or False, got {v!r}")
    both = isinstance(a, Tensor) and isinstance(b, Tensor)  # (else apply names the operand)
    ra, rb = (a.type.rank, b.type.rank) if both else (2, 2)
    if (ra > 2 or rb > 2) and not (rb == 2 and not transpose_a):
        from .functional import batched_matmul

        return batched_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return apply("matmul", a, b, transpose_a=transpose_a or None, transpose_b=transpose_b or None)


def sum(x: Tensor, axes: Iterable[int] | int | None = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axes`` (all when None). Raises OptionTypeError: ``keepdims`` not a bool."""
    keepdims = check_bool(keepdims, "sum: keepdims")
    return _reduced_loss(apply("sum", x, axes=_axes(axes), keepdims=keepdims or None), x)


def mean(x: Tensor, axes: Iterable[int] | int | None = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axes`` (all when None); the count includes the batch size at run time.
    Raises OptionTypeError: ``keepdims`` not a bool."""
    keepdims = check_bool(keepdims, "mean: keepdims")
    return _reduced_loss(apply("mean", x, axes=_axes(axes), keepdims=keepdims or None), x)


def _reduced_loss(out: Tensor, x: Tensor) -> Tensor:
    """``out``, the sum or mean of ``x`` to a scalar, keeps the tag of a built-in loss of
    reduction "none" (``loss(..., reduction="none")``, then gc.mean as in torch): evaluate
    still reports its metrics (accuracy) from the loss's prediction and target."""
    if x.kind is not None and out.type.shape == ():
        out.kind, out.prediction, out.target = x.kind, x.prediction, x.target
    return out


def reshape(x: Tensor, shape: Iterable) -> Tensor:
    """x [..] with ``shape`` (same elements in the same order). ``shape`` holds ints, "N" (the
    batch dimension, where x has one) and at most one -1, which takes the size that keeps the
    element count, as in numpy.reshape and ONNX Reshape: ``reshape(x, ("N", -1))`` flattens each
    row. A -1 in a shape without "N" of an x with "N" is the batch dimension N when the other
    sizes take a row's elements (torch's ``x.view(-1, 6)`` of x [N, 2, 3]).

    Raises:
        ShapeError: several -1, a size below -1 or 0, element counts that cannot match
            (naming both shapes), or a -1 that would merge the batch with other elements
            (x [N, 6] to (-1,): N * 6 is no dimension graphc has).
    """
    dims = tuple(shape)
    holes = [i for i, d in enumerate(dims) if isinstance(d, (int, np.integer)) and d == -1]
    if len(holes) > 1:
        raise ShapeError(f"reshape of {x.shape} to {dims}: at most one -1 may be given")
    if holes:
        known = 1
        for d in dims:
            if d != "N" and d != -1:
                known *= int(d)
        per_row = 1
        for d in x.shape:
            if d != "N":
                per_row *= int(d)
        if "N" in x.shape and "N" not in dims:
            # the -1 holds the batch: N when the other sizes take a row's elements exactly
            # (x [N, 1, 3] to (-1, 3): torch's x.view(-1, 3)); N * k is no graphc dimension
            if known != per_row:
                k = per_row // known if known > 0 and per_row % known == 0 else f"{per_row}/{known}"
                raise ShapeError(
                    f"reshape of {x.shape} to {dims}: the -1 would be N * {k} "
                    "(the batch merged with other elements), which graphc's symbolic batch "
                    "dimension cannot be; keep 'N' in the shape, e.g. ('N', -1)"
                )
            dims = dims[: holes[0]] + ("N",) + dims[holes[0] + 1 :]
            return apply("reshape", x, shape=dims)
        if known <= 0 or per_row % known:
            raise ShapeError(
                f"reshape of {x.shape} to {dims}: {per_row} elements"
                f"{' per row' if 'N' in x.shape else ''} do not divide into parts of {known}"
            )
        dims = dims[: holes[0]] + (per_row // known,) + dims[holes[0] + 1 :]
    return apply("reshape", x, shape=dims)


def _axes(axes: Iterable[int] | int | None) -> tuple[int, ...] | None:
    """``axes`` as a tuple of ints (one int, numpy's included, is one axis).

    Raises:
        ShapeError: neither an int nor a sequence of ints (a float, a bool, a string).
    """
    if axes is None:
        return None
    if isinstance(axes, int | np.integer) and not isinstance(axes, bool | np.bool_):
        return (int(axes),)
    try:
        out = tuple(axes)  # type: ignore[arg-type]
    except TypeError:
        out = (axes,)
    if isinstance(axes, str) or any(
        not isinstance(a, int | np.integer) or isinstance(a, bool | np.bool_) for a in out
    ):
        raise ShapeError(f"axes must be an int or a sequence of ints, got {axes!r}")
    return tuple(int(a) for a in out)


def activation_name(kind: Any, where: str = "") -> str | None:
    """The name in ``ACTIVATIONS`` that ``kind`` stands for: the name itself, None, or graphc's
    own function of that activation (``activation=gc.relu``, as Keras takes ``tf.nn.relu``).

    Raises:
        GraphcError: anything else, naming the close matches of a misspelled name (case
            included: "ReLU" is "relu").
    """
    if kind is None or (isinstance(kind, str) and kind in ACTIVATIONS):
        return kind
    fname = getattr(kind, "__name__", None)
    if callable(kind) and fname in ACTIVATIONS and globals().get(fname) is kind:
        return fname
    names = [a for a in ACTIVATIONS if a is not None]
    hint = ""
    if isinstance(kind, str):
        folded = kind.strip().lower().replace("-", "_")
        close = [folded] if folded in names else difflib.get_close_matches(folded, names, n=3)
        if close:
            hint = f" (did you mean {' or '.join(map(repr, close))}?)"
    elif callable(kind):
        hint = " (a function: graphc compiles only its own activations; pass the name)"
    raise GraphcError(
        f"{where}unknown activation {kind!r}{hint}; choose one of {', '.join(names)}, or None"
    )


def activation(x: Tensor, kind: str | None) -> Tensor:
    """Apply the activation named ``kind`` (an op with the activation trait, e.g. "relu",
    "sigmoid", "gelu", "leaky_relu", "softmax", or an alias: "swish" for silu, "gelu_tanh" for
    gelu(approximate="tanh"); see ``ACTIVATIONS``; or graphc's function of it, ``gc.relu``)
    with its default attrs, or nothing for None. Other attrs: call the op,
    ``gc.leaky_relu(x, alpha=0.2)``.

    Raises:
        GraphcError: an unknown activation (naming the close matches of a misspelled name).
    """
    kind = activation_name(kind)
    if kind is None:
        return x
    op, attrs = ACTIVATION_ALIASES.get(kind, (kind, {}))
    return globals()[op](x, **attrs)


# ---------------------------------------------------------------- losses (from logits)


class LossInputWarning(UserWarning):
    """A loss was given what is almost surely not what it takes: probabilities (the output of
    sigmoid or softmax) where it applies sigmoid or softmax itself, or one class column."""


def check_logits(loss: str, logits: Tensor, squash: str, instead: str) -> None:
    """Warn (LossInputWarning, at the user's line) when ``logits`` is the output of ``squash``
    (sigmoid or softmax): a loss from logits would squash it a second time, so its gradient
    nearly vanishes and training stalls (Keras warns alike). ``instead``: the alternative."""
    if logits.node.op == squash:
        warnings.warn(
            f"{loss}: its input {logits.name} is the output of {squash}, "
            f"but this loss takes logits and applies {squash} itself; pass the values before "
            f"{squash} (dense(..., activation=None)), {instead}",
            LossInputWarning,
            stacklevel=_user_stacklevel(),
        )


# Keras's reduction names (SparseCategoricalCrossentropy(reduction=...)) -> torch's
_KERAS_REDUCTIONS = {"sum_over_batch_size": "mean", None: "none"}


def loss_reduction(loss: str, reduction: Any, keras_differs: bool) -> str:
    """torch's reduction ("mean", "sum", "none") of a ``reduction=`` argument, Keras's names
    taken too ("sum_over_batch_size": "mean", None: "none"; refused when ``keras_differs``:
    a weighted torch mean divides by the weights, Keras's by the rows)."""
    keras = isinstance(reduction, str | type(None)) and reduction in _KERAS_REDUCTIONS
    red = _KERAS_REDUCTIONS[reduction] if keras else reduction
    if red not in ("mean", "sum", "none"):
        raise OptionTypeError(
            f"{loss}: reduction must be 'mean', 'sum' or 'none' (torch's; "
            f"Keras's 'sum_over_batch_size' and None are taken too), got {reduction!r}"
        )
    if reduction == "sum_over_batch_size" and keras_differs:
        raise GraphcError(
            f"{loss}: Keras's reduction 'sum_over_batch_size' divides by the "
            "rows, torch's 'mean' with weight by the rows' weights: pass reduction='mean' "
            "(torch's) or weight=None"
        )
    return str(red)


def class_weights(loss: str, weight: Any, logits: Tensor) -> tuple[float, ...]:
    """``weight`` (C numbers, C the last axis of ``logits``) as floats, refused naming the
    logits and the length when it is not C finite numbers >= 0, not all 0."""
    c = logits.shape[-1]
    where = f"{loss}: weight (logits {logits.name} {logits.type}, {c} classes)"
    if isinstance(weight, Tensor):
        raise OptionTypeError(
            f"{where}: give the class weights as numbers (a list or an array), not a graph "
            f"value ({weight.name}): they are fixed when the model is built"
        )
    try:
        w = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError):
        w = np.zeros((), object)  # refused below
    if w.dtype == object or w.ndim != 1:
        raise OptionTypeError(
            f"{where}: must be a 1-D list or array of numbers, got {weight!r:.60}"
        )
    if w.size != c:
        raise ShapeError(f"{where}: has {w.size} entries, one per class needed ({c})")
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    if bad.size:
        raise ShapeError(
            f"{where}: weight[{bad[0]}] = {float(w[bad[0]])!r} must be finite and >= 0 (a "
            "negative weight makes the loss unbounded below)"
        )
    if not w.any():
        raise ShapeError(f"{where}: every class weight is 0: the loss would always be 0")
    return tuple(float(v) for v in w)


def softmax_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    weight: Any = None,
    reduction: str | None = "mean",
) -> Tensor:
    """Mean softmax cross-entropy of logits [N, C] against integer labels i32[N] (log-sum-exp
    form), or of a sequence's logits [N, T, .., C] against i32[N, T, ..] (Keras's
    SparseCategoricalCrossentropy after a Dense on [N, T, in]; torch's cross_entropy of the
    logits moved to [N, C, T]): the classes on the last axis, the mean over every row and
    position. Labels outside 0..C-1 are refused at run time (ArgumentError naming the input,
    the row and the position, raised before anything is updated); evaluate's accuracy is the
    argmax over the last axis, per position.

    The options follow torch 2.13's F.cross_entropy / nn.CrossEntropyLoss (its documented
    formula), with row i's term l_i = w[y_i] (logsumexp(z_i) - z_i[y_i]):

    ``weight`` w (C numbers >= 0, a list or array; default all 1): the per-class weights.

    ``reduction``: "mean" (default) sum_i l_i / sum_i w[y_i] over the kept rows (their count
    without weights); "sum" sum_i l_i; "none" the l_i themselves, f32[N] (f32[N, T, ..] for a
    sequence): no training loss by itself (compile needs a scalar: reduce it, e.g.
    gc.mean(loss)). Keras's names are taken too: "sum_over_batch_size" is "mean" (only
    without weight, where the two agree), None is "none".

    ``label_smoothing`` e (torch's cross_entropy(label_smoothing=e)): the target of each row is
    (1 - e) onehot(label) + e / C, so the loss is (1 - e) times the above plus e times the mean
    over rows and classes of -log softmax(z) (that term is infinite where a logit is -inf);
    with ignore_index, over the kept rows only; with weight, row i's uniform term is
    sum_c w_c (-log p_ic) / C, divided as the rest (torch's formula).

    ``ignore_index`` k (torch's cross_entropy(ignore_index=k), whose default is -100; here
    None, nothing ignored): rows (positions) labelled k add nothing to the loss or the
    gradient (their l_i is 0), and the mean is over the other rows only; evaluate's
    accuracy leaves them out too. Every other label is still checked to lie in 0..C-1 (a
    label -5 is refused naming its row). When the divisor of "mean" is 0 (every row
    ignored, or every kept row of weight 0) the loss and the gradient are 0 (torch: NaN,
    which would end fit's numerics check or poison its epoch mean for a batch of padding
    only). With ignore_index, weight or reduction "sum" the loss is not a plain mean over
    rows: evaluate runs all rows in one call, and data-parallel training refuses it (the
    ranks' divisors differ).

    Raises ShapeError: logits of rank < 2, labels not i32 of the logits' shape without C (or
    with a last axis of 1), ignore_index not an int32 or one of the classes 0..C-1, weight
    not of C entries, negative, not finite or all 0. OptionTypeError: label_smoothing not a
    number (a bool, a string), weight not numbers, reduction unknown; GraphcError:
    label_smoothing outside [0, 1] or NaN.
    Warns ``LossInputWarning`` when ``logits`` is a softmax's output (probabilities) or has one
    column (the loss is then 0 whatever the weights).
    """
    from graphc.runtime.checks import check_real

    # a bool is no rate: True would be read as 1.0, every target the uniform 1/C
    eps = check_real(label_smoothing, "softmax_cross_entropy: label_smoothing", 0.0)
    if eps > 1.0:
        raise GraphcError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    check_logits("softmax_cross_entropy", logits, "softmax", "or predict with softmax(logits)")
    if logits.type.rank >= 2 and logits.shape[-1] == 1:
        warnings.warn(
            f"softmax_cross_entropy: logits {logits.name} have one column: "
            "the softmax of one logit is 1, so the loss is 0 whatever the weights; for two "
            "classes use binary_cross_entropy(logit, targets) on one logit, or two logits",
            LossInputWarning,
            stacklevel=_user_stacklevel(),
        )
    red = loss_reduction("softmax_cross_entropy", reduction, weight is not None)
    opts: dict[str, Any] = {}
    if isinstance(ignore_index, np.integer):
        ignore_index = int(ignore_index)
    if ignore_index is not None:
        opts["ignore_index"] = ignore_index
    if weight is not None:
        opts["weight"] = class_weights("softmax_cross_entropy", weight, logits)
    if red != "mean":
        opts["reduction"] = red
    if eps and "weight" in opts:  # torch weights each class's smoothing term: in the op
        opts["label_smoothing"] = eps
    loss = apply("softmax_cross_entropy", logits, labels, **opts)
    if eps and "weight" not in opts:  # the uniform part of the target: -log p over the classes
        if ignore_index is None and red == "mean":  # and over every row
            smooth = mean(softmax_along(logits, -1, log=True))
        else:
            uniform = mean(softmax_along(logits, -1, log=True), axes=-1)  # per row
            if ignore_index is not None:  # torch: the ignored rows' uniform term is 0 too
                kept = apply("not_equal", labels, const(float(ignore_index), dtype="i32"))
                kept = reshape(apply("cast", kept, dtype=logits.dtype), uniform.shape)
                uniform = uniform * kept
            smooth = uniform if red == "none" else sum(uniform)
            if red == "mean":  # over the kept rows, 1 when none is (then both sums are 0)
                smooth = smooth / maximum(sum(kept), 1.0)
        loss = loss * (1.0 - eps) - smooth * eps
    return _tag(loss, "softmax_cross_entropy", logits, labels)


def _tag(t: Tensor, kind: str, prediction: Tensor, target: Tensor) -> Tensor:
    """Mark ``t`` as a loss of ``kind`` whose prediction operand (logits, probabilities or
    values compared with the targets) is ``prediction`` and whose target operand (labels or
    targets) is ``target``: ``evaluate`` computes its metrics from the output that is the
    prediction and the input that is the target (graphc.compiler.metric_source,
    metric_target)."""
    t.kind = kind
    t.prediction = prediction.name
    t.target = target.name
    return t


def binary_cross_entropy(logits: Tensor, targets: Tensor, *, from_logits: bool = True) -> Tensor:
    """Mean binary cross-entropy from logits: mean(softplus(z) - z*y), stable for any z.

    Equal to -mean(y log sigmoid(z) + (1-y) log(1 - sigmoid(z))) (the logits form, as in
    torch.nn.BCEWithLogitsLoss). ``targets`` must have the logits' shape, values in [0, 1].
    Each element is the op ``sigmoid_cross_entropy``: an infinite logit at its own target
    (-inf with 0, +inf with 1) gives 0, the limit, not NaN.
    ``from_logits=False``: the first operand holds probabilities; the clamped Keras form
    (graphc.functional.binary_cross_entropy_from_probs). With ``from_logits=True`` (the
    default), a sigmoid's output warns ``LossInputWarning``. Raises OptionTypeError:
    ``from_logits`` not a bool (a string such as "False" would have meant logits).
    """
    from_logits = check_bool(from_logits, "binary_cross_entropy: from_logits")
    if from_logits:
        check_logits("binary_cross_entropy", logits, "sigmoid", "or pass from_logits=False")
    if not from_logits:
        from .functional import binary_cross_entropy_from_probs

        return binary_cross_entropy_from_probs(logits, targets)
    if targets.shape != logits.shape:
        raise ShapeError(
            f"binary_cross_entropy: targets {targets.type} must match logits {logits.type} "
            f"(targets {targets.name}, logits {logits.name})"
        )
    return _tag(
        mean(apply("sigmoid_cross_entropy", logits, targets)),
        "binary_cross_entropy",
        logits,
        targets,
    )


def mean_squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """mean((pred - target)^2) over all elements."""
    if target.shape != pred.shape:
        raise ShapeError(
            f"mean_squared_error: target {target.type} must match prediction {pred.type} "
            f"(target {target.name}, prediction {pred.name})"
        )
    return _tag(mean(apply("square", pred - target)), "mean_squared_error", pred, target)


LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mean_squared_error": mean_squared_error,
}


# ---------------------------------------------------------------- layers


def dense(
    x: Tensor,
    units: int,
    activation: str | None = None,
    *,
    name: str | None = None,
    init: str | None = None,
    use_bias: bool = True,
    kernel_l1: float = 0.0,
    kernel_l2: float = 0.0,
) -> Tensor:
    """A fully connected layer: ``activation(x @ W + b)`` with W [in, units], b [units].

    x is [N, in], or of higher rank [..., in] (Keras's Dense, torch's Linear): W acts on the
    last axis at every position of the others, [N, T, in] -> [N, T, units] (a Dense after
    ``lstm(..., return_sequences=True)``): one GEMM of all the rows (see ``matmul``).

    W is initialized with He uniform before relu and Glorot uniform otherwise (unless ``init``);
    b with zeros. Params are named ``NAME.w`` and ``NAME.b``. ``activation``: a name in
    ``graphc.dsl.ACTIVATIONS`` ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu", ...;
    every pointwise activation, fused into the GEMM's epilogue), graphc's function of it
    (``gc.relu``), or None. ``kernel_l1``, ``kernel_l2``: penalties on W added to the loss
    (see ``param``).

    Raises:
        ShapeError: x of rank < 2 or with a symbolic last axis, or units not a positive int.
        GraphcError: an unknown activation (naming the close matches of a misspelled one).
        OptionTypeError: ``use_bias`` not a bool.
    """
    use_bias = check_bool(use_bias, "dense: use_bias")
    if x.type.rank < 2 or not isinstance(x.shape[-1], int):
        raise ShapeError(
            f"dense: expects an input [batch, features] or [batch, ..., features], got "
            f"{x.type} ({x.name})"
            + (
                f"; declare the batch axis: gc.input({x.name!r}, ('N', {x.shape[0]!r}))"
                if x.type.rank == 1 and x.node.op == "input" and x.shape[0] != "N"
                else ""
            )
        )
    units = index_value(units)
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise ShapeError(f"dense: units must be a positive int, got {units!r}")
    activation = activation_name(activation, "dense: ")
    name = name or _fresh("dense")
    init = init or ("he_uniform" if activation == "relu" else "glorot_uniform")
    w = param(
        f"{name}.w", (x.shape[-1], units), init=init, dtype=x.dtype, l1=kernel_l1, l2=kernel_l2
    )
    y = matmul(x, w)
    if use_bias:
        y = y + param(f"{name}.b", (units,), init="zeros", dtype=x.dtype)
    return globals()["activation"](y, activation)


def perceptron(x: Tensor, *, name: str | None = None) -> Tensor:
    """One perceptron unit: the logit ``x @ w + b`` ([N,1]); its probability is sigmoid(logit)."""
    return dense(x, 1, None, name=name or _fresh("perceptron"))


class Dense:
    """Layer object for Sequential: ``Dense(units, activation=None, name=None, init=None,
    use_bias=True, kernel_l1=0.0, kernel_l2=0.0)`` (see ``dense``). Calling one object twice
    shares its weights, as with Keras layers and torch modules (``call_layer``); so do Conv,
    LayerNorm, BatchNorm (its running statistics updated once per call, in order, as torch's)
    and the recurrent layer objects."""

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        *,
        name: str | None = None,
        init: str | None = None,
        use_bias: bool = True,
        kernel_l1: float = 0.0,
        kernel_l2: float = 0.0,
    ) -> None:
        activation = activation_name(activation, f"Dense (at {_user_loc()}): ")
        units = index_value(units)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ShapeError(
                f"Dense: units must be a positive int, got {units!r} (at {_user_loc()})"
            )
        self.units, self.activation, self.name, self.init = units, activation, name, init
        use_bias = check_bool(use_bias, f"Dense (at {_user_loc()}): use_bias")
        self.use_bias, self.kernel_l1, self.kernel_l2 = use_bias, kernel_l1, kernel_l2

    @shares_weights
    def __call__(self, x: Tensor) -> Tensor:
        return dense(
            x,
            self.units,
            self.activation,
            name=self.name,
            init=self.init,
            use_bias=self.use_bias,
            kernel_l1=self.kernel_l1,
            kernel_l2=self.kernel_l2,
        )

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation!r})"


class Dropout:
    """Layer object for Sequential: ``Dropout(p, seed=0)`` (see ``dropout``)."""

    def __init__(self, p: float, *, seed: int = 0) -> None:
        self.p, self.seed = p, seed

    def __call__(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, seed=self.seed)

    def __repr__(self) -> str:
        return f"Dropout({self.p})"


class Normalization:
    """Feature standardization inside the graph: ``(x - mean) * inv_std`` per feature, with the
    mean and standard deviation learned by ``adapt(data)`` (Keras's
    ``keras.layers.Normalization``), so that a compiled model, its exported library and their
    C callers take raw features.

    ``inv_std`` is ``1 / sqrt(variance)``, and 1 where the variance is 0 (scikit-learn
    StandardScaler's rule: a feature constant in the data is centred, not scaled; Keras instead
    divides by ``max(sqrt(variance), 1e-7)``, which blows up such a feature when it later
    varies). Statistics are computed in float64 over every axis but ``axis`` (population
    variance, ``ddof=0``). They become two non-trainable parameters, ``NAME.mean`` and
    ``NAME.inv_std``, saved and exported with the weights and never changed by the optimizer.

    Args:
        axis: the feature axis of the data (default -1, the last).
        mean: the per-feature mean, if known (instead of ``adapt``).
        variance: the per-feature variance, if known (with ``mean``).
        name: the parameters' prefix (default: ``normalization_`` and a digest of the
            statistics, the same in every process).

    Raises:
        GraphcError: calling the layer before ``adapt`` (or without mean and variance); data,
            mean or variance that is empty, not numeric or not finite; a feature count that
            does not match the input's.
    """

    def __init__(
        self,
        axis: int = -1,
        *,
        mean: Any = None,
        variance: Any = None,
        name: str | None = None,
    ) -> None:
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
            raise GraphcError(
                f"Normalization: axis must be the int of the one feature axis, got {axis!r} "
                "(Keras's axis=None or a tuple of axes is not supported)"
            )
        self.axis, self.name = int(axis), name
        self.mean: np.ndarray | None = None
        self.variance: np.ndarray | None = None
        if (mean is None) != (variance is None):
            raise GraphcError("Normalization: give both mean and variance, or neither (adapt)")
        if mean is not None:
            self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
            self.variance = np.asarray(variance, dtype=np.float64).reshape(-1)
            if self.mean.shape != self.variance.shape or not np.all(self.variance >= 0):
                raise GraphcError(
                    "Normalization: mean and variance must have one value per feature, "
                    "variance >= 0"
                )
            if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.variance))):
                # (NaN passed `variance < 0`: every output of the model was NaN)
                raise GraphcError("Normalization: mean and variance must be finite numbers")

    def adapt(self, data: Any) -> Normalization:
        """Learn the per-feature mean and variance of ``data`` (array-like, features on
        ``axis``); returns the layer."""
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise GraphcError(f"Normalization.adapt: data is not numeric ({e})") from None
        if arr.ndim == 0 or arr.size == 0:
            raise GraphcError(f"Normalization.adapt: data is empty (shape {arr.shape})")
        if not -arr.ndim <= self.axis < arr.ndim:
            raise GraphcError(
                f"Normalization.adapt: axis {self.axis} is not an axis of the data (shape "
                f"{arr.shape})"
            )
        if not np.all(np.isfinite(arr)):
            row = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise GraphcError(f"Normalization.adapt: data holds NaN or infinity (row {row})")
        arr = np.moveaxis(arr, self.axis, -1).reshape(-1, arr.shape[self.axis])
        # A feature whose values are all equal is constant: its mean is that value and its
        # variance 0, exactly. numpy's mean of 100003 values 0.3 is 0.3 - 5e-13, the variance
        # 2.4e-25, so 1/std was 2e12 and the training value itself normalized to 1.0 (0.31
        # to 2e10) instead of the 0 this class's constant-feature rule gives.
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        same = lo == hi
        self.mean = np.where(same, lo, arr.mean(axis=0))
        self.variance = np.where(same, 0.0, arr.var(axis=0))
        return self

    def inv_std(self) -> np.ndarray:
        """1 / sqrt(variance), 1 where the variance is 0 (float64)."""
        assert self.variance is not None
        std = np.sqrt(self.variance)
        return np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)

    def __call__(self, x: Tensor) -> Tensor:
        if self.mean is None:
            raise GraphcError("Normalization: call adapt(data) first (or give mean and variance)")
        if not -len(x.shape) <= self.axis < len(x.shape):  # (% wrapped it to another axis)
            raise ShapeError(
                f"Normalization: axis {self.axis} is not an axis of input {x.name} : {x.type}"
            )
        axis = self.axis % len(x.shape)
        features = x.shape[axis] if x.shape else None
        if features != len(self.mean):
            raise ShapeError(
                f"Normalization: input {x.name} : {x.type} has {features} features on axis "
                f"{self.axis}, the statistics {len(self.mean)}"
            )
        shape = [1] * (len(x.shape) - axis)  # broadcast over the trailing axes after `axis`
        shape[0] = len(self.mean)
        name = self.name
        if name is None:
            digest = hashlib.sha256(self.mean.tobytes() + self.variance.tobytes()).hexdigest()
            name = f"normalization_{digest[:12]}"
        dt = x.dtype
        mean = constant(self.mean.reshape(shape), name=f"{name}.mean", dtype=dt)
        inv = constant(self.inv_std().reshape(shape), name=f"{name}.inv_std", dtype=dt)
        return (x - mean) * inv

    def __repr__(self) -> str:
        n = "not adapted" if self.mean is None else f"{len(self.mean)} features"
        return f"Normalization({n})"


class Sequential:
    """Layers applied in order: ``Sequential([Dense(32, "relu"), Dense(10)], name="digits")``.

    Layers without a name of their own are named ``NAME.lI`` (I: their index). Without
    ``name=`` a Sequential is named ``"model"``, or ``"model_1"``, ``"model_2"``, ... when a
    Sequential called earlier on the same inputs (the ``gc.input`` tensors its input was
    computed from) has that name already: two unnamed Sequentials of one graph get distinct
    weights' names (Keras numbers its default names ``sequential``, ``sequential_1`` the same
    way, but per process: here a graph's first unnamed Sequential is always ``"model"``, so
    rebuilding a program in the same process finds its checkpoint's names). Unnamed
    Sequentials called on disjoint inputs and joined later both are ``"model"``: compile
    then asks for ``name=``.
    """

    def __init__(self, layers: list, name: str | None = None) -> None:
        self.layers = list(layers)
        self._auto = name is None  # the default name: chosen at the first call
        self.name = "model" if name is None else name
        self._named: list[Any] = []  # the layers this Sequential named
        self._name_layers()

    def _name_layers(self) -> None:
        for i, layer in enumerate(self.layers):
            named = isinstance(layer, Dense) or getattr(layer, "has_params", False)
            mine = any(layer is o for o in self._named)
            if named and (layer.name is None or mine) and not getattr(layer, "_weights", None):
                layer.name = f"{self.name}.l{i}"
                _sequential_named.add(layer.name)
                if not mine:
                    self._named.append(layer)

    def __call__(self, x: Tensor) -> Tensor:
        claims = _sequential_claims(x)
        if self._auto:
            self._auto = False
            k, base = 0, self.name
            while self.name in {c for cs in claims for c in cs}:
                k += 1
                self.name = f"{base}_{k}"
            self._name_layers()
        for cs in claims:
            cs.add(self.name)
        for layer in self.layers:
            x = layer(x)
        return x


_claims: dict[int, tuple[Tensor, set[str]]] = {}  # id of an input -> (it, Sequential names)


def _sequential_claims(x: Tensor) -> list[set[str]]:
    """The sets of Sequential names claimed by the gc.input tensors ``x`` is computed from
    (created empty; the input is kept alive with its set, so that its id stays its own)."""
    out, seen, stack = [], set(), [x]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.node.op == "input":
            out.append(_claims.setdefault(id(t), (t, set()))[1])
        stack.extend(t.parents)
    return out


# ---------------------------------------------------------------- graph collection


def _same_value(a: Tensor, b: Tensor) -> bool:
    """Two tensor objects that stand for one value: the optimizer's step counter (every dropout
    reads it), or gc.constant arrays of equal values (named by a digest of them)."""
    if a.node != b.node:
        return False
    if a.node.op == "state":
        return True
    return a.value is not None and b.value is not None and np.array_equal(a.value, b.value)


def collect_graph(name: str, outputs: list[Tensor]) -> Graph:
    """The Graph of every tensor ``outputs`` depend on, in a topological order.

    Raises:
        GraphcError: two different tensors share a name (the message names both lines), e.g.
            two ``gc.param("w", ...)``: they would silently become one.
    """
    order: list[Tensor] = []
    seen: dict[str, Tensor] = {}
    stack: list[tuple[Tensor, bool]] = [(t, False) for t in reversed(outputs)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if t.name in seen:
            if seen[t.name] is not t and not _same_value(seen[t.name], t):
                a, b = seen[t.name].node, t.node
                raise GraphcError(
                    f"two different tensors are named {t.name!r}: {a.op} {a.type} at "
                    f"{a.loc or '?'} and {b.op} {b.type} at {b.loc or '?'}; names must be unique"
                    + (
                        " (two ONNX imports: give one gc.from_onnx(..., prefix='m2_'))"
                        if (a.origin or "").startswith("onnx")
                        and (b.origin or "").startswith("onnx")
                        else ""
                    )
                    + (
                        f" (Sequential names its unnamed layers NAME.lI, {t.name.rsplit('.', 1)[0]!r}"
                        " here: give each Sequential of the graph its own name=)"
                        if t.name.rsplit(".", 1)[0] in _sequential_named
                        else ""
                    )
                )
            continue
        seen[t.name] = t
        stack.append((t, True))
        for p in reversed(t.parents):
            if p.name not in seen or seen[p.name] is not p:
                stack.append((p, False))
    g = Graph(name, tuple(t.node for t in order), tuple(t.name for t in outputs))
    return number_dropout_streams(g)


# ---------------------------------------------------------------- one function per pointwise op

# every registered pointwise op not written out above gets its DSL function from the registry
# (gc.exp, gc.relu, gc.leaky_relu, ...): adding an op to ir/ops adds it here
OP_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    op: op_function(op)
    for op in sorted(POINTWISE_OPS)
    if op not in globals() and not OPS[op].needs_index and OPS[op].data_operands is None
}
globals().update(OP_FUNCTIONS)


# ---------------------------------------------------------------- the user's line in every error


def names_user_line(fn):
    """``fn`` with every GraphcError it raises naming the user's line (``at file:line``), when
    the message does not already; the wrapper's name starts with "_", so provenance skips it."""

    @functools.wraps(fn)
    def _guard(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GraphcError as e:
            loc = _user_loc()
            if loc is None or loc in str(e):
                raise
            raise type(e)(f"{e}\n  at   {loc}") from None

    return _guard


for _name in {
    *[
        "apply",
        "input",
        "param",
        "constant",
        "const",
        "add",
        "sub",
        "mul",
        "div",
        "maximum",
        "dropout",
        "matmul",
        "sum",
        "mean",
    ],
    *[
        "reshape",
        "activation",
        "softmax_cross_entropy",
        "binary_cross_entropy",
        "mean_squared_error",
    ],
    *[
        "dense",
        "perceptron",
        "sigmoid",
        "tanh",
        "relu",
        "softplus",
        "exp",
        "log",
        "sqrt",
        "square",
        "neg",
        "softmax",
    ],
    *["transpose"],
    *OP_FUNCTIONS,
}:
    if _name in globals():
        globals()[_name] = names_user_line(globals()[_name])
OP_FUNCTIONS = {k: globals()[k] for k in OP_FUNCTIONS}
del _name
