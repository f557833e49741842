"""Tests for scheduling and memory planning: kernels from fusion groups, arena reuse by liveness,
in-place elementwise results, and the planned peak against the unplanned sum.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import build_graphs, make_layout
from graphc.ir.interpret import interpret
from graphc.ir.passes.pipeline import run_pipeline
from graphc.ir.passes.schedule import ALIGN, Buffer, align, schedule
from graphc.ir.text import parse_graph
from graphc.ir.verify import verify


def plan(text: str, **kw):
    g = verify(parse_graph(text))
    return g, schedule(g, {}, **kw)


def arena(s, v: str) -> tuple[int, int]:
    b = s.buffers[v]
    assert b.region == "arena", (v, b)
    return b.offset, b.offset_row


CHAIN = """graph f(x: f32[N,8]) {
  %0 = exp(x) : f32[N,8]
  %1 = neg(%0) : f32[N,8]
  %2 = tanh(%1) : f32[N,8]
  %3 = sum(%2) {axes=[1]} : f32[N]
  return %3
}"""


def test_elementwise_results_take_the_buffer_of_a_dying_operand() -> None:
    _, s = plan(CHAIN)
    assert arena(s, "%0") == arena(s, "%1") == arena(s, "%2")
    row = align(8 * 4)  # bytes per batch row of one f32[N,8] value, aligned
    assert s.peak_arena_bytes(10) == 10 * row  # one buffer for the whole chain
    assert s.unplanned_bytes(10) == 3 * 10 * row


def test_no_reuse_at_all_without_planning() -> None:
    _, s = plan(CHAIN, reuse=False)
    assert len({arena(s, v) for v in ("%0", "%1", "%2")}) == 3
    assert s.peak_arena_bytes(7) == s.unplanned_bytes(7)


def test_in_place_reuse_can_be_switched_off_alone() -> None:
    _, s = plan(CHAIN, in_place_reuse=False)
    # liveness reuse still lets %2 take %0's place, but %1 overlaps both
    assert arena(s, "%1") != arena(s, "%0") and arena(s, "%2") == arena(s, "%0")


def test_no_in_place_result_over_an_operand_read_later() -> None:
    _, s = plan("""graph f(x: f32[N,8]) {
      %0 = exp(x) : f32[N,8]
      %1 = neg(%0) : f32[N,8]
      %2 = add(%0, %1) : f32[N,8]
      %3 = sum(%2) {axes=[1]} : f32[N]
      return %3
    }""")
    assert arena(s, "%1") != arena(s, "%0")
    assert arena(s, "%2") in (arena(s, "%0"), arena(s, "%1"))


def test_no_in_place_result_over_a_broadcast_operand_or_in_a_matmul() -> None:
    _, s = plan("""graph f(x: f32[8,8], b: f32[8]) {
      %0 = exp(b) : f32[8]
      %1 = add(x, %0) : f32[8,8]
      %2 = exp(%1) : f32[8,8]
      %3 = matmul(%2, x) : f32[8,8]
      %4 = sum(%3) {axes=[1]} : f32[8]
      return %4
    }""")
    assert arena(s, "%1") != arena(s, "%0")  # [8] operand, [8,8] result
    assert arena(s, "%2") == arena(s, "%1")  # same type, dies here
    assert arena(s, "%3") != arena(s, "%2")  # the GEMM reads A while it writes C


def test_fusion_groups_become_kernels_with_their_stored_values() -> None:
    g = verify(
        parse_graph("""graph f(x: f32[N,4], w: f32[4,3] param, b: f32[3] param) {
      fused d {
        %0 = matmul(x, w) : f32[N,3]
        %1 = add(%0, b) : f32[N,3]
        %2 = relu(%1) : f32[N,3]
      }
      fused e {
        %3 = exp(%2) : f32[N,3]
        %4 = neg(%3) : f32[N,3]
      }
      %5 = sum(%3) {axes=[1]} : f32[N]
      return %4, %5
    }""")
    )
    layout = {"w": Buffer("w", "param", 0, 0, 48), "b": Buffer("b", "param", 64, 0, 12)}
    s = schedule(g, layout)
    kinds = [(k.kind, k.nodes, k.stores) for k in s.kernels]
    assert kinds == [
        ("matmul", ("%0", "%1", "%2"), ("%2",)),
        ("elementwise", ("%3", "%4"), ("%3", "%4")),
        ("reduce", ("%5",), ("%5",)),
    ]
    assert s.buffers["%0"].region == s.buffers["%1"].region == "fused"
    assert s.buffers["%4"].region == "output"


def _digits_program():
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 32, "relu", name="fc1"), 10, name="fc2")
    prog = build_graphs(
        "digits", [logits], gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=1e-2)
    )
    make_layout(prog)
    return prog


def test_digits_training_plan_at_O0_O1_O2() -> None:
    prog = _digits_program()
    figures = {}
    for level in (0, 1, 2):
        g = run_pipeline(prog.training, level, verify_each=True).graph
        s = schedule(g, prog.layout, prog.grads, reuse=level >= 1)
        figures[level] = (
            len(s.kernels),
            [s.peak_arena_bytes(n) for n in (32, 128)],
            [s.unplanned_bytes(n) for n in (32, 128)],
        )
        for n in (32, 128):
            assert s.peak_arena_bytes(n) <= s.unplanned_bytes(n)
            assert s.peak_arena_bytes(n) % ALIGN == 0
        if level == 0:
            assert figures[0][1] == figures[0][2]  # nothing shared
    k0, peak0, _ = figures[0]
    k1, peak1, _ = figures[1]
    k2, peak2, _ = figures[2]
    assert k2 * 3 < k0 and k1 <= k0
    assert all(p2 < p1 < p0 for p0, p1, p2 in zip(peak0, peak1, peak2))


@pytest.mark.parametrize("level", [1])
def test_in_place_chain_runs_correctly(level: int) -> None:
    # -O1: no fusion, so each op is its own kernel and the chain runs in one reused buffer
    x = gc.input("x", ("N", 9))
    b = gc.param("b", (9,), init="uniform")
    h = gc.tanh(gc.neg(gc.exp(gc.sigmoid(x) + b)))
    out = gc.sum(h * h - gc.mean(h, axes=1, keepdims=True), axes=1)
    model = gc.compile(out, name="inplace", opt_level=level)
    sched = model.program.schedules["infer"]
    shared = {}
    for v, buf in sched.buffers.items():
        if buf.region == "arena":
            shared.setdefault((buf.offset, buf.offset_row), []).append(v)
    assert max(len(vs) for vs in shared.values()) >= 3
    rng = np.random.default_rng(3)
    xv = rng.standard_normal((13, 9)).astype(np.float32)
    ref = interpret(model.program.inference, {"x": xv, "b": model.params["b"]})
    np.testing.assert_allclose(model.predict(xv), ref[out.name], rtol=1e-5, atol=1e-5)
