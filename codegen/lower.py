"""Lowerings: one function per op turning operand values (scalars or vectors) into a result.

Elementwise ops lower to straight-line code on one element; the kernels in ``kernels.py`` put
them inside loops that LLVM vectorizes. Transcendentals use our polynomial ``vmath``.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.graph import Node

from . import vmath

LOWERINGS: dict[str, Callable[[ir.IRBuilder, Node, list[ir.Value], str], ir.Value]] = {}


def lowering(op: str):
    def deco(fn):
        if op in LOWERINGS:
            raise ValueError(f"lowering for {op!r} defined twice")
        LOWERINGS[op] = fn
        return fn

    return deco


def zero_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 0.0)


def one_like(x: ir.Value) -> ir.Constant:
    return vmath.const_like(x.type, 1.0)


@lowering("add")
def _add(b, node, a, name):
    return b.fadd(a[0], a[1], name=name)


@lowering("sub")
def _sub(b, node, a, name):
    return b.fsub(a[0], a[1], name=name)


@lowering("mul")
def _mul(b, node, a, name):
    return b.fmul(a[0], a[1], name=name)


@lowering("div")
def _div(b, node, a, name):
    return b.fdiv(a[0], a[1], name=name)


@lowering("neg")
def _neg(b, node, a, name):
    return b.fneg(a[0], name=name)


@lowering("square")
def _square(b, node, a, name):
    return b.fmul(a[0], a[0], name=name)


@lowering("maximum")
def _maximum(b, node, a, name):
    return vmath.fmax(b, a[0], a[1], name=name)


@lowering("greater")
def _greater(b, node, a, name):
    c = b.fcmp_ordered(">", a[0], a[1], name=name + ".c")
    return b.select(c, one_like(a[0]), zero_like(a[0]), name=name)


@lowering("greater_equal")
def _greater_equal(b, node, a, name):
    c = b.fcmp_ordered(">=", a[0], a[1], name=name + ".c")
    return b.select(c, one_like(a[0]), zero_like(a[0]), name=name)


@lowering("relu")
def _relu(b, node, a, name):
    # select(x < 0, 0, x) keeps NaN (a NaN input gives a NaN output, so numerics checks see it)
    c = b.fcmp_ordered("<", a[0], zero_like(a[0]), name=name + ".c")
    return b.select(c, zero_like(a[0]), a[0], name=name)


@lowering("exp")
def _exp(b, node, a, name):
    return vmath.exp(b, a[0], name=name)


@lowering("log")
def _log(b, node, a, name):
    return vmath.log(b, a[0], name=name)


@lowering("sqrt")
def _sqrt(b, node, a, name):
    return vmath.sqrt(b, a[0], name=name)


@lowering("sigmoid")
def _sigmoid(b, node, a, name):
    return vmath.sigmoid(b, a[0], name=name)


@lowering("tanh")
def _tanh(b, node, a, name):
    return vmath.tanh(b, a[0], name=name)


@lowering("softplus")
def _softplus(b, node, a, name):
    return vmath.softplus(b, a[0], name=name)


@lowering("broadcast_to")
def _broadcast_to(b, node, a, name):
    return a[0]


def lower_elementwise(b: ir.IRBuilder, node: Node, args: list[ir.Value], name: str) -> ir.Value:
    fn = LOWERINGS.get(node.op)
    if fn is None:
        raise CodegenError(f"no elementwise lowering for op {node.op} (node {node.name})")
    return fn(b, node, args, name)
