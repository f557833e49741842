"""conv, conv_transpose, conv_filter_grad (ir/ops/conv.py, codegen/conv.py): compiled forward
against a brute-force float64 sum written from the formula and against the registry's numpy
reference; gradients in float64 against central finite differences; shape errors.

Each table is one compiled model (every case an output), so the grid costs a few compiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc
from graphc.dsl import apply
from graphc.ir.errors import ShapeError
from graphc.ir.ops import OPS

# (x shape without N, filter shape, attrs)
FORWARD = [
    ((3, 9, 8), (4, 3, 3, 2), {"strides": (2, 1), "pads": (1, 0, 2, 1), "dilations": (1, 2)}),
    ((2, 7, 7), (5, 2, 3, 3), {}),
    ((4, 6, 5), (4, 1, 3, 3), {"groups": 4, "pads": (1, 1, 1, 1)}),  # depthwise
    ((6, 5, 6), (4, 3, 2, 3), {"groups": 2, "strides": (2, 3), "pads": (0, 1, 1, 0)}),
    ((3, 11), (2, 3, 4), {"strides": (3,), "dilations": (2,), "pads": (2, 3)}),  # 1-D
    ((2, 17), (4, 1, 5), {"groups": 2, "pads": (4, 0)}),  # 1-D, 2 filters per channel
    ((2, 4, 5, 3), (3, 2, 2, 3, 2), {"strides": (1, 2, 1), "pads": (1, 0, 1, 0, 1, 1)}),  # 3-D
    ((1, 1, 1), (2, 1, 1, 1), {}),  # 1x1
    ((3, 5, 5), (2, 3, 5, 5), {}),  # window = input: 1x1 output
    ((2, 3, 4), (3, 2, 3, 3), {"pads": (2, 2, 2, 2), "dilations": (2, 1)}),  # mostly padding
]


def brute_conv(x, w, strides=None, dilations=None, pads=None, groups=1):
    """y[n, co, o] = sum x[n, c, o*s + k*d - p] w[co, ci, k], element by element (float64)."""
    r = x.ndim - 2
    s = strides or (1,) * r
    d = dilations or (1,) * r
    p = pads or (0,) * (2 * r)
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    out = [
        (x.shape[2 + a] + p[a] + p[r + a] - (w.shape[2 + a] - 1) * d[a] - 1) // s[a] + 1
        for a in range(r)
    ]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for n, co in itertools.product(range(x.shape[0]), range(w.shape[0])):
        grp = co // og
        for o in itertools.product(*(range(v) for v in out)):
            acc = 0.0
            for ci in range(cg):
                for k in itertools.product(*(range(v) for v in w.shape[2:])):
                    i = [o[a] * s[a] + k[a] * d[a] - p[a] for a in range(r)]
                    if all(0 <= i[a] < x.shape[2 + a] for a in range(r)):
                        acc += x[(n, grp * cg + ci, *i)] * w[(co, ci, *k)]
            y[(n, co, *o)] = acc
    return y


@pytest.fixture(scope="module")
def forward_model():
    outs, ws = [], {}
    for c, (xs, wsh, attrs) in enumerate(FORWARD):
        x = gc.input(f"x{c}", ("N", *xs))
        w = gc.param(f"w{c}", wsh)
        outs.append(apply("conv", x, w, **attrs))
    m = gc.compile(outs, name="convs")
    rng = np.random.default_rng(0)
    for c, (_, wsh, _) in enumerate(FORWARD):
        ws[f"w{c}"] = rng.standard_normal(wsh).astype(np.float32)
    m.set_weights(ws)
    return m, ws


@pytest.mark.parametrize("batch", [1, 3])
def test_conv_forward_matches_brute_force_and_reference(forward_model, batch) -> None:
    m, ws = forward_model
    rng = np.random.default_rng(batch)
    feeds = {
        f"x{c}": rng.standard_normal((batch, *xs)).astype(np.float32)
        for c, (xs, _, _) in enumerate(FORWARD)
    }
    got = m.predict(feeds)
    outs = list(got.values()) if isinstance(got, dict) else got
    for c, (_, _, attrs) in enumerate(FORWARD):
        x64 = feeds[f"x{c}"].astype(np.float64)
        w64 = ws[f"w{c}"].astype(np.float64)
        want = brute_conv(x64, w64, **attrs)
        np.testing.assert_allclose(OPS["conv"].evaluate(x64, w64, **attrs), want, atol=1e-12)
        np.testing.assert_allclose(outs[c], want, rtol=1e-5, atol=1e-5, err_msg=str(FORWARD[c]))


# (op, operand shapes, attrs): every op of the family, data and filter gradients
GRADS = [
    ("conv", [(2, 3, 6, 5), (4, 3, 3, 2)], {"strides": (2, 1), "pads": (1, 0, 1, 1)}),
    ("conv", [(2, 4, 5, 5), (4, 2, 2, 2)], {"groups": 2, "dilations": (2, 1)}),
    ("conv", [(1, 2, 9), (3, 2, 3)], {"strides": (2,), "pads": (1, 2)}),
    ("conv", [(1, 2, 3, 4, 3), (2, 2, 2, 2, 2)], {"pads": (0, 1, 0, 1, 0, 1)}),
    ("conv_transpose", [(2, 3, 3, 4), (3, 2, 3, 2)], {"strides": (2, 1), "pads": (1, 0, 0, 1)}),
    (
        "conv_transpose",
        [(1, 4, 3), (4, 1, 3)],
        {"strides": (2,), "output_padding": (1,), "groups": 2},
    ),
    (
        "conv_filter_grad",
        [(2, 3, 3, 5), (2, 2, 6, 5)],
        {"strides": (2, 1), "kernel_shape": (2, 3), "pads": (0, 1, 1, 1)},
    ),
]


def test_gradients_match_finite_differences() -> None:
    """float64: one SGD step with lr=1 moves each operand by exactly its gradient of
    sum(u * op(a, b))."""
    rng = np.random.default_rng(5)
    terms, data, us = [], {}, {}
    for c, (op, shapes, attrs) in enumerate(GRADS):
        ps = [gc.param(f"c{c}p{k}", s, init="zeros", dtype="f64") for k, s in enumerate(shapes)]
        y = apply(op, *ps, **attrs)
        u = gc.input(f"u{c}", y.shape, dtype="f64")
        terms.append(gc.sum(u * y))
        for k, s in enumerate(shapes):
            data[f"c{c}p{k}"] = rng.standard_normal(s)
        us[f"u{c}"] = rng.standard_normal(y.shape)
    loss = terms[0]
    for t in terms[1:]:
        loss = loss + t
    m = gc.compile(loss, loss, gc.SGD(lr=1.0), name="conv_grads")
    m.set_weights(data)
    e = m.entries["train_step"]
    arrays = [
        np.array(m.lr if n == "lr" else us[n], dtype=t.np_dtype)
        for n, t in zip(e.sched.input_slots, e.in_types)
    ]
    e(arrays, 1)
    for c, (op, shapes, attrs) in enumerate(GRADS):
        xs = [data[f"c{c}p{k}"] for k in range(len(shapes))]
        u = us[f"u{c}"]

        def f(*a, u=u, op=op, attrs=attrs):
            return float(np.sum(u * OPS[op].evaluate(*a, **attrs)))

        for k in range(len(shapes)):
            got = xs[k] - m.params[f"c{c}p{k}"]
            want = numeric_grad(f, xs, k)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=f"{op} {k}")


@pytest.mark.parametrize(
    "xs, ws, attrs, words",
    [
        ((3, 8, 8), (4, 2, 3, 3), {}, "has 3 channels"),
        ((4, 8, 8), (6, 2, 3, 3), {"groups": 3}, "groups=3 must divide"),
        ((2, 4, 4), (3, 2, 5, 5), {}, "larger than the padded input"),
        ((2, 4, 4), (3, 2, 3, 3), {"strides": (1,)}, "strides has 1 entries"),
        ((2, 4, 4), (3, 2, 3, 3), {"pads": (1, 1, -1, 0)}, "pads must hold ints >= 0"),
        ((2, 4), (3, 2, 3, 3), {}, "filters must be"),
        ((2, 4, 4), (3, 2, 3, 3), {"dilations": (0, 1)}, "dilations must hold ints >= 1"),
    ],
)
def test_shape_errors_name_the_node_and_shapes(xs, ws, attrs, words) -> None:
    x = gc.input("img", ("N", *xs))
    w = gc.param("filt", ws)
    with pytest.raises(ShapeError, match=words) as e:
        apply("conv", x, w, name="c1", **attrs)
    msg = str(e.value)
    assert "c1 = conv(img, filt)" in msg and f"img : f32[N,{','.join(map(str, xs))}]" in msg


def test_threads_give_the_same_bits() -> None:
    """The gather kernels split samples (conv, conv_transpose) and filter blocks
    (conv_filter_grad) among threads: 1 and 2 threads give identical outputs and gradients."""
    res = []
    rng = np.random.default_rng(4)
    xv = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    for threads in (1, 2):
        x = gc.input("x", ("N", 3, 9, 8))
        w1 = gc.param("w1", (16, 3, 3, 3), init="glorot_uniform")
        w2 = gc.param("w2", (16, 4, 2, 3), init="glorot_uniform")
        h = gc.tanh(apply("conv", x, w1, pads=(1, 1, 1, 1)))
        y = apply(
            "conv_transpose",
            apply("conv", h, w2, groups=4, strides=(2, 1)),
            w2,
            groups=4,
            strides=(2, 1),
            output_padding=(1, 0),
        )
        m = gc.compile(y, gc.mean(y * y), gc.SGD(lr=0.1), threads=threads, seed=1)
        res.append((m.predict(xv), m.gradients(xv)))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    for k in res[0][1]:
        np.testing.assert_array_equal(res[0][1][k], res[1][1][k], err_msg=k)
