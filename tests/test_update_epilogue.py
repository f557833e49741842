"""fuse_update_epilogue: a param's optimizer update in the epilogue of the GEMM that makes its
gradient (ir/passes/fuse.py), and where it is refused.

References: the same model with the pass disabled (today's flat update loop: the same float32
formulas, so the results must be bit-identical), the float64 interpreter running the training
graph's own update nodes, and the schedule's order (nothing reads a param after the kernel that
wrote its update over it).
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.ir.passes.fuse as fuse
from graphc.ir.errors import VerifyError
from graphc.ir.interpret import interpret
from graphc.ir.passes.fuse import update_epilogues
from graphc.ir.passes.pipeline import run_pipeline
from graphc.ir.text import parse_graph

RNG = np.random.default_rng(5)
X = RNG.standard_normal((16, 7)).astype(np.float32)
Y = RNG.integers(0, 3, 16).astype(np.int32)
OFF = ("fuse_update_epilogue",)


def _classifier(out, y, opt, name: str, seed: int, disabled=()):
    """``out`` (logits) trained with softmax cross-entropy against labels ``y``."""
    return gc.compile(
        out,
        loss=gc.softmax_cross_entropy(out, y),
        optimizer=opt,
        name=name,
        seed=seed,
        disabled_passes=disabled,
    )


def _model(opt, disabled=(), hidden: int = 6, threads: int | None = None):
    x = gc.input("x", ("N", 7))
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dense(x, hidden, "relu", name="l1")  # dW1 [7, hidden]: the packed GEMM path
    out = gc.dense(h, 3, name="l2")  # dW2 [hidden, 3]: M = hidden
    m = _classifier(out, y, opt, "ue", 3, disabled)
    if threads is not None:
        m.threads = threads
    return m


def _fused_params(model) -> list[str]:
    """The params whose update runs in a matmul kernel's epilogue."""
    sched = model.program.schedules["train_step"]
    g = sched.graph
    target_of = {v: t for t, v in g.updates}
    out = []
    for k in sched.kernels:
        if k.kind == "matmul":
            out += [target_of[n] for n in k.nodes if g[target_of.get(n, n)].op == "param"]
    return sorted(out)


def _steps(a, b, steps: int = 3) -> None:
    for s in range(steps):
        a.lr = b.lr = 0.05 / (1 + s)  # a schedule changing lr between steps
        la, lb = a.train_step(X, Y), b.train_step(X, Y)
        assert la == lb


