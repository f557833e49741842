"""The reference interpreter: runs any graph op by op with the registry's numpy references."""

from __future__ import annotations

import numpy as np

from .errors import ArgumentError
from .graph import Graph
from .ops import OPS, SOURCE_OPS
from .types import INT_DTYPES


def interpret(
    g: Graph, feeds: dict[str, np.ndarray], *, float_dtype: type | None = np.float64
) -> dict[str, np.ndarray]:
    """Evaluate every node of ``g``.

    Args:
        g: any graph (forward, training, fused, scheduled: groups are ignored).
        feeds: an array for every input, param and state, by name.
        float_dtype: floating arrays are computed in this dtype (float64 by default, the
            independent reference); None keeps each node's own dtype.

    Returns:
        Every value by name, plus ``"<target>'"`` for each update's new value of ``target``.

    Raises:
        ArgumentError: a source has no feed, or a feed's shape does not match its type.
    """
    env: dict[str, np.ndarray] = {}
    n_batch: int | None = None
    for node in g.nodes:
        if node.op in SOURCE_OPS:
            if node.name not in feeds:
                raise ArgumentError(
                    f"interpret: no value given for {node.op} {node.name}: {node.type}"
                )
            a = np.asarray(feeds[node.name])
            dt = (
                node.type.np_dtype
                if float_dtype is None or node.type.dtype in INT_DTYPES
                else float_dtype
            )
            a = a.astype(dt, copy=False)
            if "N" in node.type.shape and a.ndim == node.type.rank:
                n_batch = a.shape[node.type.shape.index("N")] if n_batch is None else n_batch
            want = node.type.concrete(n_batch if n_batch is not None else -1)
            if a.shape != want:
                raise ArgumentError(
                    f"interpret: {node.name} expects {node.type} (N={n_batch}), got shape {a.shape}"
                )
            env[node.name] = a
            continue
        attrs = dict(node.attrs)
        if node.op == "const":
            dt = node.type.np_dtype if float_dtype is None else float_dtype
            env[node.name] = np.array(attrs["value"], dtype=dt)
            continue
        spec = OPS[node.op]
        with np.errstate(all="ignore"):
            out = spec.evaluate(*(env[i] for i in node.inputs), **attrs)
        keep = float_dtype is None or node.type.dtype in INT_DTYPES  # integers stay integers
        env[node.name] = np.asarray(out, dtype=node.type.np_dtype if keep else float_dtype)
    for target, value in g.updates:
        env[target + "'"] = env[value]
    return env
