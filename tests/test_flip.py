"""Op ``reverse`` (``gc.flip``; ONNX's Slice with a negative step, torch's flip): values, VJP,
ONNX import of long flips and export, against numpy and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.dsl import collect_graph


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize("axes", [1, (2,), (1, 2), (-1, 1)])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_flip_moves_every_value_unchanged(axes, dtype) -> None:
    """np.flip's values bit for bit, NaN, infinities and -0.0 included."""
    x = gc.input("x", ("N", 3, 5), dtype=dtype)
    m = gc.compile(gc.flip(x, axes), name=f"flip{dtype}")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 3, 5)).astype(np.float32 if dtype == "f32" else np.float64)
    xs[0, 0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    got = m.predict(xs)
    want = np.flip(xs, axes).copy()
    assert got.tobytes() == want.tobytes()


def test_flip_gradient_matches_central_differences() -> None:
    """d loss / d w through a flip of w * x along two axes, loss = mean((flip(w x) - t)^2),
    against float64 central differences of the same formula in numpy."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    t = gc.input("t", ("N", 3, 4), dtype="f64")
    w = gc.param("w", (3, 4), init="ones", dtype="f64")
    y = gc.flip(x * w, (1, 2))
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(lr=0.1), name="flipgrad")
    rng = np.random.default_rng(1)
    xs, ts = rng.standard_normal((5, 3, 4)), rng.standard_normal((5, 3, 4))
    w0 = rng.standard_normal((3, 4))
    m.set_weights({"w": w0})

    def loss(wv: np.ndarray) -> float:
        return float(np.mean((np.flip(xs * wv, (1, 2)) - ts) ** 2))

    num = np.zeros_like(w0)
    for i in np.ndindex(w0.shape):
        e = np.zeros_like(w0)
        e[i] = 1e-6
        num[i] = (loss(w0 + e) - loss(w0 - e)) / 2e-6
    np.testing.assert_allclose(m.gradients(xs, ts)["w"], num, rtol=1e-7, atol=1e-9)


def test_flip_refuses_the_batch_axis() -> None:
    x = gc.input("x", ("N", 3))
    with pytest.raises(gc.ShapeError, match="batch axis"):
        gc.flip(x, 0)


def _slice_model(length: int, starts, ends, steps):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, length])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    vals = {"s": starts, "e": ends, "a": [2], "st": steps}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in vals.items()]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="flip")
    graph = helper.make_graph([node], "g", [x], [y], inits)
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("starts", "ends", "steps"),
    [([-1], [-(2**63)], [-1]), ([700], [3], [-1]), ([-2], [-(2**63)], [-3]), ([999], [0], [-2])],
)
def test_onnx_slice_with_negative_steps_over_a_long_axis(starts, ends, steps) -> None:
    """torch.flip and x[..., ::-k] as both torch exporters write them (Slice, step < 0) over an
    axis of 1,000: one reverse, not a slice per element (a flip of 1,000 took a 56 s compile),
    and ONNX Runtime's values."""
    ort = pytest.importorskip("onnxruntime")
    _, model = _slice_model(1000, starts, ends, steps)
    imp = gc.from_onnx(model)
    ops = [n.op for n in collect_graph("flip", list(imp.outputs)).nodes]
    assert ops.count("reverse") == 1 and ops.count("slice") <= 3, ops  # not one per element
    compiled = imp.compile()
    xs = np.random.default_rng(2).standard_normal((3, 2, 1000)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs})[0]
    got = compiled.predict(xs)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_flip_exports_to_onnx_and_runs_in_onnx_runtime(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    x = gc.input("x", ("N", 3, 4))
    m = gc.compile(gc.flip(x, (2, 1)), name="flipout")
    path = m.to_onnx(str(tmp_path / "flip.onnx"))
    xs = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"x": xs})[0]
    assert got.tobytes() == np.flip(xs, (1, 2)).copy().tobytes()
