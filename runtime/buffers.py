"""Aligned numpy buffers and the views of params and states inside their flat regions."""

from __future__ import annotations

import ctypes

import numpy as np

ALIGN = 64


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """A uint8 array of ``nbytes`` whose data pointer is a multiple of ``align`` (zeroed)."""
    raw = np.zeros(nbytes + align, dtype=np.uint8)
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