def _steps_past_one_k_block(a, b) -> None:
    """Two steps on 300 rows: the weight gradients' GEMMs (K = 300) take two K blocks, so a
    gradient the JIT does not keep is read by the epilogue from C, not from the stack buffer."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 7)).astype(np.float32)
    y = rng.integers(0, 3, 300).astype(np.int32)
    for _ in range(2):
        assert a.train_step(x, y) == b.train_step(x, y)


def _same(a, b) -> None:
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k], err_msg=k)


MEMORY_BOUND = [
    gc.SGD(lr=0.1),
    gc.SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
    gc.SGD(lr=0.05, momentum=0.9, nesterov=True, dampening=0.0),
]
DIVIDER = [
    gc.Adam(lr=0.05, weight_decay=0.01),
    gc.AdamW(lr=0.05, amsgrad=True),
    gc.RMSprop(lr=0.01, centered=True, momentum=0.5),
    gc.Adagrad(lr=0.1, initial_accumulator_value=0.5),
    gc.Adadelta(rho=0.5, eps=1e-3),
]


@pytest.mark.parametrize("opt", MEMORY_BOUND, ids=["sgd", "momentum_wd", "nesterov"])
def test_update_in_epilogue_is_bit_identical_to_the_flat_loop(opt) -> None:
    a, b = _model(opt), _model(opt, OFF)
    assert _fused_params(a) == ["l1.w", "l2.w"]
    assert _fused_params(b) == []
    notes = a.program.schedules["train_step"].update_notes
    assert notes["l1.w"].startswith("in the epilogue of the GEMM")
    assert "not a GEMM" in notes["l1.b"]  # a bias gradient is a column sum
    start = {k: v.copy() for k, v in a.params.items()}
    _steps(a, b)
    _same(a, b)
    _steps_past_one_k_block(a, b)
    _same(a, b)
    assert max(np.abs(a.params[k] - start[k]).max() for k in start) > 1e-3


@pytest.mark.parametrize("opt", DIVIDER, ids=lambda o: type(o).__name__)
def test_divider_updates_stay_flat_by_default_and_fuse_exactly_when_asked(opt, monkeypatch) -> None:
    flat = _model(opt)
    assert _fused_params(flat) == []
    assert "divide unit" in flat.program.schedules["train_step"].update_notes["l1.w"]
    monkeypatch.setattr(fuse, "DIVIDER_UPDATES_IN_EPILOGUE", True)
    a = _model(opt)
    assert _fused_params(a) == ["l1.w", "l2.w"]
    _steps(a, flat)
    _same(a, flat)
    _steps_past_one_k_block(a, flat)
    _same(a, flat)


def test_fused_update_matches_the_float64_interpreter(monkeypatch) -> None:
    monkeypatch.setattr(fuse, "DIVIDER_UPDATES_IN_EPILOGUE", True)
    opt = gc.Adam(lr=0.05)
    m = _model(opt)
    g = m.program.training
    env = {"x": X.astype(np.float64), "y": Y, "lr": np.array(opt.lr)}
    env.update({k: v.astype(np.float64) for k, v in m.params.items()})
    env.update({k: np.array(v, dtype=np.float64) for k, v in m.state.items()})
    for _ in range(3):
        res = interpret(g, env)
        for target, _ in g.updates:
            env[target] = res[target + "'"]
        m.train_step(X, Y)
    for k in m.params:
        np.testing.assert_allclose(m.params[k], env[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert int(m.state["step"]) == 3


def test_two_threads_update_each_part_once() -> None:
    # dW1 [7, 300] x 16 rows is too small to split; [300, 200] with 64 rows is split
    x = gc.input("x", ("N", 300))
    y = gc.input("y", ("N",), dtype="i32")
    out = gc.dense(gc.dense(x, 200, "relu", name="a"), 3, name="b")
    models = [
        _classifier(out, y, gc.SGD(lr=0.05, momentum=0.9), "ue2", 4, dis) for dis in ((), (), OFF)
    ]
    models[0].threads, models[1].threads, models[2].threads = 2, 1, 1
    assert _fused_params(models[0]) == ["a.w", "b.w"]
    xs = RNG.standard_normal((64, 300)).astype(np.float32)
    ys = RNG.integers(0, 3, 64).astype(np.int32)
    for _ in range(2):
        losses = {m.train_step(xs, ys) for m in models}
        assert len(losses) == 1
    _same(models[0], models[2])
    _same(models[1], models[2])


def test_the_step_reads_old_weights_before_their_update() -> None:
    m = _model(gc.SGD(lr=0.1))
    sched = m.program.schedules["train_step"]
    g = sched.graph
    new_w2 = dict(g.updates)["l2.w"]
    upd = next(i for i, k in enumerate(sched.kernels) if new_w2 in k.stores)
    assert sched.kernels[upd].kind == "matmul"
    # the backward product dH = dY @ W2^T reads l2.w: it runs before W2's update
    readers = [
        i
        for i, k in enumerate(sched.kernels)
        if i != upd and any("l2.w" in g[n].inputs for n in k.nodes)
    ]
    assert readers and all(i < upd for i in readers)
    # a schedule that runs it after the update is refused by the scheduler's own check
    from graphc.ir.passes.schedule import _check_updates_in_place

    ks = list(sched.kernels)
    late = ks.pop(readers[-1])
    ks.insert(upd, late)
    with pytest.raises(VerifyError, match=r"reads l2\.w after kernel"):
        _check_updates_in_place(g, ks, sched.buffers)


def test_tied_weight_with_two_gradient_gemms_matches_the_flat_loop() -> None:
    x = gc.input("x", ("N", 7))
    y = gc.input("y", ("N",), dtype="i32")
    w = gc.param("w", (7, 7), init="glorot_uniform")
    h = gc.tanh(gc.matmul(x, w))
    z = gc.matmul(h, w)  # w read twice: its gradient is the sum of two products
    out = gc.dense(z, 3, name="o")
    a, b = (_classifier(out, y, gc.SGD(lr=0.05, momentum=0.5), "tied", 2, dis) for dis in ((), OFF))
    _steps(a, b)
    _same(a, b)


CLIPPED = """
graph clip(x: f32[N,4], d: f32[N,3], w: f32[4,3] param, lr: f32[]) {
 backward:
  %0 = matmul(x, d) {transpose_a=true} : f32[4,3]
  %1 = square(%0) : f32[4,3]
  %2 = sum(%1) : f32[]
 update:
  %3 = mul(%0, %2) : f32[4,3]
  %4 = mul(lr, %3) : f32[4,3]
  %5 = sub(w, %4) : f32[4,3]
  update w <- %5
}
"""


def test_an_update_needing_the_whole_gradient_first_stays_apart() -> None:
    g = run_pipeline(parse_graph(CLIPPED), 2).graph
    assert not any(n.group and n.section == "update" and n.op == "matmul" for n in g.nodes)
    mm = next(n for n in g.nodes if n.op == "matmul")
    assert not any(n.group == mm.group for n in g.nodes if n.section == "update") or not mm.group
    assert "whole gradient" in update_epilogues(g)[3]["w"]


def test_a_param_read_after_its_gradient_stays_apart() -> None:
    # %9 reads w and depends on the gradient (through its norm %2): w's update must wait
    text = CLIPPED.replace("  %1 = square(%0) : f32[4,3]\n", "").replace(
        "%2 = sum(%1) : f32[]",
        "%2 = sum(%0) : f32[]\n  %8 = mul(x, %2) : f32[N,4]\n  %9 = matmul(%8, w) : f32[N,3]",
    )
    text = text.replace("%3 = mul(%0, %2) : f32[4,3]", "%3 = mul(%0, lr) : f32[4,3]")
    text = text.replace("update w <- %5", "update w <- %5\n  return %9")
    g = run_pipeline(parse_graph(text), 2).graph
    note = update_epilogues(g)[3]["w"]
    assert "reads w after its gradient's GEMM" in note, note
    assert not any(n.op == "matmul" and n.group for n in g.nodes if n.name == "%0")
