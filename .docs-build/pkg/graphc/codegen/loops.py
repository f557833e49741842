"""Loop nests for llvmlite: ``with loop(b, count) as i:`` emits a counted loop around its body."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from llvmlite import ir

I64 = ir.IntType(64)
I32 = ir.IntType(32)


@contextmanager
def loop(
    b: ir.IRBuilder, count: ir.Value, name: str = "i", start: ir.Value | int = 0, step: int = 1
) -> Iterator[ir.Value]:
    """A loop ``for i in range(start, count, step)`` (i64); the body is what the with-block emits.

    The loop is in canonical form (phi in the header, test at the top), which LLVM's loop
    vectorizer recognises.
    """
    start = ir.Constant(I64, start) if isinstance(start, int) else start
    pre = b.block
    header = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    exit_ = b.append_basic_block(f"{name}.exit")
    b.branch(header)
    b.position_at_end(header)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, count), body, exit_)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, ir.Constant(I64, step), name=f"{name}.next", flags=("nsw",))
    i.add_incoming(nxt, b.block)
    b.branch(header)
    b.position_at_end(exit_)


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)
