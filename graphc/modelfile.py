"""``graphc.load_model``: a whole-model file (``.gcm``, written by ``Model.save_model``) back to
a compiled Model, without the Python source that declared the network.

The file's format is described in ``graphc.runtime.modelfile``. Nothing in it is executed: the
network is parsed from graphc's IR text, the optimizer is one of graphc's classes chosen by name
with its fields checked by its constructor, and the weights go through the checkpoint loader's
checks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from graphc.ir.errors import CheckpointError, GraphcError
from graphc.ir.text import parse_graph
from graphc.ir.verify import check_sizes, verify
from graphc.runtime import checkpoint
from graphc.runtime.modelfile import EXTRA_KEY, FORMAT, VERSION

from . import optim
from .dsl import Tensor


def read_description(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model description, every saved array by name, the ONNX import's conversions as Model
    attributes: _io_conversions) of a model file, checked.

    Raises:
        CheckpointError: not a checkpoint, or a checkpoint without a model description, or a
            description of another format version or with missing or mistyped fields.
    """
    header, params, state = checkpoint.read(path, kind="model file")
    desc = header.get("extra", {}).get(EXTRA_KEY) if isinstance(header.get("extra"), dict) else None
    where = os.fspath(path)
    if not isinstance(desc, dict):
        raise CheckpointError(
            f"{where!r} is a checkpoint without a model description (written by model.save, "
            "not model.save_model): build the network in Python and use model.load"
        )
    if desc.get("format") != FORMAT or desc.get("version") != VERSION:
        raise CheckpointError(
            f"{where!r}: model file format {desc.get('format')!r} version {desc.get('version')!r}; "
            f"this graphc reads {FORMAT!r} version {VERSION}"
        )
    kinds = {"name": str, "graph": str, "outputs": list, "opt_level": int}
    for key, kind in kinds.items():
        if not isinstance(desc.get(key), kind):
            raise CheckpointError(
                f"{where!r}: model description field {key!r} is missing or not a {kind.__name__}"
            )
    # the fields that name values or classes: text (a list or null there escaped as TypeError
    # or KeyError from the lookups by name)
    if not all(isinstance(v, str) and v for v in desc["outputs"]):
        raise CheckpointError(
            f"{where!r}: model description field 'outputs' must list value names, got "
            f"{desc['outputs']!r:.200}"
        )
    for key in ("loss", "loss_kind", "prediction", "target"):
        if desc.get(key) is not None and not isinstance(desc[key], str):
            raise CheckpointError(
                f"{where!r}: model description field {key!r} must be a name or null, got "
                f"{desc[key]!r:.200}"
            )
    spec = desc.get("optimizer")
    if spec is not None and not (
        isinstance(spec, dict)
        and isinstance(spec.get("class"), str)
        and isinstance(spec.get("fields"), dict)
    ):
        raise CheckpointError(
            f"{where!r}: model description field 'optimizer' must be null or "
            f'{{"class": name, "fields": {{...}}}}, got {spec!r:.200}'
        )
    return desc, {**state, **params}, _io_conversions(desc, where)


