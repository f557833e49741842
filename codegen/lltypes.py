"""The LLVM types and constants every emitter uses, and the LLVM type of each IR dtype."""

from __future__ import annotations

import math

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()  # opaque pointers (current llvmlite): element types go to gep/load
VOID = ir.VoidType()

LL: dict[str, ir.Type] = {"f32": F32, "f64": F64, "i32": I32, "i64": I64}  # IR dtype -> LLVM type


def i64(v: int) -> ir.Constant:
    """An i64 constant."""
    return ir.Constant(I64, v)


class _Whole(ir.Constant):
    """A vector constant of one repeated value that LLVM's text names in one word
    (``zeroinitializer``, ``undef``) where llvmlite would print every lane."""

    def __init__(self, typ: ir.VectorType, lane: ir.Constant, word: str) -> None:
        # not ir.Constant.__init__, which wraps every lane in a Constant of its own; the lanes
        # (one shared Constant) are there for llvmlite's checks (shufflevector's mask range)
        self.type = typ
        self.constant = [lane] * typ.count
        self.word = word

    def _get_reference(self) -> str:
        return self.word


_WHOLE: dict[tuple, ir.Constant] = {}  # (vector type, value's type, value) -> constant


def vconst(typ: ir.VectorType, value: object) -> ir.Constant:
    """The vector constant of ``typ`` with ``value`` in every lane (``ir.Undefined``: undef).

    All zeros (+0.0 for floats) and undef are written as ``zeroinitializer`` and ``undef``, the
    constants LLVM parses a lane-by-lane list of them into: the same module in far less text
    (llvmlite prints every lane: 16 per splat, two per broadcast). Printing and parsing the IR
    text of the 784-256-128-10 Adam step took some 0.08 s of a cold compile, in proportion to
    its size; the GEMM modules' splats, zero accumulators and shuffle masks were 29% of it.
    Constants are values (no parent): one object serves every use."""
    key = (typ, type(value), value)
    whole = _WHOLE.get(key)
    if whole is not None:
        return whole
    if value is ir.Undefined:
        whole = _Whole(typ, ir.Constant(typ.element, value), "undef")
    elif isinstance(value, (int, float)) and value == 0 and math.copysign(1.0, value) > 0:
        whole = _Whole(typ, ir.Constant(typ.element, value), "zeroinitializer")
    else:
        return ir.Constant(typ, [value] * typ.count)
    _WHOLE[key] = whole
    return whole


def glue(fn: ir.Function) -> ir.Function:
    """Mark ``fn`` as glue code: control flow, argument shuffling and calls around the kernels
    (entry points, tasks, dispatch, loop nests that call a helper per panel), run a few times
    per call of an entry, so its speed does not show. LLVM compiles it without optimizing
    (``optnone``, which needs ``noinline``): its passes skip it and instruction selection takes
    the fast path (FastISel). That saves some 2-5 ms of compile time per function (measured
    on the 784-256-128-10 Adam step's modules); the kernels it calls are optimized as before.
    Returns ``fn``."""
    fn.attributes.add("noinline")
    fn.attributes.add("optnone")
    return fn
