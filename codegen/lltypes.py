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
