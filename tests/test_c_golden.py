"""The generated C header and wrapper source, byte for byte, for four library plans that
between them take every branch of the generators (embedded and file weights, each entry set,
input checks, CPU checks, a non-trainable constant, dropout's row0, an initial state image,
two inputs and outputs). The plans are built without LLVM (passes and memory plan only), so
this costs about a second.

A change to the generated C must show up here as a change of tests/golden/ (regenerate with
``GRAPHC_WRITE_GOLDEN=1 pytest tests/test_c_golden.py`` and review the diff); a refactoring of
the generators or of codegen/templates/header.h must leave these files as they are (the
sources hold a line in place of codegen/templates/wrapper.c, whose text is checked to be pasted
unchanged). The header must also still compile with the C example programs
(tests/test_c_templates.py)."""

from __future__ import annotations

import itertools
import os
import pathlib

import numpy as np
import pytest

import graphc as gc
from graphc import dsl
from graphc.codegen import aot
from graphc.compiler import build_graphs, schedule_program

GOLDEN = pathlib.Path(__file__).parent / "golden"
VERSION = "0.0.golden"  # the header names graphc's version: fixed here


def _digits():
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 32, "relu", name="fc1"), 10, name="fc2")
    return [logits], gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=1e-2)


def _constant_dropout_bce():
    x = gc.input("x", ("N", 30))
    y = gc.input("y", ("N", 1))
    norm = gc.Normalization(mean=np.zeros(30), variance=np.ones(30), name="norm")
    h = gc.dropout(gc.dense(norm(x), 16, "tanh", name="fc1"), 0.2)
    logit = gc.dense(h, 1, name="fc2")
    return [logit], gc.binary_cross_entropy(logit, y), gc.SGD(lr=0.05, momentum=0.9)


def _two_in_two_out():
    a, b = gc.input("a", ("N", 3)), gc.input("b", ("N", 3))
    return [gc.dense(a, 2, name="p"), gc.dense(b, 4, name="q")], None, None


# name: (network, entries, plan_library keywords)
CASES = {
    "digits": (_digits, ["infer", "train_step"], {"embed": True}),
    "split": (
        _digits,
        ["infer", "train_step", "train_grads", "apply_update"],
        {"embed": False, "target_cpu": "haswell", "cpu_checks": ("avx2", "fma")},
    ),
    "bce": (
        _constant_dropout_bce,
        ["train_grads", "apply_update", "infer", "train_step"],
        {"embed": True, "state_init": bytes(range(256)) * 8},
    ),
    "two": (_two_in_two_out, ["infer"], {"embed": False, "target": "aarch64-linux-gnu"}),
}


def generated(case: str) -> tuple[str, str]:
    """(header, wrapper source) of one case."""
    network, entries, kw = CASES[case]
    # automatic names from %0, as alone: the counter, and the names earlier graphs of this
    # process gave (dsl._fresh skips them; under pytest-xdist a worker has built other graphs)
    saved = dsl._counter, dsl._given
    dsl._counter, dsl._given = itertools.count(), set()
    try:
        outputs, loss, opt = network()
    finally:
        dsl._counter, dsl._given = saved
    prog = schedule_program(build_graphs(case, outputs, loss, opt))
    kw = {"target_cpu": "native", "state_init": None, **kw}
    if kw["state_init"] is not None:
        kw["state_init"] = kw["state_init"][: prog.state_bytes]
    plan = aot.plan_library(
        case,
        prog.schedules,
        prog.layout,
        prog.grads,
        prog.training or prog.forward,
        prog.param_bytes,
        prog.state_bytes,
        entries,
        lr=0.01,
        loss_kind=prog.loss_kind,
        input_checks=prog.input_checks,
        **kw,
    )
    return aot.c_header(plan, VERSION), aot.c_source(plan, f"{case}.h")


def _without_template(source: str) -> str:
    """The wrapper source with the text of codegen/templates/wrapper.c (pasted once, as it is)
    replaced by a line naming it: the golden files hold what the generator writes, not copies
    of the template."""
    fixed = aot.wrapper_template().rstrip("\n")
    assert source.count(fixed) == 1, "the source must carry the wrapper template once, unchanged"
    return source.replace(fixed, "/* [codegen/templates/wrapper.c] */")


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_c_is_unchanged(case) -> None:
    header, source = generated(case)  # unnamed values numbered from %0 there, as in a fresh process
    files = {f"{case}.h": header, f"{case}_api.c": _without_template(source)}
    if os.environ.get("GRAPHC_WRITE_GOLDEN"):
        for name, text in files.items():
            (GOLDEN / name).write_text(text)
    for name, text in files.items():
        want = (GOLDEN / name).read_text()
        assert text == want, f"{name} differs from tests/golden/{name} (see this file's docstring)"
