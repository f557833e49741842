"""``graphc.compile``: from declared tensors (or a Sequential) to a trainable, exportable Model."""

from __future__ import annotations

import functools
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
        optimizer: SGD, Adam, ... (default ``graphc.Adam()``: lr 1e-3, betas (0.9, 0.999),
            eps 1e-8, torch semantics).
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
        GraphcError: bad arguments (see the message); ShapeError was raised earlier, while the
            tensors were declared.
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
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):  # (threads=True was 1 thread)
        raise GraphcError(f"threads must be a positive int, got {threads!r}")
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

    ``loss`` is "softmax_cross_entropy" (labels i32[N] for an output [N, C], i32[N, T] for a
    sequence's [N, T, C]: the output's shape without its classes), "binary_cross_entropy" or
    "mean_squared_error" (targets shaped like the output).
    """
    if loss not in dsl.LOSSES:
        raise GraphcError(f"unknown loss {loss!r}; choose one of {sorted(dsl.LOSSES)}")
    x = dsl.input("x", ("N", *input_shape))
    out = net(x)
    if loss == "softmax_cross_entropy":
        y = dsl.input("y", out.shape[:-1], dtype="i32")
    else:
        y = dsl.input("y", out.shape, dtype=out.dtype)
    return compile(out, dsl.LOSSES[loss](out, y), optimizer, name=kw.pop("name", net.name), **kw)
