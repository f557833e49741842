"""The pass pipeline: named graph -> graph passes per optimization level, verified between passes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..graph import Graph
from .dce import eliminate_dead_nodes

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
    """The passes run at -O``level`` (0: none but dead-code elimination)."""
    out: list[Pass] = [eliminate_dead_nodes]
    try:
        from .simplify import simplify

        if level >= 1:
            out.insert(0, simplify)
    except ImportError:
        pass
    try:
        from .fuse import fuse_dense, fuse_elementwise

        if level >= 2:
            out += [fuse_dense, fuse_elementwise]
    except ImportError:
        pass
    return out


def run_pipeline(g: Graph, level: int = 2, *, disabled: tuple[str, ...] = (),
                 verify_each: bool = False, hook: Callable[[PassRecord], None] | None = None
                 ) -> PipelineResult:
    """Run the passes of ``level`` (skipping those named in ``disabled``) over ``g``."""
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
