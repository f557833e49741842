"""The op registry: one class per op (shape rule, numpy reference, VJP), collected in OPS."""

# importing a family registers its ops
from . import elementwise, linalg, loss, random, reduce, sources  # noqa: F401
from .base import OPS, Binary, Op, Reduce, Unary, normalize_axes, register

__all__ = ["OPS", "Binary", "Op", "Reduce", "Unary", "normalize_axes", "register"]
