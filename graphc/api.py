"""``graphc.compile``: from declared tensors (or a Sequential) to a trainable, exportable Model."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from typing import Any

from graphc.ir.errors import GraphcError
from graphc.runtime.checks import check_bool, check_seed
from graphc.runtime.model import Model

from . import dsl
from .compiler import build_graphs, compile_cached, compile_split
from .optim import Optimizer


def compile(
    outputs: dsl.Tensor | list[dsl.Tensor],
    loss: dsl.Tensor | None = None,
    optimizer: Optimizer | None = None,
    *,
    name: str = "model",
    opt_level: int = 2,
    seed: int = 0,
    disabled_passes: tuple[str, ...] = (),
    verify_each: bool = False,
    target_cpu: str = "native",
    check_numerics: bool = False,
    threads: int | None = None,
) -> Model:
    """Compile a network to native code and return a Model with freshly initialized parameters.

    Args:
        outputs: the tensor(s) ``predict`` returns (e.g. logits).
        loss: a scalar tensor to minimize (None: an inference-only model).
        optimizer: an optimizer object, ``gc.SGD(...)``, ``gc.Adam(...)``, ... (default
            ``graphc.Adam()``: lr 1e-3, betas (0.9, 0.999), eps 1e-8, torch semantics); not
            Keras's string ``"adam"`` nor the class ``gc.Adam`` itself.
        name: the model's name; prefixes the entry points (``NAME_train_step``).
        opt_level: 0 (no fusion, no buffer reuse), 1, or 2 (default).
        seed: seeds the parameter initializers.
        disabled_passes: pass names to skip.
        verify_each: run the IR verifier after every pass.
        target_cpu: "native" or an LLVM CPU name.
        check_numerics: compile a NaN/Inf scan of every value a kernel stores into the native
            code (JIT and exported libraries); the first NaN/Inf raises graphc.NumericsError
            naming the node, its op, its source line and the step. Off by default (no code
            emitted, nothing to pay).
        threads: threads the compiled kernels split their large GEMMs over, in training and
            predict alike, with bit-identical results for any count (default:
            ``$GRAPHC_THREADS``, else every core this process may use; also settable later as
            ``model.threads``).

    Raises:
        GraphcError: bad arguments (see the message): an optimizer that is no graphc
            Optimizer (named with the one meant), a loss that is not a scalar, a name that is
            no C identifier, ...; ShapeError was raised earlier, while the tensors were
            declared.
    """
    if not (isinstance(name, str) and name.isascii() and name.isidentifier()):
        raise GraphcError(
            f"model name {name!r} must be a C identifier: ASCII letters, digits and '_', not "
            "starting with a digit (it prefixes the C symbols)"
        )
    if isinstance(opt_level, bool) or opt_level not in (0, 1, 2):  # (True == 1: -O1)
        raise GraphcError(f"opt_level must be 0, 1 or 2, got {opt_level!r}")
    verify_each = check_bool(verify_each, "compile: verify_each")
    check_numerics = check_bool(check_numerics, "compile: check_numerics")
    check_seed(seed)  # before compiling: numpy refuses a negative seed only at initialization
    threads = dsl.index_value(threads)
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):  # (threads=True was 1 thread)
        raise GraphcError(f"threads must be a positive int, got {threads!r}")
    check_optimizer(optimizer)
    outs = [outputs] if isinstance(outputs, dsl.Tensor) else list(outputs)
    if loss is not None and optimizer is None:
        from .optim import Adam

        optimizer = Adam()  # the documented default; the Model keeps it (repr, model files)
    prog = build_graphs(name, outs, loss, optimizer)
    prog.check_numerics = bool(check_numerics)
    jm = compile_cached(
        prog,
        opt_level=opt_level,
        disabled_passes=disabled_passes,
        verify_each=verify_each,
        target_cpu=target_cpu,
    )
    model = Model(
        prog,
        jm,
        optimizer=optimizer,
        seed=seed,
        compile_split=functools.partial(compile_split, prog, target_cpu) if prog.split else None,
    )
    if threads is not None:
        model.threads = threads
    return model


def compile_sequential(
    net: dsl.Sequential,
    input_shape: tuple[int, ...],
    loss: str,
    optimizer: Optimizer | None = None,
    **kw: Any,
) -> Model:
    """Compile a Sequential with input ``x`` of shape (N, *input_shape) and a named loss.

    ``input_shape`` is one sample's shape, (6,) for rows of 6 features (Keras's input_shape);
    a shape that starts with the batch axis, ("N", 6) or Keras's batch_input_shape (None, 6),
    is taken as that axis and the sample's shape. ``loss`` is "softmax_cross_entropy" (labels i32[N] for an output [N, C], i32[N, T] for a
    sequence's [N, T, C]: the output's shape without its classes), "binary_cross_entropy" or
    "mean_squared_error" (targets shaped like the output).
    """
    if loss not in dsl.LOSSES:
        raise GraphcError(
            f"unknown loss {loss!r}{_loss_hint(loss)}; choose one of {sorted(dsl.LOSSES)}"
        )
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else input_shape
    if isinstance(shape, tuple) and shape and (shape[0] is None or shape[0] == "N"):
        shape = shape[1:]  # the batch axis given too: ('N', 6), Keras's (None, 6)
    x = dsl.input("x", ("N", *shape))
    out = net(x)
    if loss == "softmax_cross_entropy":
        y = dsl.input("y", out.shape[:-1], dtype="i32")
    else:
        y = dsl.input("y", out.shape, dtype=out.dtype)
    return compile(out, dsl.LOSSES[loss](out, y), optimizer, name=kw.pop("name", net.name), **kw)


def _optimizer_classes(cls: type = Optimizer) -> Iterator[type]:
    """Every public optimizer class (SGD, Adam, AdamW, ...): the subclasses of Optimizer."""
    for sub in cls.__subclasses__():
        if not sub.__name__.startswith("_"):
            yield sub
        yield from _optimizer_classes(sub)


def check_optimizer(optimizer: Any) -> None:
    """Refuse an ``optimizer`` that is neither None nor a graphc Optimizer, naming the call
    meant: Keras's string (``"adam"``: ``gc.Adam()``), the class itself (``gc.Adam``: call it),
    a misspelled name (``"adma"``), or another framework's optimizer object.

    Raises:
        GraphcError: ``optimizer`` is not an instance of graphc.optim.Optimizer.
    """
    if optimizer is None or isinstance(optimizer, Optimizer):
        return
    names = sorted({c.__name__ for c in _optimizer_classes()}, key=str.lower)
    choices = ", ".join(f"gc.{n}" for n in names)
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise GraphcError(
            f"compile: optimizer is the class gc.{optimizer.__name__}, not an optimizer: "
            f"call it, gc.{optimizer.__name__}() (its defaults) or "
            f"gc.{optimizer.__name__}(learning_rate=...)"
        )
    word = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
    folded = {n.lower(): n for n in names}
    key = word.lower().replace("_", "")
    close = difflib.get_close_matches(key, list(folded), n=1)
    meant = folded.get(key) or (folded[close[0]] if close else None)
    hint = f": pass gc.{meant}(...)" if meant else f"; graphc's: {choices}"
    if isinstance(optimizer, str):
        raise GraphcError(
            f"compile: optimizer {optimizer!r} is a string; graphc takes an optimizer object "
            f"(its update is compiled with the model){hint}"
        )
    kind = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    hint = f": pass gc.{meant}(...)" if meant else ""
    raise GraphcError(
        f"compile: optimizer must be a graphc optimizer ({choices}), got {kind}{hint}"
    )


# Keras's loss names -> graphc's: Keras's sparse and categorical cross-entropies take
# probabilities unless from_logits=True; graphc's take the logits (no softmax layer before)
# Keras's loss names -> graphc's; the cross-entropies of logits are Keras's with from_logits=True
_KERAS_LOSSES = {
    "sparse_categorical_crossentropy": "softmax_cross_entropy",
    "categorical_crossentropy": "categorical_cross_entropy",
    "binary_crossentropy": "binary_cross_entropy",
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
}
_KERAS_FROM_LOGITS = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
)


def _loss_hint(loss: Any) -> str:
    """`` (did you mean ...)`` for a misspelled or Keras-named loss, else ''. Only Keras's
    cross-entropies have from_logits; its regression losses (mse, mae) are named alone."""
    if not isinstance(loss, str):
        return ""
    keras = loss.lower()
    if keras in _KERAS_FROM_LOGITS:
        meant = _KERAS_LOSSES[keras]
        return f" (Keras's {loss!r} with from_logits=True is graphc's {meant!r}: the network ends in logits)"
    if keras in _KERAS_LOSSES:
        return f" (Keras's {loss!r} is graphc's {_KERAS_LOSSES[keras]!r})"
    close = difflib.get_close_matches(loss, list(dsl.LOSSES), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
