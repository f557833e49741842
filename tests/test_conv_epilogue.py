"""fuse_conv: a conv / conv_transpose applies its bias add, activation and other pointwise
nodes with scalar or per-channel operands before its store (ir/passes/fuse.py, codegen/conv.py).
Each case is compiled with and without the pass: the kernels show the fusion, and outputs and
parameter gradients are bit for bit those of the unfused graph (the same float operations on
the same values, in the same order). The cases cover both kernels (gathering: stride 1 along
the last axis; the plain loop nest: a stride there), grouped and 1-D/3-D convs, residual
blocks (a skip connection of the output's shape), and chains that must stop (an
intermediate that is a graph output). ~3 s."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.dsl import apply


def _cases():
    x2 = gc.input("x2", ("N", 4, 7, 9))
    x1 = gc.input("x1", ("N", 3, 11))
    x3 = gc.input("x3", ("N", 2, 4, 5, 6))
    s = gc.param("s", (6, 1, 1), init="ones")  # a per-channel scale after the activation
    outs = [
        gc.conv2d(x2, 6, 3, padding="same", activation="relu", name="c0") * s + 0.5,
        gc.conv2d(x2, 6, (2, 3), strides=(1, 2), activation="tanh", name="c1"),  # plain path
        gc.conv1d(x1, 4, 3, groups=1, dilation=2, activation="gelu", name="c2"),
        gc.conv(x3, 4, 2, groups=2, activation="sigmoid", name="c3"),
        gc.conv2d(x2, 8, 3, groups=4, activation="elu", name="c4"),
    ]
    # residual blocks: the skip connection read at the output's own index (both kernels)
    outs.append(gc.relu(gc.conv2d(x2, 4, 3, padding="same", name="c5") + x2))
    p = gc.conv2d(x2, 6, (2, 3), strides=(1, 2), name="c6")
    outs.append(gc.tanh(p + gc.conv2d(x2, 6, (2, 3), strides=(1, 2), use_bias=False, name="c7")))
    wt = gc.param("wt", (4, 3, 3, 2), init="glorot_uniform")
    bt = gc.param("bt", (3,), init="glorot_uniform")
    for st in ((1, 1), (2, 2)):  # conv_transpose: gathering, then the plain loop nest
        y = apply("conv_transpose", x2, wt, strides=st)
        outs.append(gc.leaky_relu(y + gc.reshape(bt, (3, 1, 1))))
    return outs


def _run(disabled: tuple[str, ...]):
    outs = _cases()
    loss = gc.mean(outs[0] * outs[0])
    for o in outs[1:]:
        loss = loss + gc.mean(o * o)
    m = gc.compile(outs, loss, gc.SGD(lr=0.1), seed=2, disabled_passes=disabled, name="cep")
    rng = np.random.default_rng(0)
    feeds = {
        "x2": rng.standard_normal((3, 4, 7, 9)).astype(np.float32),
        "x1": rng.standard_normal((3, 3, 11)).astype(np.float32),
        "x3": rng.standard_normal((3, 2, 4, 5, 6)).astype(np.float32),
    }
    fused = [
        len(k.nodes) for k in m.program.schedules["infer"].kernels if k.kind == "conv"
    ]  # nodes per conv kernel
    return list(m.predict(feeds).values()), m.gradients(feeds), fused


def test_conv_epilogue_equals_the_unfused_graph_bit_for_bit() -> None:
    got, grads, fused = _run(())
    want, want_grads, unfused = _run(("fuse_conv",))
    assert unfused == [1] * 10
    # conv + bias add + activation in one kernel; case 0 also takes the scale and the + 0.5,
    # the residual blocks the skip add (c7, the second one's skip, runs first, on its own)
    assert fused == [5, 3, 3, 3, 3, 4, 1, 4, 3, 3], fused
    assert len(got) == len(want) == 9
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=str(k))
    for k in want_grads:
        np.testing.assert_array_equal(grads[k], want_grads[k], err_msg=k)


def test_a_conv_output_read_elsewhere_ends_the_epilogue() -> None:
    x = gc.input("x", ("N", 2, 6, 6))
    pre = gc.conv2d(x, 3, 3, name="cv")  # conv + bias: also a graph output
    post = gc.relu(pre) * 2.0
    m = gc.compile([pre, post])
    kinds = [(k.kind, len(k.nodes)) for k in m.program.schedules["infer"].kernels]
    assert ("conv", 2) in kinds and ("elementwise", 2) in kinds, kinds
    xv = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    a, b = m.predict(xv).values()
    np.testing.assert_array_equal(b, np.maximum(a, 0) * np.float32(2.0))
