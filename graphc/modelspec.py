"""Resolve a MODEL argument ``path/to/file.py:name`` to tensors the compiler can take."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

from graphc.ir.errors import ArgumentError
from graphc.ir.graph import Graph


@dataclass
class ModelSpec:
    """What a MODEL argument named: exactly one of ``model``, ``graph`` or (outputs, loss)."""

    name: str
    model: Any = None  # a compiled graphc Model
    graph: Graph | None = None
    outputs: list | None = None
    loss: Any = None
    optimizer: Any = None
    # an ONNX file's import (graphc.onnx_import.OnnxImport): compiled through its compile,
    # which keeps what predict and export read besides the outputs (int64 outputs, the
    # batch axes of inputs and outputs, outputs known at import, MaxPool's row terms)
    onnx: Any = None


def load_object(spec: str) -> tuple[Any, str]:
    """Import ``file.py`` and return (attribute ``name`` of it, name).

    Raises:
        ArgumentError: the spec has no ':', the file does not exist or fails to import, or it
            has no such attribute.
    """
    if ":" not in spec:
        if spec.endswith((".gcm", ".onnx", ".py")) and not os.path.isfile(spec):
            raise ArgumentError(f"model file {spec!r} does not exist")
        if spec.endswith(".py"):
            raise ArgumentError(
                f"MODEL must name what to compile in {spec!r}: {spec}:NAME, where NAME is a "
                "Model, Graph, Tensor, (outputs, loss[, optimizer]) or a function returning one"
            )
        raise ArgumentError(
            f"MODEL must look like path/to/file.py:name, model.gcm or model.onnx, got {spec!r}"
        )
    path, name = spec.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ArgumentError(f"model file {path!r} does not exist")
    mod_name = "_graphc_model_" + os.path.splitext(os.path.basename(path))[0]
    loader = importlib.util.spec_from_file_location(mod_name, path)
    if loader is None or loader.loader is None:
        raise ArgumentError(f"cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(loader)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        loader.loader.exec_module(module)
    except Exception as e:  # the user's file raised: say so, with its message
        raise ArgumentError(f"importing {path!r} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.pop(0)
    if not hasattr(module, name):
        public = sorted(
            k
            for k, v in vars(module).items()
            if not k.startswith("_") and not isinstance(v, type(sys))  # modules: no
        )
        raise ArgumentError(
            f"{path!r} has no attribute {name!r} (it defines: {', '.join(public[:20])})"
        )
    return getattr(module, name), name


def _check_model_function(spec: str, name: str, fn: Any) -> None:
    """Refuse, without calling it, anything but a function that takes no required arguments
    (a script's ``main(argv)`` or a class would run the user's program, not build a network)."""
    import inspect

    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        raise ArgumentError(
            f"{spec}: {name} is a {type(fn).__name__}, not a MODEL function; MODEL names a "
            "Model, Graph, Tensor, an (outputs, loss[, optimizer]) tuple or dict, or a function "
            "taking no arguments that returns one"
        )
    required = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ArgumentError(
            f"{spec}: {name}({', '.join(required)}) takes required arguments, so graphc did not "
            "call it; a MODEL function takes no arguments and returns a Model, Graph, Tensor "
            "or an (outputs, loss[, optimizer]) tuple or dict"
        )


def resolve(spec: str, dims: dict[str, int | str] | None = None) -> ModelSpec:
    """Load MODEL and classify it: a Model, a Graph, a Tensor, a (outputs, loss[, optimizer])
    tuple or dict, or a function returning one of these; or an ONNX file (``model.onnx``,
    imported by graphc.onnx_import).

    ``dims``: for an ONNX file, the sizes of its symbolic dimensions after the batch
    (``from_onnx``'s ``dims``; ``graphc compile --dim NAME=SIZE``, ``graphc dump --dim``).

    A path ending in ``.gcm`` is a whole-model file (``Model.save_model``), loaded with its
    weights by ``graphc.load_model``.

    Raises:
        ArgumentError: the object is none of these. CheckpointError: a bad model file.
    """
    import graphc as gc
    from graphc.runtime.model import Model

    if spec.lower().endswith(".onnx"):  # an ONNX file: its outputs, weights from the file
        from graphc.onnx_import import c_name

        stem = os.path.splitext(os.path.basename(spec))[0]
        imp = gc.from_onnx(spec, name=c_name(stem, set(), "model"), dims=dims)  # libSTEM.so
        return ModelSpec(imp.name, outputs=imp.outputs, onnx=imp)

    if spec.endswith(".gcm") and os.path.isfile(spec):  # a whole-model file: no Python runs
        model = gc.load_model(spec)
        return ModelSpec(model.program.name, model=model)
    obj, name = load_object(spec)
    if callable(obj) and not isinstance(obj, (Model, Graph, gc.Tensor, gc.Sequential)):
        _check_model_function(spec, name, obj)
        try:
            obj = obj()
        except Exception as e:  # the user's function raised: say which, with its message
            raise ArgumentError(
                f"{spec}: calling {name}() to build the model failed: {type(e).__name__}: {e}"
            ) from e
    if isinstance(obj, Model):
        return ModelSpec(obj.program.name, model=obj)
    if isinstance(obj, Graph):
        return ModelSpec(obj.name, graph=obj)
    if isinstance(obj, gc.Tensor):
        return ModelSpec(name, outputs=[obj])
    if isinstance(obj, dict) and "outputs" in obj:
        outs = obj["outputs"]
        return ModelSpec(
            obj.get("name", name),
            outputs=outs if isinstance(outs, list) else [outs],
            loss=obj.get("loss"),
            optimizer=obj.get("optimizer"),
        )
    if isinstance(obj, tuple) and obj and isinstance(obj[0], (gc.Tensor, list)):
        outs = obj[0] if isinstance(obj[0], list) else [obj[0]]
        return ModelSpec(
            name,
            outputs=outs,
            loss=obj[1] if len(obj) > 1 else None,
            optimizer=obj[2] if len(obj) > 2 else None,
        )
    raise ArgumentError(
        f"{spec}: {name} gave a {type(obj).__name__}; expected a graphc Model, Graph, Tensor, a dict with 'outputs' (and 'loss', "
        f"'optimizer'), or a function returning one; got {type(obj).__name__}"
    )
