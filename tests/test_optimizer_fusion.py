"""fuse_optimizer: the updates of all params that share an update rule run as one flat loop.

The layout puts each gradient at grad_base + offset(param) and each optimizer slot kind in a
state sub-region laid out like the param region (graphc.compiler.make_layout, schedule), so
one loop over param_bytes / itemsize elements updates every param and its slots. References:
the same model at -O0 (one kernel per update, no fusion) and the float64 interpreter running
the training graph's own update nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir.interpret import interpret
from graphc.ir.passes.pipeline import PASS_NAMES

RNG = np.random.default_rng(3)
X = RNG.standard_normal((16, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 16).astype(np.int32)
STEPS = 4


def _model(opt, opt_level: int = 2, **kw):
    x = gc.input("x", ("N", 6))
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dense(x, 5, "tanh", name="l1")
    out = gc.dense(h, 3, name="l2")
    return gc.compile(
        out,
        loss=gc.softmax_cross_entropy(out, y),
        optimizer=opt,
        name="of",
        opt_level=opt_level,
        seed=1,
        **kw,
    )


def _update_kernels(model) -> list:
    sched = model.program.schedules["train_step"]
    g = sched.graph
    return [
        k
        for k in sched.kernels
        if k.kind == "elementwise"
        and any(g[n].section == "update" and g[n].type.shape for n in k.nodes)
    ]


def _interpreted(model, opt, steps: int) -> dict[str, np.ndarray]:
    g = model.program.training
    env = {"x": X.astype(np.float64), "y": Y, "lr": np.array(opt.lr)}
    env.update({k: v.astype(np.float64) for k, v in model.params.items()})
    env.update({k: np.array(v, dtype=np.float64) for k, v in model.state.items()})
    for _ in range(steps):
        res = interpret(g, env)
        for target, _ in g.updates:
            env[target] = res[target + "'"]
    return {k: env[k] for k in model.params}


OPTS = [
    gc.SGD(lr=0.1),
    gc.SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
    gc.Adam(lr=0.05),
    gc.AdamW(lr=0.05, amsgrad=True),
    gc.Adagrad(lr=0.1, initial_accumulator_value=0.5),
    gc.RMSprop(lr=0.01, centered=True, momentum=0.5),
    gc.Adadelta(rho=0.5, eps=1e-3),
]


def test_pass_is_named_and_in_the_pipeline() -> None:
    assert "fuse_optimizer" in PASS_NAMES


@pytest.mark.parametrize("opt", OPTS, ids=[f"{type(o).__name__}{i}" for i, o in enumerate(OPTS)])
def test_flat_update_matches_O0_and_interpreter(opt) -> None:
    # the flat loop itself: SGD's updates would otherwise run in the GEMMs' epilogues
    # (tests/test_update_epilogue.py)
    m2, m0 = _model(opt, 2, disabled_passes=("fuse_update_epilogue",)), _model(opt, 0)
    ks = _update_kernels(m2)
    assert len(ks) == 1 and ks[0].elements > 0, [k.name for k in ks]
    assert len(_update_kernels(m0)) > 1
    want = _interpreted(m2, opt, STEPS)
    moved = max(np.abs(want[k] - m0.params[k]).max() for k in want)  # before the steps
    for _ in range(STEPS):
        m2.train_step(X, Y)
        m0.train_step(X, Y)
    for k in want:
        np.testing.assert_allclose(m2.params[k], m0.params[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(m2.params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
        assert np.all(np.isfinite(m2.params[k]))
    for k in m2.state:
        np.testing.assert_allclose(m2.state[k], m0.state[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the padding between params stays zero in every region
    used = np.zeros(m2.program.param_bytes, bool)
    for k, v in m2.params.items():
        off = m2.program.layout[k].offset
        used[off : off + v.nbytes] = True
    assert not np.any(m2._param_region[~used]), "padding of the param region was written"
    used = np.zeros(m2.program.state_bytes, bool)
    for k, v in m2.state.items():
        off = m2.program.layout[k].offset
        used[off : off + v.nbytes] = True
    assert not np.any(m2._state_region[~used]), "padding of the state region was written"
    assert moved > 1e-4, "the steps must actually move the parameters"


def _digits_program(**kw):
    from graphc.compiler import build_graphs, schedule_program

    x = gc.input("x", ("N", 64))
    y = gc.input("y", ("N",), dtype="i32")
    out = gc.dense(gc.dense(x, 32, "relu", name="fc1"), 10, name="fc2")
    prog = build_graphs("digits", [out], gc.softmax_cross_entropy(out, y), gc.Adam(1e-3))
    return schedule_program(prog, opt_level=2, **kw)


def test_digits_has_one_update_kernel() -> None:
    prog = _digits_program()
    sched = prog.schedules["train_step"]
    flat = [k for k in sched.kernels if k.elements]
    last = prog.layout["fc2.b"]
    assert len(flat) == 1 and flat[0].elements == (last.offset + last.size) // 4
    # 7 forward and backward kernels, one scalar kernel (the i64 step increment, Adam's two bias
    # corrections from it and the factors made of them: values of two dtypes in one kernel), the
    # update
    assert len(sched.kernels) == 9
    ops = {k.name: sorted(sched.graph[v].op for v in k.nodes) for k in sched.kernels}
    scalar = [k for k in sched.kernels if "increment" in ops[k.name]]
    assert len(scalar) == 1
    assert ops[scalar[0].name].count("one_minus_pow") == 2  # and the divisions by them
    assert all(sched.graph[v].type.shape == () for v in scalar[0].nodes)
    assert not any("one_minus_pow" in ops[k.name] for k in sched.kernels if k is not scalar[0])
    assert any(v.startswith("one loop") for v in sched.flat_notes.values())
    off = _digits_program(disabled_passes=("fuse_optimizer",)).schedules["train_step"]
    assert len(off.kernels) == 12 and not any(k.elements for k in off.kernels)


def test_layout_follows_the_param_region() -> None:
    prog = _digits_program()
    sched = prog.schedules["train_step"]
    lay = prog.layout
    base_m = lay["fc1.w.exp_avg"].offset - lay["fc1.w"].offset
    base_v = lay["fc1.w.exp_avg_sq"].offset - lay["fc1.w"].offset
    for p, gv in prog.grads.items():
        assert sched.buffers[gv].region == "grad" and sched.buffers[gv].offset == lay[p].offset
        assert lay[f"{p}.exp_avg"].offset == base_m + lay[p].offset
        assert lay[f"{p}.exp_avg_sq"].offset == base_v + lay[p].offset


def test_gradients_outside_the_grad_region_fall_back() -> None:
    from graphc.ir.passes.schedule import schedule

    prog = _digits_program()
    g = prog.optimized["train_step"].graph
    sched = schedule(g, prog.layout, {})  # gradients planned in the arena, not the grad region
    assert not any(k.elements for k in sched.kernels)
    assert len(sched.kernels) == 12
    assert all(v.startswith("not flat") for v in sched.flat_notes.values()) and sched.flat_notes


def test_f64_params_fuse_and_match_O0() -> None:
    x = gc.input("x", ("N", 4), dtype="f64")
    t = gc.input("t", ("N", 2), dtype="f64")
    out = gc.dense(gc.dense(x, 3, "tanh", name="a"), 2, name="b")
    opt = gc.Adam(lr=0.05)
    m2 = gc.compile(out, loss=gc.mean_squared_error(out, t), optimizer=opt, name="mx", seed=2)
    m0 = gc.compile(
        out, loss=gc.mean_squared_error(out, t), optimizer=opt, name="mx", seed=2, opt_level=0
    )
    assert [k.elements > 0 for k in _update_kernels(m2)] == [True]
    xs = RNG.standard_normal((8, 4))
    ts = RNG.standard_normal((8, 2))
    for _ in range(3):
        m2.train_step(xs, ts)
        m0.train_step(xs, ts)
    for k in m2.params:
        np.testing.assert_allclose(m2.params[k], m0.params[k], rtol=1e-9, atol=1e-12)
