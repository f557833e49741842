"""The pass pipeline: named graph -> graph passes per optimization level, verified between passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import GraphcError
from ..graph import Graph
from .dce import eliminate_dead_nodes
from .fuse import (
    fuse_conv,
    fuse_dense,
    fuse_elementwise,
    fuse_optimizer,
    fuse_softmax_cross_entropy,
    fuse_update_epilogue,
)
from .simplify import simplify

Pass = Callable[[Graph], Graph]


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    graph: Graph


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord] = field(default_factory=list)


def passes_for_level(level: int) -> list[Pass]:
    """The passes run at -O``level``, in order.

    -O0: dead-code elimination only (and the scheduler shares no memory);
    -O1: + simplify (CSE, constant folding, algebraic identities) (and the scheduler reuses
    dead buffers and writes elementwise results in place); -O2 (default): + fuse_dense,
    fuse_conv (a conv's bias add and activation in its kernel), fuse_elementwise, fuse_softmax_cross_entropy, fuse_update_epilogue (a param's update in
    the epilogue of the GEMM that makes its gradient) and fuse_optimizer (the other alike
    per-parameter update groups marked to run as one loop over the param/grad/state regions).
    """
    out: list[Pass] = [eliminate_dead_nodes]
    if level >= 1:
        out.insert(0, simplify)
    if level >= 2:
        out += [
            fuse_dense,
            fuse_conv,
            fuse_elementwise,
            fuse_softmax_cross_entropy,
            fuse_update_epilogue,
            fuse_optimizer,
        ]
    return out


PASS_NAMES = tuple(p.__name__ for p in passes_for_level(2))


def run_pipeline(
    g: Graph,
    level: int = 2,
    *,
    disabled: tuple[str, ...] = (),
    verify_each: bool = False,
    hook: Callable[[PassRecord], None] | None = None,
) -> PipelineResult:
    """Run the passes of ``level`` (skipping those named in ``disabled``) over ``g``.

    Raises:
        GraphcError: ``disabled`` names a pass that does not exist (see PASS_NAMES).
        VerifyError: with ``verify_each``, a pass broke an invariant of the IR.
    """
    unknown = [d for d in disabled if d not in PASS_NAMES]
    if unknown:
        raise GraphcError(
            f"unknown pass {', '.join(map(repr, unknown))} in disabled_passes; "
            f"the passes are {', '.join(PASS_NAMES)}"
        )
    result = PipelineResult(g)
    for p in passes_for_level(level):
        if p.__name__ in disabled:
            continue
        t0 = time.perf_counter()
        out = p(g)
        if verify_each:
            from ..verify import verify

            verify(out, after=p.__name__)
        rec = PassRecord(p.__name__, len(g.nodes), len(out.nodes), time.perf_counter() - t0, out)
        result.records.append(rec)
        if hook:
            hook(rec)
        g = out
    result.graph = g
    return result