def _io_conversions(desc: dict[str, Any], where: str) -> dict[str, Any]:
    """The description's ``output_dtypes`` (output name -> an integer or bool numpy dtype),
    ``output_row_terms`` (output name -> int), ``output_batch_axes`` (output name -> the
    ONNX axis of N) and ``bool_inputs`` (names), checked (each
    absent: empty), as Model attributes of those names.

    Raises:
        CheckpointError: a field of the wrong kind, an output the description does not list,
            or a dtype that is not bool or an integer type.
    """
    outputs = set(desc["outputs"])
    dtypes = desc.get("output_dtypes", {})
    terms = desc.get("output_row_terms", {})
    bools = desc.get("bool_inputs", [])
    axes = desc.get("output_batch_axes", {})
    in_axes = desc.get("input_batch_axes", {})
    ok = (
        isinstance(dtypes, dict)
        and isinstance(terms, dict)
        and isinstance(axes, dict)
        and set(axes) <= outputs
        and all(type(v) is int and v > 0 for v in axes.values())
        and isinstance(in_axes, dict)
        and all(type(v) is int and v > 0 for v in in_axes.values())
        and isinstance(bools, list)
        and set(dtypes) <= outputs
        and set(terms) <= set(dtypes)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in terms.values())
        and all(isinstance(v, str) for v in [*dtypes.values(), *bools])
    )
    conv: dict[str, np.dtype] = {}
    if ok:
        for k, v in dtypes.items():
            try:
                conv[k] = np.dtype(v)
            except TypeError:
                ok = False
                break
            ok = ok and conv[k].kind in "biu"
    if not ok:
        raise CheckpointError(
            f"{where!r}: model description fields 'output_dtypes' ({dtypes!r:.120}), "
            f"'output_row_terms' ({terms!r:.120}), 'output_batch_axes' ({axes!r:.120}), "
            f"'input_batch_axes' ({in_axes!r:.120}) or "
            f"'bool_inputs' ({bools!r:.120}) are not integer or bool dtypes, integers, axes "
            "above 0 and input names of the listed outputs"
        )
    return {
        "output_dtypes": conv,
        "output_row_terms": dict(terms),
        "output_batch_axes": dict(axes),
        "input_batch_axes": dict(in_axes),
        "bool_inputs": frozenset(bools),
    }


def _restore_conversions(model: Any, conversions: dict[str, Any]) -> Any:
    """``model`` with the ONNX import's output and input conversions (read_description's)."""
    inputs = {n.name: len(n.type.shape) for n in model.program.forward.inputs}
    for k, axis in conversions.get("input_batch_axes", {}).items():
        if not 0 < axis < inputs.get(k, 0):
            raise CheckpointError(
                f"model description field 'input_batch_axes' gives input {k!r} the batch axis "
                f"{axis}, but the model's inputs (name: rank) are {inputs}"
            )
    for key, value in conversions.items():
        setattr(model, key, value)
    return model


def _check_stored_shapes(g: Any, stored: dict[str, Any], where: str) -> None:
    """Each param and state of ``g`` that the file stores an array for must have that array's
    shape and dtype, and every param must be stored: checked before anything compiles or
    allocates (a forged graph may declare shapes its arrays do not have).

    Raises:
        CheckpointError: naming the file, the value, the stored array and the declared type.
    """
    for n in g.nodes:
        if n.op not in ("param", "state"):
            continue
        a = stored.get(n.name)
        if a is None:
            if n.op == "param":
                raise CheckpointError(f"{where}: param {n.name!r} ({n.type}) has no stored values")
            continue
        if tuple(a.shape) != n.type.concrete(1) or a.dtype != n.type.np_dtype:
            raise CheckpointError(
                f"{where}: the stored array {n.name!r} is {a.dtype}{list(a.shape)}, but the "
                f"network's graph declares {n.type}"
            )


def network_from_description(
    desc: dict[str, Any], constants: dict[str, Any], where: str = "model file"
) -> tuple[list[Tensor], Tensor | None, Any]:
    """(output tensors, loss tensor or None, optimizer or None) rebuilt from a description.

    Raises:
        CheckpointError: the graph text does not parse or verify, declares a value too large to
            allocate (``ir.verify.check_sizes``), names an unknown value, or
            the optimizer is unknown or has bad fields.
    """
    try:
        g = check_sizes(verify(parse_graph(desc["graph"])))
    except GraphcError as e:
        raise CheckpointError(f"{where}: the network's graph is invalid: {e}") from None
    _check_stored_shapes(g, constants, where)
    tensors: dict[str, Tensor] = {}
    for n in g.nodes:
        t = Tensor(n, tuple(tensors[i] for i in n.inputs))
        if n.op in ("param", "state") and n.attr("init") == "array":
            if n.name not in constants:
                raise CheckpointError(f"{where}: the values of constant {n.name!r} are missing")
            t.value = constants[n.name]
        tensors[n.name] = t
    missing = [v for v in [*desc["outputs"], desc.get("loss")] if v and v not in tensors]
    if missing:
        raise CheckpointError(f"{where}: the graph has no value(s) {missing}")
    outputs = [tensors[v] for v in desc["outputs"]]
    loss = tensors[desc["loss"]] if desc.get("loss") else None
    if loss is not None:
        loss.kind = desc.get("loss_kind")
        pred = desc.get("prediction")
        loss.prediction = pred if isinstance(pred, str) and pred in tensors else None
        target = desc.get("target")  # absent (an older file): the first label input, as before
        loss.target = target if isinstance(target, str) and target in tensors else None
    opt = None
    spec = desc.get("optimizer")
    if loss is not None and spec is not None:
        cls = optim.OPTIMIZERS.get(spec.get("class")) if isinstance(spec, dict) else None
        if cls is None or not isinstance(spec.get("fields"), dict):
            raise CheckpointError(
                f"{where}: unknown optimizer {spec!r}; graphc has {', '.join(optim.OPTIMIZERS)}"
            )
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["fields"].items()}
        try:
            opt = cls(**fields)
        except (TypeError, GraphcError) as e:
            raise CheckpointError(
                f"{where}: optimizer {cls.__name__} fields are invalid: {e}"
            ) from None
    return outputs, loss, opt


