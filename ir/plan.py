"""Plan types: where each value lives (``Buffer``), the units of generated code (``Kernel``) and
the scheduled graph (``Schedule``). Data only; ``ir.passes.schedule`` makes them, codegen and
the runtime read them.

Regions of a Buffer: param, state (persistent flat regions), input, output (caller-owned,
by slot), grad (the gradients, laid out like the param region), arena (intermediates, offset
``fixed + row * N`` bytes), inline (computed in registers where used), fused (inside a kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph, Node

ALIGN = 64


def align(x: int) -> int:
    """``x`` rounded up to a multiple of ALIGN bytes."""
    return (x + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Buffer:
    """Where a value lives: region, slot/offset (bytes) as ``fixed + row * N``, and its size."""

    value: str
    region: str
    offset: int = 0
    offset_row: int = 0
    size: int = 0
    size_row: int = 0
    slot: int = -1

    def describe(self) -> str:
        if self.region in ("input", "output"):
            return f"{self.region}[{self.slot}]"
        if self.region in ("inline", "fused"):
            return self.region
        off = f"{self.offset}" + (f"+{self.offset_row}*N" if self.offset_row else "")
        size = f"{self.size}" + (f"+{self.size_row}*N" if self.size_row else "")
        return f"{self.region}@{off} ({size} B)"


def gemm_result(nodes: list[Node]) -> str:
    """The value a matmul kernel's GEMM leaves in C: its last node of the matmul's section.

    Nodes of another section are an optimizer update in the epilogue
    (ir.passes.fuse.fuse_update_epilogue): they read the gradient and store the param's and
    slots' new values themselves, and C keeps the gradient (which the JIT may leave unstored:
    codegen.gemm's c_unread)."""
    sec = nodes[0].section
    return [n for n in nodes if n.section == sec][-1].name


@dataclass(frozen=True)
class Kernel:
    """A unit of generated code: ``nodes`` run in one loop nest; ``stores`` are written to memory."""

    name: str
    kind: str  # elementwise | matmul | reduce | rowwise | transpose | reshape | copy
    nodes: tuple[str, ...]
    stores: tuple[str, ...]
    copy_to: str | None = None  # for kind "copy": the update target written from nodes[0]
    elements: int = 0  # flat update (fuse_optimizer): loop over this many elements
    # matmul kernels: the value the GEMM's C holds when it is not the last node (the gradient,
    # when the epilogue also applies its param's update and stores the new values itself)
    gemm_out: str | None = None


@dataclass
class Schedule:
    """The scheduled graph: kernels in execution order and a buffer for every value."""

    graph: Graph
    kernels: list[Kernel]
    buffers: dict[str, Buffer]
    grad_bytes: int
    arena_fixed: int
    arena_row: int
    unplanned_fixed: int
    unplanned_row: int
    input_slots: list[str] = field(default_factory=list)
    output_slots: list[str] = field(default_factory=list)
    # fuse_optimizer's sets ("optK"): "one loop over ... elements" or "not flat: <why>"
    flat_notes: dict[str, str] = field(default_factory=dict)
    # bytes after the arena for the kernels' own scratch (the GEMM's packed blocks), which
    # the code generator sizes (codegen.module.scratch_bytes) and the compiler sets
    scratch_bytes: int = 0
    # param -> where its update runs: "in the epilogue of the GEMM ..." or "not in a GEMM
    # epilogue: <why>" (ir.passes.fuse.update_epilogues)
    update_notes: dict[str, str] = field(default_factory=dict)

    def workspace_bytes(self, n: int) -> int:
        """[grad | arena fixed part | arena per-row part x n | scratch] for batch n."""
        return self.grad_bytes + self.arena_fixed + self.arena_row * n + self.scratch_bytes

    def scratch_offset(self, n: int) -> int:
        """Where the scratch starts in the workspace for batch n (the code rounds the address
        up to ALIGN bytes: scratch_bytes has room for it)."""
        return self.grad_bytes + self.arena_fixed + self.arena_row * n

    def peak_arena_bytes(self, n: int) -> int:
        return self.arena_fixed + self.arena_row * n

    def unplanned_bytes(self, n: int) -> int:
        return self.unplanned_fixed + self.unplanned_row * n
