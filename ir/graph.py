"""Nodes and graphs: frozen, hashable values; structural equality; indexes computed on demand."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .types import TensorType

Attr = Any  # int | float | bool | str | tuple[Attr, ...]

SECTIONS = ("forward", "backward", "update")


def __getattr__(name: str) -> Any:
    # SOURCE_OPS moved to graphc.ir.ops (derived from the ops' kinds); ir.ops imports this
    # module, so the old name is resolved lazily
    if name == "SOURCE_OPS":
        from .ops import SOURCE_OPS

        return SOURCE_OPS
    raise AttributeError(name)


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        raise TypeError("attrs cannot hold dicts")
    return value


@dataclass(frozen=True, slots=True)
class Node:
    """One value of a graph: ``name = op(inputs) {attrs} : type``.

    Attributes:
        name: unique in its graph ("%7" for generated names, or a user's name).
        op: key into ``graphc.ir.ops.OPS``.
        inputs: names of values defined earlier in the graph.
        type: the result's TensorType.
        attrs: sorted (key, value) pairs; values are ints, floats, bools, strings or tuples.
        section: "forward", "backward" (made by autodiff) or "update" (optimizer).
        group: fusion group id: nodes with one group run in one kernel (None: own kernel).
        loc: where it came from (the user's file:line); not part of equality.
        origin: provenance: "grad of %3 operand 0", "fused %4 %5", ...; not part of equality.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    type: TensorType
    attrs: tuple[tuple[str, Attr], ...] = ()
    section: str = "forward"
    group: str | None = None
    loc: str | None = field(default=None, compare=False)
    origin: str | None = field(default=None, compare=False)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attr_dict(self) -> dict[str, Attr]:
        return dict(self.attrs)

    def with_(self, **changes: Any) -> Node:
        if "attrs" in changes and isinstance(changes["attrs"], dict):
            changes["attrs"] = make_attrs(changes["attrs"])
        return replace(self, **changes)


def value_key(value: Any) -> Any:
    """A hashable key of an attr value that tells apart what ``==`` does not: a float by its
    IEEE-754 bits (+0.0 and -0.0 differ, and NaNs compare by payload), a bool apart from the
    int 1/0. Every table that merges nodes or code by their attrs (CSE, kernel reuse, GEMM
    epilogues, the optimizer fusion, the compile cache) keys by this, never by the value."""
    if isinstance(value, float):
        return ("f", struct.unpack("<Q", struct.pack("<d", value))[0])
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, tuple):
        return tuple(value_key(v) for v in value)
    return value


def attrs_key(attrs: tuple[tuple[str, Attr], ...]) -> tuple:
    """``value_key`` of every attr value, keys kept: a hashable key of a node's attrs."""
    return tuple((k, value_key(v)) for k, v in attrs)


def make_attrs(attrs: dict[str, Attr] | None) -> tuple[tuple[str, Attr], ...]:
    return tuple(sorted((k, _freeze(v)) for k, v in (attrs or {}).items()))


def make_node(
    name: str,
    op: str,
    inputs: tuple[str, ...] | list[str],
    type: TensorType,
    attrs: dict[str, Attr] | None = None,
    **kw: Any,
) -> Node:
    """A Node with attrs sorted and lists turned into tuples."""
    return Node(name, op, tuple(inputs), type, make_attrs(attrs), **kw)


@dataclass(frozen=True)
class Graph:
    """A static dataflow graph.

    Attributes:
        name: the graph's (and the compiled library's) name.
        nodes: in topological order; sources have op "input" (data), "param" (trainable) or
            "state" (optimizer slots and counters, updated but not trained).
        outputs: names of the values the graph returns.
        updates: (target, value) pairs: after a step, source ``target`` takes ``value``.
    """

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    updates: tuple[tuple[str, str], ...] = ()

    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def users(self) -> dict[str, list[str]]:
        """For every value, the names of the nodes that read it (in order, repeated per operand)."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n.name)
        return out

    @cached_property
    def index(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.nodes)}

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def sources(self, op: str | None = None) -> list[Node]:
        from .ops import SOURCE_OPS

        ops = SOURCE_OPS if op is None else frozenset((op,))
        return [n for n in self.nodes if n.op in ops]

    @property
    def inputs(self) -> list[Node]:
        return self.sources("input")

    @property
    def params(self) -> list[Node]:
        return self.sources("param")

    @property
    def states(self) -> list[Node]:
        return self.sources("state")

    def with_(self, **changes: Any) -> Graph:
        return replace(self, **changes)

    def _repr_svg_(self) -> str | None:
        """Jupyter's picture of the graph (Graphviz); None (the text repr) without Graphviz."""
        from .dot import graph_dot, svg_or_none

        return svg_or_none(graph_dot(self))

    def __hash__(self) -> int:  # cached_property needs a __dict__, so no slots; hash the fields
        return hash((self.name, self.nodes, self.outputs, self.updates))


class NameSupply:
    """Fresh ``%N`` names that do not clash with those already in a graph."""

    def __init__(self, taken: Graph | list[str] | None = None) -> None:
        names = [n.name for n in taken.nodes] if isinstance(taken, Graph) else list(taken or [])
        self._taken = set(names)
        nums = [int(s[1:]) for s in names if s.startswith("%") and s[1:].isdigit()]
        self._next = max(nums, default=-1) + 1

    def fresh(self) -> str:
        while f"%{self._next}" in self._taken:
            self._next += 1
        name = f"%{self._next}"
        self._taken.add(name)
        self._next += 1
        return name

    def reserve(self, name: str) -> None:
        self._taken.add(name)
