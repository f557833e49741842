"""ArgMax / ArgMin over rows holding NaN and infinities, as ONNX Runtime computes
them: it walks the axis comparing each element with the best so far, so a NaN is never the
best unless it comes first (graphc picked the first NaN, as numpy does). Every layout,
select_last_index and keepdims against ONNX Runtime, and scikit-learn's KBinsDiscretizer on a
row with inf (its graph's ArgMax meets NaN)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ort_run

import graphc as gc

NAN, INF = np.nan, np.inf
ROWS = np.array(
    [
        [NAN, 1, 3, 2],
        [1, NAN, 3, 3],
        [1, 5, NAN, 2],
        [NAN, NAN, NAN, NAN],
        [1, 2, 3, NAN],
        [INF, NAN, INF, 1],
        [-INF, -INF, NAN, -INF],
        [3, 3, 1, 3],
        [NAN, 5, NAN, 5],
        [2, NAN, -1, NAN],
        [-INF, NAN, NAN, NAN],
        [0, -0.0, NAN, 0],
    ],
    np.float32,
)


def _model(op: str, shape: list, **attrs) -> onnx.ModelProto:
    out = TensorProto.INT64 if op.startswith("Arg") else TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", out, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _random_rows(shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float32)  # ties
    x[rng.random(shape) < 0.25] = NAN
    x[rng.random(shape) < 0.05] = INF
    x[rng.random(shape) < 0.05] = -INF
    return x


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes_with_nan_match_onnxruntime(op: str, last: int) -> None:
    cases = [
        (ROWS, 1),
        (_random_rows((40, 7), 1), 1),
        (_random_rows((6, 9, 3), 2), 1),  # a middle axis
        (_random_rows((6, 3, 9), 3), -1),
    ]
    for x, axis in cases:
        for keep in (0, 1):
            m = _model(op, ["N", *x.shape[1:]], axis=axis, keepdims=keep, select_last_index=last)
            (want,) = ort_run(m, {"x": x})
            got = gc.from_onnx(m).compile().predict(x)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want, err_msg=f"{x.shape} axis {axis}")


def test_kbins_discretizer_on_a_row_with_inf_matches_onnxruntime() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.preprocessing import KBinsDiscretizer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = KBinsDiscretizer(n_bins=4, encode="ordinal", strategy="uniform").fit(x)
    m = to_onnx(est, x[:1])
    rows = x[:6].copy()
    rows[1, 2] = INF
    rows[3, 0] = -INF
    rows[4, :] = INF
    (want,) = ort_run(m, {m.graph.input[0].name: rows})
    got = gc.from_onnx(m).compile().predict(rows)
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)
