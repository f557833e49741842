"""The op registry: one class per op (shape rule, numpy reference, VJP), collected in OPS."""

from . import elementwise, linalg, loss, reduce, sources  # noqa: F401  (they register their ops)
from .base import OPS, Binary, Op, Reduce, Unary, normalize_axes, register

__all__ = ["OPS", "Binary", "Op", "Reduce", "Unary", "normalize_axes", "register"]
