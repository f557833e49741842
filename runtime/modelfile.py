"""Whole-model files (``.gcm``): the network, its weights, optimizer state and training set-up.

A model file is a checkpoint (``runtime/checkpoint.py``: ``.npz`` read with
``allow_pickle=False``, written atomically, every array checked against the header) whose
header's ``extra`` holds, under ``"model_file"``::

    {"format": "graphc-model", "version": 1,
     "name": model name, "graph": the declared network in graphc's IR text (ir/text.py),
     "outputs": [value names], "loss": value name or null, "loss_kind": "softmax_ce" | ...,
     "prediction": the loss's prediction operand (value name) or null (absent before),
     "target": the loss's target operand (value name) or null (absent before),
     "optimizer": {"class": "Adam", "fields": {"lr": 0.001, ...}} or null,
     "opt_level": 2}

and, only for a model with them (an ONNX import's integer and bool outputs and bool inputs,
``Model.output_dtypes`` / ``output_row_terms`` / ``bool_inputs``)::

     "output_dtypes": {output name: numpy dtype string, e.g. "<i8", "|b1"},
     "output_row_terms": {output name: int}, "bool_inputs": [input names],
     "output_batch_axes": {output name: the ONNX axis of N, > 0},
     "input_batch_axes": {input name: the ONNX axis of N, > 0}

So a file names no Python code: ``graphc.load_model`` parses the graph text, rebuilds the
network, compiles it and restores the weights through the checkpoint loader, which checks that
they belong to that graph. ``graphc.modelfile`` holds the reader (it compiles: a layer above).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from graphc.ir.errors import CheckpointError
from graphc.ir.text import print_graph

from . import checkpoint

FORMAT = "graphc-model"
VERSION = 1
EXTRA_KEY = "model_file"


def describe(model: Any) -> dict[str, Any]:
    """The ``model_file`` header entry of ``model`` (see the module docstring).

    Raises:
        CheckpointError: the model was not built from a declared network (no ``declared``
            graph, e.g. a Program made by hand) or its optimizer is not a dataclass.
    """
    prog = model.program
    g = getattr(prog, "declared", None)
    if g is None:
        raise CheckpointError(
            f"model {prog.name!r} has no declared graph to save (compile it with gc.compile)"
        )
    opt = model.optimizer if prog.loss is not None else None
    opt_desc = None
    if opt is not None:
        if not dataclasses.is_dataclass(opt):
            raise CheckpointError(f"optimizer {type(opt).__name__} cannot be saved in a model file")
        fields = {
            f.name: getattr(opt, f.name)
            for f in dataclasses.fields(opt)
            if f.name != "learning_rate"
        }
        opt_desc = {"class": type(opt).__name__, "fields": fields}
    desc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": prog.name,
        "graph": print_graph(g),
        "outputs": list(prog.outputs),
        "loss": prog.loss,
        "loss_kind": prog.loss_kind,
        "prediction": getattr(prog, "prediction", None),
        "target": getattr(prog, "target", None),
        "optimizer": opt_desc,
        "opt_level": int(getattr(prog, "opt_level", 2)),
    }
    # predict's conversions of an ONNX import's outputs and inputs: without them a loaded
    # model returned an int64 output as float32 and MaxPool's Indices without their row term
    dtypes = getattr(model, "output_dtypes", {})
    if dtypes:
        desc["output_dtypes"] = {k: v.str for k, v in dtypes.items()}
    terms = getattr(model, "output_row_terms", {})
    if terms:
        desc["output_row_terms"] = {k: int(v) for k, v in terms.items()}
    axes = getattr(model, "output_batch_axes", {})
    if axes:
        desc["output_batch_axes"] = {k: int(v) for k, v in axes.items()}
    in_axes = getattr(model, "input_batch_axes", {})
    if in_axes:
        desc["input_batch_axes"] = {k: int(v) for k, v in in_axes.items()}
    bools = getattr(model, "bool_inputs", ())
    if bools:
        desc["bool_inputs"] = sorted(bools)
    return desc


def save_model(model: Any, path: str | os.PathLike) -> str:
    """Write ``model`` as one model file (see the module docstring); returns the path.

    Raises:
        CheckpointError: the model cannot be described, or the file cannot be written (the
            previous file, if any, is left as it was).
    """
    return checkpoint.save(model, path, extra={EXTRA_KEY: describe(model)})
