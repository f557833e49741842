"""Tensor types: a shape whose dimensions are ints or the symbolic batch size "N", and a dtype."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

Dim = int | str
BATCH = "N"


@dataclass(frozen=True)
class DType:
    """One IR dtype in every form graphc writes it: numpy, C (generated header), ctypes, and
    the code the header's tables use."""

    name: str  # "f32", as in the text format
    np: Any  # np.float32
    c: str  # "float"
    ctype: Any  # ctypes.c_float
    code: int  # NAME_DTYPE_* code in the generated header
    is_float: bool

    @property
    def itemsize(self) -> int:
        return int(np.dtype(self.np).itemsize)


DTYPE_INFO: dict[str, DType] = {
    d.name: d
    for d in (
        DType("f32", np.float32, "float", ctypes.c_float, 0, True),
        DType("f64", np.float64, "double", ctypes.c_double, 1, True),
        DType("i32", np.int32, "int32_t", ctypes.c_int32, 2, False),
        DType("i64", np.int64, "int64_t", ctypes.c_int64, 3, False),  # the step counter
    )
}
DTYPES = {k: d.np for k, d in DTYPE_INFO.items()}  # dtype name -> numpy scalar type
INT_DTYPES = tuple(k for k, d in DTYPE_INFO.items() if not d.is_float)


@dataclass(frozen=True, slots=True)
class TensorType:
    """The type of a value: ``shape`` (ints, or "N" for the batch size) and ``dtype``.

    ``str()`` gives the text form, e.g. ``f32[N,784]``; a scalar is ``f32[]``.
    """

    shape: tuple[Dim, ...]
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        for d in self.shape:
            ok_int = isinstance(d, int) and not isinstance(d, bool) and d >= 0
            if not (isinstance(d, str) and d == BATCH) and not ok_int:
                raise ValueError(f"bad dimension {d!r} in shape {self.shape}: use ints >= 0 or 'N'")
        if sum(1 for d in self.shape if d == BATCH) > 1:
            raise ValueError(f"shape {self.shape} uses the batch dimension N more than once")

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_batched(self) -> bool:
        return BATCH in self.shape

    @property
    def itemsize(self) -> int:
        return DTYPE_INFO[self.dtype].itemsize

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype])

    def concrete(self, n: int) -> tuple[int, ...]:
        """The shape with N replaced by the batch size ``n``."""
        return tuple(n if d == BATCH else int(d) for d in self.shape)

    def elements_per_row(self) -> int:
        """The element count divided by N (the full count when the type has no N)."""
        out = 1
        for d in self.shape:
            if d != BATCH:
                out *= int(d)
        return out

    def size(self, n: int) -> int:
        """Number of elements for batch size ``n``."""
        return self.elements_per_row() * (n if self.is_batched else 1)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)


def scalar(dtype: str = "f32") -> TensorType:
    return TensorType((), dtype)


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy broadcasting of two shapes with a symbolic N (which matches N or 1); None if they
    don't, or if the result would hold N twice (numpy turns [N,1] and [N] into [N,N])."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    if out.count(BATCH) > 1:  # [N,1] with [N] would be [N,N]: two batch axes, not a type
        return None
    return tuple(reversed(out))