def load_model(path: str | os.PathLike, *, threads: int | None = None) -> Any:
    """Read a model file written by ``Model.save_model`` and return the compiled Model with its
    weights, optimizer state and learning rate, ready to ``predict``, ``fit`` further or
    ``export``.

    Args:
        path: the ``.gcm`` file.
        threads: as for ``graphc.compile``.

    Raises:
        CheckpointError: the file is missing, damaged, hostile or not a model file (the
            message says which); nothing is compiled then.
    """
    from .api import compile as gc_compile

    where = os.fspath(path)
    desc, params, conversions = read_description(path)
    outputs, loss, opt = network_from_description(desc, params, repr(where))
    model = gc_compile(
        outputs, loss, opt, name=desc["name"], opt_level=desc["opt_level"], threads=threads
    )
    checkpoint.load(model, path, rebuilt=True)
    return _restore_conversions(model, conversions)


def model_from_bytes(data: bytes, options: dict[str, Any]) -> Any:
    """The Model a ``.gcm`` image describes (``Model.__reduce__``: pickle, copy.copy,
    copy.deepcopy): compiled again (a compile-cache hit in the same cache), with its weights,
    optimizer state, step counter and rates, then ``options`` applied: ``threads`` (None: the
    default), ``seed``, ``check_numerics``, ``history``, ``use_epoch_entry``,
    ``constant_outputs``, ``output_order``. An ONNX import's conversions come from the image;
    a pickle of graphc 512270f to 145548c, whose image lacks them, has them in ``options``
    (``output_dtypes``: output name -> numpy dtype name, ``output_row_terms``,
    ``bool_inputs``).

    Raises:
        CheckpointError: the image is not a model file (as load_model).
    """
    import tempfile

    from .api import compile as gc_compile

    with tempfile.TemporaryDirectory(prefix="graphc-copy-") as d:
        path = os.path.join(d, "model.gcm")
        with open(path, "wb") as f:
            f.write(data)
        desc, params, conversions = read_description(path)
        outputs, loss, opt = network_from_description(desc, params, "the copied model")
        model = gc_compile(
            outputs,
            loss,
            opt,
            name=desc["name"],
            opt_level=desc["opt_level"],
            threads=options.get("threads"),
            seed=options.get("seed", 0),
            check_numerics=bool(options.get("check_numerics", False)),
        )
        checkpoint.load(model, path, rebuilt=True)
        _restore_conversions(model, conversions)
    model.history = options.get("history")
    model.use_epoch_entry = options.get("use_epoch_entry", True)
    if "output_dtypes" in options:  # a pickle of graphc 512270f..145548c: the file lacks them
        model.output_dtypes = {k: np.dtype(v) for k, v in options["output_dtypes"].items()}
        model.output_row_terms = dict(options.get("output_row_terms", {}))
        model.bool_inputs = frozenset(options.get("bool_inputs", ()))
    model.constant_outputs = {
        k: np.array(v, dtype=object if dt == "|O" else np.dtype(dt))
        for k, (v, dt) in options.get("constant_outputs", {}).items()
    }
    model.output_order = list(options.get("output_order", ()))
    return model
