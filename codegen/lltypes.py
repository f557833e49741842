"""The LLVM types and constants every emitter uses, and the LLVM type of each IR dtype."""

from __future__ import annotations

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
