"""Aligned numpy buffers and the views of params and states inside their flat regions."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, WorkspaceError

ALIGN = 64


def aligned_empty(
    nbytes: int, align: int = ALIGN, *, what: str = "", rows: int | None = None
) -> np.ndarray:
    """A uint8 array of ``nbytes`` whose data pointer is a multiple of ``align`` (zeroed).

    ``what`` names the buffer and ``rows`` the batch size it is for, in the error.

    Raises:
        WorkspaceError: the memory cannot be had (numpy's MemoryError or its size limit); with
            ``rows``, the message names the batch size and says to use a smaller one.
    """
    try:
        raw = np.zeros(nbytes + align, dtype=np.uint8)
    except (MemoryError, ValueError) as e:
        gib = nbytes / 2**30
        msg = f"cannot allocate {nbytes} bytes ({gib:.2f} GiB)"
        if what:
            msg += f" for {what}"
        if rows is not None:
            msg += (
                f" of a batch of {rows} rows: use a smaller batch (batch_size=, or predict / "
                "evaluate in chunks); the need grows linearly with the rows"
            )
        raise WorkspaceError(f"{msg} ({type(e).__name__}: {e})") from None
    start = (-raw.ctypes.data) % align
    return raw[start : start + nbytes]


def view(region: np.ndarray, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of ``shape``/``dtype`` at byte ``offset`` of ``region`` (shares memory)."""
    count = int(np.prod(shape)) if shape else 1
    nbytes = count * np.dtype(dtype).itemsize
    return region[offset : offset + nbytes].view(dtype).reshape(shape)


_char = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def address(a: np.ndarray) -> int:
    """The data pointer of a C-contiguous array, fast: through the buffer protocol (about
    twice as fast as ``__array_interface__``, which builds a dict); read-only and empty arrays
    take the slow way."""
    try:
        return _addressof(_char(a))
    except (TypeError, ValueError):
        return a.__array_interface__["data"][0]


class WeightViews(dict):
    """name -> the array of a parameter (or state) inside the model's flat region (the memory
    the native code reads): a dict whose names are fixed and whose arrays are the model's.

    ``views[name] = value`` writes ``value`` into that array, checked as ``set_weights``
    checks it (shape, numeric kind, range; nothing written on an error), so that in-place
    idioms (``m.params["w"] *= 0.5``) and assignments both change the model. Before, a plain
    dict took the assignment as a new entry: predict and the exported library kept the old
    weights while get_weights, save and the checkpoint reported the new array. Adding,
    removing or rebinding names raises ArgumentError. Copies, deep copies and pickles are
    plain dicts (a snapshot of the arrays, for ``copy.deepcopy``)."""

    def __init__(self, items: Any, who: str) -> None:
        super().__init__(items)
        self._who = who

    def __setitem__(self, name: Any, value: Any) -> None:
        from .checks import param_value

        target = dict.__getitem__(self, name) if name in self else None
        if target is None:
            raise ArgumentError(
                f"{self._who}: no parameter or state {name!r} to assign (names: "
                f"{', '.join(self)}); the names are fixed by the compiled program"
            )
        target[...] = param_value(f"{self._who}[{name!r}]", self, name, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        staged = dict(*args, **kwargs)
        from .checks import param_value

        values = [(k, param_value(f"{self._who}.update", self, k, v)) for k, v in staged.items()]
        for k, v in values:  # all checked first: all or none
            dict.__getitem__(self, k)[...] = v

    def __ior__(self, other: Any) -> WeightViews:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, name: Any, default: Any = None) -> Any:
        if name in self:
            return dict.__getitem__(self, name)
        self[name] = default  # raises: no such name
        return None

    def _fixed(self, *args: Any, **kwargs: Any) -> Any:
        raise ArgumentError(
            f"{self._who}: its names are fixed by the compiled program (nothing to remove); "
            "write values with set_weights or views[name][...] = value"
        )

    __delitem__ = pop = popitem = clear = _fixed

    def __reduce__(self) -> tuple:
        return (dict, (dict(self),))


def output_arrays(
    out: Any,
    names: list[str],
    specs: list[tuple[tuple[int, ...], np.dtype]],
    inputs: Iterable[np.ndarray],
    owner: str,
) -> list[np.ndarray]:
    """The arrays a call writes its outputs to: new ones (``specs``: each output's shape and
    dtype) when ``out`` is None, else the caller's ``out`` (the array of the only output, or a
    dict by output name), each a writable C-contiguous array of its output's shape and dtype
    that shares no memory with ``inputs`` or with another output's. ``owner`` ("model",
    "library") names the caller's object in the messages.

    Raises:
        ArgumentError: an output without an array, a wrong type, dtype or shape, a read-only
            or strided array, or one overlapping an input or another output (naming the
            output).
    """
    if out is None:
        return [np.empty(shape, dtype) for shape, dtype in specs]
    if isinstance(out, dict):
        missing = [k for k in names if k not in out]
        if missing:
            raise ArgumentError(f"out has no array for output(s) {missing}")
        arrays = [out[k] for k in names]
    elif len(names) == 1:
        arrays = [out]
    else:
        raise ArgumentError(f"out: the {owner} has several outputs {names}; pass a dict")
    inputs = list(inputs)
    for name, (want, dtype), a in zip(names, specs, arrays):
        # one output: `out` is the user's one array, named as they passed it (a graph's own
        # value name such as '%7' means nothing to them); several: the dict's key
        what = "out" if len(names) == 1 else f"out for output {name!r}"
        if not (
            isinstance(a, np.ndarray)
            and a.dtype == dtype
            and a.shape == want
            and a.flags.c_contiguous
            and a.flags.writeable
        ):
            got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ArgumentError(
                f"{what} must be a writable C-contiguous "
                f"{np.dtype(dtype).name}{list(want)} array, got {got}"
            )
        if any(np.may_share_memory(a, v) for v in inputs):
            raise ArgumentError(
                f"{what} overlaps an input array: the outputs are written while the inputs "
                "are still read, so pass an array of its own (or out=None)"
            )
    for i, a in enumerate(arrays):  # two outputs in one memory: one would overwrite the other
        for j in range(i):
            if np.may_share_memory(a, arrays[j]):
                raise ArgumentError(
                    f"out for output {names[i]!r} overlaps out for output {names[j]!r}: each "
                    "output needs an array of its own (one would be written over the other)"
                )
    return arrays


class Outputs(dict):
    """A call's outputs by name (``predict`` of a Model or a loaded library with several
    outputs): keyed by the names users see (codegen.aot.output_keys: the C header's ``y0``,
    ``y1``, ... for graphc's unnamed values), and answering to the graph's own value names
    too (``'%7'``, predict's keys before 2026-12-08, which code may still index by, e.g. from
    ``model.program.outputs``): ``[]``, ``get`` and ``in`` take either, ``copy()`` keeps
    both; iteration, ``len``, ``keys()``, ``dict(result)`` and ``{**result}`` see only the
    first names."""

    def __init__(self, items: Iterable[tuple[str, Any]], aliases: dict[str, str]) -> None:
        super().__init__(items)
        self.aliases = aliases  # graph value name -> key

    def __missing__(self, key: Any) -> Any:
        if key in self.aliases:
            return self[self.aliases[key]]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.aliases

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:  # (an alias too: dict.get would not call __missing__)
            return self[key]
        return default

    def copy(self) -> Outputs:
        return Outputs(self.items(), dict(self.aliases))


def keyed_outputs(keys: list[str], names: Iterable[str], arrays: Iterable[Any]) -> dict[str, Any]:
    """``arrays`` by ``keys`` (one per graph output ``names``): a plain dict when every key
    is its output's name, else an Outputs that answers to the names too."""
    aliases = {n: k for n, k in zip(names, keys) if n != k}
    items = zip(keys, arrays)
    return Outputs(items, aliases) if aliases else dict(items)


def out_by_key(out: Any, keys: list[str], names: Iterable[str]) -> Any:
    """A caller's ``out=`` dict with each graph value name (``'%7'``) replaced by its key
    (``y0``): out dicts keyed either way are taken; anything else as it is."""
    if not isinstance(out, dict):
        return out
    key_of = dict(zip(names, keys))
    return {key_of.get(k, k): v for k, v in out.items()}
