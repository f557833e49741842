"""The op registry: one class per op (shape rule, numpy reference, VJP, traits), collected in OPS.

The named sets below are derived once from the ops' traits (``Op.kind`` and the flags); passes,
the verifier, the scheduler, the printer, codegen and the DSL read them instead of keeping lists
of op names. An op class declares what it is; it joins the right sets by being registered.
"""

# importing a family registers its ops
from . import (  # noqa: F401  # noqa: F401, I001
    activations,
    arith,
    conv,
    elementwise,
    linalg,
    loss,
    norm,
    random,
    reduce,
    rowwise,
    shape,
    sources,
)
from .base import (
    OPS,
    REQUIRED,
    Binary,
    Kind,
    Op,
    Reduce,
    Unary,
    normalize_axes,
    register,
)


def ops_where(**traits: object) -> frozenset[str]:
    """The names of the registered ops whose traits equal ``traits`` (e.g. ``kind=Kind.SOURCE``)."""
    return frozenset(
        name for name, op in OPS.items() if all(getattr(op, k) == v for k, v in traits.items())
    )


SOURCE_OPS = ops_where(kind=Kind.SOURCE)  # input, param, state: no operands, no kernel
INLINE_OPS = ops_where(inline=True)  # const, size: computed in registers where used
POINTWISE_OPS = ops_where(kind=Kind.POINTWISE)
MOVEMENT_OPS = ops_where(kind=Kind.MOVEMENT)
ACTIVATIONS = ops_where(activation=True)  # names accepted by dense(..., activation=NAME)
COMMUTATIVE_OPS = ops_where(commutative=True)
DIVIDER_OPS = ops_where(divider=True)  # div, sqrt, rsqrt, reciprocal: the divide unit

__all__ = [
    "ACTIVATIONS",
    "COMMUTATIVE_OPS",
    "DIVIDER_OPS",
    "INLINE_OPS",
    "MOVEMENT_OPS",
    "OPS",
    "POINTWISE_OPS",
    "REQUIRED",
    "SOURCE_OPS",
    "Binary",
    "Kind",
    "Op",
    "Reduce",
    "Unary",
    "normalize_axes",
    "ops_where",
    "register",
]
