"""Loops for llvmlite, the one place generated code gets them: a counted loop (with values
carried through phis), ``with loop(b, count) as i:`` around a body, and a loop nest."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from llvmlite import ir

from .lltypes import I1, I32, I64, i64

__all__ = ["I32", "I64", "LoopState", "counted_loop", "i64", "loop", "loop_nest"]


@dataclass
class LoopState:
    """What the body of ``counted_loop`` sees: the induction variable and the carried values."""

    iv: ir.Value
    carried: list[ir.Value]  # read in the body, then overwritten with the next iteration's values
    final: list[ir.Value] = field(default_factory=list)  # after the loop: the values at exit


@contextmanager
def counted_loop(
    b: ir.IRBuilder,
    start: ir.Value,
    stop: ir.Value,
    step: int = 1,
    name: str = "i",
    carried: Sequence[ir.Value] = (),
    *,
    as_written: bool = True,
    exit_name: str = "done",
) -> Iterator[LoopState]:
    """for (iv = start; iv < stop; iv += step) (i64), carrying values through phis.

    The loop is in canonical form (phis in the header, test at the top), which LLVM's loop
    passes recognise. The header phis dominate the exit, so state.iv and state.final hold the
    values the loop stopped with (iv is then the first index not visited, useful to start a
    remainder loop). With ``as_written`` the loop is marked so that LLVM neither vectorizes
    nor unrolls it (the GEMM's loops are vectorized and unrolled as written; doing it again to
    the outer and edge loops multiplies code size and compile time for no speed).
    """
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.{exit_name}")
    b.branch(head)
    b.position_at_end(head)
    iv = b.phi(I64, name=name)
    iv.add_incoming(start, pre)
    phis = []
    for n, v in enumerate(carried):
        phi = b.phi(v.type, name=f"{name}.c{n}")
        phi.add_incoming(v, pre)
        phis.append(phi)
    b.cbranch(b.icmp_signed("<", iv, stop), body, done)
    b.position_at_end(body)
    state = LoopState(iv, list(phis))
    yield state
    latch = b.block
    iv.add_incoming(b.add(iv, ir.Constant(I64, step), name=f"{name}.next", flags=["nsw"]), latch)
    for phi, v in zip(phis, state.carried, strict=True):
        phi.add_incoming(v, latch)
    latch_br = b.branch(head)
    if as_written:
        latch_br.set_metadata("llvm.loop", _loop_id(b.block.parent.module, name))
    b.position_at_end(done)
    state.final = list(phis)


_SHARED = "_graphc_loop_metadata"  # the module's attribute holding what every loop ID shares


def _loop_id(module: ir.Module, name: str) -> ir.MDValue:
    """A distinct loop ID: !{self, !{"graphc.loop", name}, vectorize.enable=0, unroll.disable}.

    What every loop ID shares (vectorize.enable=0, unroll.disable, the "graphc.loop" string) is
    made once per module and kept on the module itself (it references the module: kept
    anywhere else it would keep every module alive): llvmlite names each metadata value it
    makes, about 10 us apiece, and a 784-256-128-10 step's modules have some 140 marked
    loops."""
    shared = getattr(module, _SHARED, None)
    if shared is None:
        no_vec = module.add_metadata(
            [ir.MetaDataString(module, "llvm.loop.vectorize.enable"), ir.Constant(I1, 0)]
        )
        no_unroll = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
        shared = (no_vec, no_unroll, ir.MetaDataString(module, "graphc.loop"))
        setattr(module, _SHARED, shared)
    no_vec, no_unroll, graphc_loop = shared
    tag = module.add_metadata([graphc_loop, ir.MetaDataString(module, name)])
    loop_id = module.add_metadata([None, tag, no_vec, no_unroll])
    loop_id.operands = (loop_id, *loop_id.operands[1:])  # LLVM wants the ID to name itself
    return loop_id


@contextmanager
def loop(
    b: ir.IRBuilder, count: ir.Value, name: str = "i", start: ir.Value | int = 0, step: int = 1
) -> Iterator[ir.Value]:
    """A loop ``for i in range(start, count, step)`` (i64); the body is what the with-block
    emits. LLVM may vectorize and unroll it (the elementwise kernels rely on that)."""
    first = i64(start) if isinstance(start, int) else start
    with counted_loop(b, first, count, step, name, as_written=False, exit_name="exit") as s:
        yield s.iv


def loop_nest(
    b: ir.IRBuilder,
    counts: Sequence[ir.Value],
    strides: dict[str, list],
    out_strides: list,
    body: Callable[[Callable[[str], ir.Value], ir.Value], None],
) -> None:
    """Loops over ``counts`` (outermost first); ``body(index_of, out_index)`` gets each operand's
    linear index (``strides[v][axis]``: its element stride, None where it is broadcast) and the
    output's (``out_strides``)."""

    def step(idx: ir.Value, i: ir.Value, s: ir.Value | None) -> ir.Value:
        return idx if s is None else b.add(idx, b.mul(i, s, flags=("nsw",)), flags=("nsw",))

    def rec(axis: int, idx: dict[str, ir.Value], out_idx: ir.Value) -> None:
        if axis == len(counts):
            body(lambda v: idx[v], out_idx)
            return
        with loop(b, counts[axis], name=f"i{axis}") as i:
            nidx = {v: step(idx[v], i, st[axis]) for v, st in strides.items()}
            rec(axis + 1, nidx, step(out_idx, i, out_strides[axis]))

    rec(0, {v: i64(0) for v in strides}, i64(0))
