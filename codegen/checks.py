"""Checks on an entry's input values, run by the native entry before any kernel writes.

An entry compiled with checks (``ModuleBuilder.add_entry(..., checks=...)``) scans its
inputs first and returns ``CHECK_BASE + slot`` for the first input slot whose values fail,
having written nothing (params, optimizer state and outputs untouched). The caller, who still
holds the arrays, names the row (the runtime turns the code into an ArgumentError naming the
input and the row; a C caller gets ``NAME_ERR_LABEL``, ``NAME_ERR_NONFINITE`` or
``NAME_ERR_LR`` from the library's wrappers). The body without the scans stays callable as
``NAME_<entry>_unchecked`` for callers that checked the whole data set once (the epoch entry).

Kinds (``InputCheck.kind``):

- ``finite``: every element is finite (no NaN, no +-Inf);
- ``unit``: every element lies in [0, 1] (binary cross-entropy targets; NaN fails);
- ``classes``: every integer label lies in 0 .. bound-1 (softmax cross-entropy labels);
- ``lr``: the scalar is finite and >= 0 (the learning rate).

Each scan is one pass with no early exit and an integer OR as its only loop-carried value, so
LLVM's loop vectorizer turns it into full-width vector compares: about a byte per cycle of
bandwidth-bound work, small next to the step that follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from .kernels import LL, PTR
from .loops import I32, I64, i64, loop

CHECK_BASE = 1 << 24  # an entry returns CHECK_BASE + slot when input slot `slot` fails its check
# (far above check_numerics' NUMERICS_BASE + site codes, codegen/kernels.py)


@dataclass(frozen=True)
class InputCheck:
    """The check of one input (by value name): its kind and, for ``classes``, the count."""

    name: str
    kind: str
    bound: int = 0


def _scanner(module: ir.Module, kind: str, dtype: str) -> ir.Function:
    """``i32 graphc.scan.KIND.DTYPE(T *p, i64 count, i64 bound)``: 1 when an element fails."""
    name = f"graphc.scan.{kind}.{dtype}"
    if name in module.globals:
        return module.globals[name]
    t = LL[dtype]
    fn = ir.Function(module, ir.FunctionType(I32, [PTR, I64, I64]), name=name)
    fn.linkage = "internal"
    p, count, bound = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc = b.alloca(I32, name="acc")  # mem2reg makes it the loop's phi
    b.store(ir.Constant(I32, 0), acc)
    with loop(b, count, name="i") as i:
        x = b.load(b.gep(p, [i], inbounds=True, source_etype=t), typ=t, name="x")
        if kind == "finite":  # x - x is NaN exactly for NaN and +-Inf
            bad = b.fcmp_unordered("uno", b.fsub(x, x), ir.Constant(t, 0.0), name="bad")
        elif kind == "unit":  # unordered compares: NaN fails too
            lo = b.fcmp_unordered("<", x, ir.Constant(t, 0.0))
            hi = b.fcmp_unordered(">", x, ir.Constant(t, 1.0))
            bad = b.or_(lo, hi, name="bad")
        elif kind == "classes":  # unsigned compare: negative labels are huge
            bad = b.icmp_unsigned(">=", b.sext(x, I64), bound, name="bad")
        else:
            raise ValueError(f"no vector scan for check kind {kind!r}")
        b.store(b.or_(b.load(acc, typ=I32), b.zext(bad, I32)), acc)
    b.ret(b.load(acc, typ=I32))
    return fn


def emit_input_checks(
    b: ir.IRBuilder,
    module: ir.Module,
    checks: list[tuple[int, InputCheck, str, ir.Value]],
    inputs: ir.Value,
) -> None:
    """At ``b``: for each (slot, check, dtype, element count), load input ``slot``'s pointer
    from ``inputs`` and return ``CHECK_BASE + slot`` when its values fail the check."""
    for slot, chk, dtype, count in checks:
        p = b.load(b.gep(inputs, [i64(slot)], source_etype=PTR), typ=PTR, name=f"chk{slot}.p")
        if chk.kind == "lr":
            t = LL[dtype]
            x = b.load(p, typ=t, name="lr")
            neg_or_nan = b.fcmp_unordered("<", x, ir.Constant(t, 0.0))
            inf = b.fcmp_ordered("==", x, ir.Constant(t, float("inf")))
            bad = b.or_(neg_or_nan, inf, name="lr.bad")
        else:
            r = b.call(_scanner(module, chk.kind, dtype), [p, count, i64(chk.bound)])
            bad = b.icmp_unsigned("!=", r, ir.Constant(I32, 0), name=f"chk{slot}.bad")
        with b.if_then(bad, likely=False):
            b.ret(ir.Constant(I32, CHECK_BASE + slot))
