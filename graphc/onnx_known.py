"""An ONNX import whose every output is known at import: what ``OnnxImport.compile`` returns
when no output depends on the value of an input (a Constant, ConstantOfShape, the Shape or
Size of an input, a Range of constants, a reduction over an empty axis, or any node whose
inputs were bound with ``from_onnx(constants=...)``).

Nothing is compiled: ``predict`` returns the values the import computed, as ONNX Runtime
returns them, each once per call (not repeated per row). A size that holds the batch size
(Shape(x) of x [N, 3] is [N, 3]) takes the rows of the input that carries N.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, GraphcError
from graphc.runtime.model import constant_value


class KnownOutputs:
    """A model whose outputs are all known at import (``OnnxImport.constant_outputs``).

    ``predict(x=None)`` takes what ``Model.predict`` takes (one array, or a dict by graphc
    input name, or nothing for a graph without inputs) and returns each output as the file
    declares it: one array for one output, else a dict by graphc output name in the file's
    order. Training, export and saving are refused (there is nothing to compute).
    """

    def __init__(
        self,
        name: str,
        inputs: list[Any],
        input_batch_axes: dict[str, int],
        constants: dict[str, np.ndarray],
        order: list[str],
    ) -> None:
        self.name = name
        self.input_types = {t.name: t.type for t in inputs}
        self.input_batch_axes = dict(input_batch_axes)
        self.constant_outputs = dict(constants)
        self.output_order = list(order)

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {t}" for k, t in self.input_types.items())
        outs = ", ".join(
            f"{k}: {self.constant_outputs[k].dtype}{list(np.shape(self.constant_outputs[k]))}"
            for k in self.output_order
        )
        return f"<graphc KnownOutputs {self.name!r} ({ins}) -> ({outs}); every output known>"

    def predict(self, x: Any = None, batch_size: int | None = None) -> Any:
        """The outputs for inputs ``x`` (checked against the declared shapes; their values
        are not read). ``batch_size`` is accepted for Model.predict's signature and unused.

        Returns:
            one output: its array; several: {graphc output name: array}, in the file's order.
            A size holding the batch size is the rows of the input that carries N (int64).

        Raises:
            ArgumentError: an input that is not the model's, one of another rank or fixed
                size, or a size that needs the batch size where no input with N is given.
        """
        feeds = self._feeds(x)
        n = None
        for k, a in feeds.items():
            t = self.input_types[k]
            axis = self.input_batch_axes.get(k, 0)
            dims = list(t.shape)
            if len(dims) != a.ndim or any(
                d != "N" and d != s for d, s in zip(self._layout(dims, axis), a.shape)
            ):
                raise ArgumentError(
                    f"predict: input {k!r} expects {t} (the batch N at axis {axis}), got an "
                    f"array of shape {a.shape}"
                )
            if "N" in dims and n is None:
                n = a.shape[axis]
        outs = {}
        for k in self.output_order:
            v = self.constant_outputs[k]
            if v.dtype == object and n is None:
                raise ArgumentError(
                    f"predict: output {k!r} holds the batch size; pass the inputs "
                    f"{sorted(k for k, t in self.input_types.items() if 'N' in t.shape)}"
                )
            outs[k] = constant_value(v, n or 0)
        return outs[self.output_order[0]] if len(outs) == 1 else outs

    @staticmethod
    def _layout(dims: list, axis: int) -> list:
        """The ONNX layout of an input held N-first: N moved to ``axis``."""
        if not axis:
            return dims
        rest = dims[1:]
        return [*rest[:axis], dims[0], *rest[axis:]]

    def _feeds(self, x: Any) -> dict[str, np.ndarray]:
        if x is None:
            return {}
        if not isinstance(x, dict):
            if len(self.input_types) != 1:
                raise ArgumentError(
                    f"predict: the model has the inputs {list(self.input_types)}: pass a dict"
                )
            x = {next(iter(self.input_types)): x}
        unknown = sorted(set(x) - set(self.input_types))
        if unknown:
            raise ArgumentError(
                f"predict: no inputs {unknown}; the model's are {list(self.input_types)}"
            )
        return {k: np.asarray(a) for k, a in x.items()}

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise GraphcError(
            f"{self.name}: every output is known at import ({', '.join(self.output_order)}): "
            f"nothing is compiled, so there is no {attr!r}; predict returns the outputs"
        )
