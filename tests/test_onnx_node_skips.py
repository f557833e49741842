"""Cases ONNX's node tests used to skip, as real exporters' files meet them: MatMul of two 1-D
values (a rank-0 dot product), compared with ONNX Runtime and with the node test cases' own
expected outputs (graphc.onnx_backend.run_case)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ort_run

import graphc as gc
from graphc.ir.errors import OnnxError
from graphc.onnx_backend import all_node_cases, run_case

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 17):
    g = helper.make_graph(nodes, "skips", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _cases(*names: str) -> list:
    found = {c.name: c for c in all_node_cases() if c.name in names}
    return [found[n] for n in names if n in found]


def test_matmul_of_two_vectors_is_their_dot_product() -> None:
    """MatMul of two 1-D values of the same length K: their dot product, a rank-0 value
    (numpy.matmul's rule), here of two weights scaling a batch; ONNX Runtime's numbers, and
    the node test test_matmul_1d_1d passes compiled."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    m = _model(
        [
            helper.make_node("Mul", ["u", "two"], ["u2"]),
            helper.make_node("MatMul", ["u2", "v"], ["d"]),
            helper.make_node("Mul", ["x", "d"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, ["N", 5])],
        [helper.make_tensor_value_info("y", F, ["N", 5])],
        [
            numpy_helper.from_array(u, "u"),
            numpy_helper.from_array(v, "v"),
            numpy_helper.from_array(np.float32(2.0), "two"),
        ],
    )
    model = gc.from_onnx(m).compile()
    x = rng.standard_normal((3, 5)).astype(np.float32)
    (want,) = ort_run(m, {"x": x})
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-6)
    (case,) = _cases("test_matmul_1d_1d")
    assert run_case(case, "compile") == ("pass", "")


def test_matmul_of_two_batch_vectors_is_refused() -> None:
    """[N] with [N] would sum across the samples of a batch: refused, naming the node."""
    m = _model(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="dot")],
        [helper.make_tensor_value_info(k, F, ["N"]) for k in ("a", "b")],
        [helper.make_tensor_value_info("c", F, [])],
    )
    with pytest.raises(OnnxError, match=r"dot.*across samples"):
        gc.from_onnx(m)


def test_outputs_all_known_at_import_are_returned_as_onnxruntime_does() -> None:
    """A graph whose every output is known at import (the Shape of a batched input, a
    ConstantOfShape, a Size): predict returns ONNX Runtime's values and dtypes, once per call
    (not repeated per row), N given the input's rows; the input's shape is checked; training
    and export are refused by name."""
    i64 = TensorProto.INT64
    m = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Size", ["x"], ["n"]),
            helper.make_node(
                "ConstantOfShape",
                ["dims"],
                ["c"],
                value=numpy_helper.from_array(np.array([7], np.int32), "v"),
            ),
        ],
        [helper.make_tensor_value_info("x", F, ["N", 3])],
        [
            helper.make_tensor_value_info("s", i64, [2]),
            helper.make_tensor_value_info("c", TensorProto.INT32, [2, 4]),
            helper.make_tensor_value_info("n", i64, []),
        ],
        [numpy_helper.from_array(np.array([2, 4], np.int64), "dims")],
    )
    model = gc.from_onnx(m).compile()
    for rows in (1, 5):
        x = np.zeros((rows, 3), np.float32)
        want = ort_run(m, {"x": x})
        got = model.predict(x)
        assert list(got) == ["s", "c", "n"]
        for g, w in zip(got.values(), want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    with pytest.raises(gc.ArgumentError, match=r"input 'x' expects"):
        model.predict(np.zeros((2, 4), np.float32))
    with pytest.raises(gc.GraphcError, match=r"every output is known at import.*'fit'"):
        model.fit(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))


def test_graph_without_inputs_returns_its_constants() -> None:
    """A Constant as the only node and output (no graph input): predict() gives ONNX
    Runtime's value; the node tests of Constant, ConstantOfShape, Shape and Size pass
    compiled."""
    value = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    m = _model(
        [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(value, "k"))],
        [],
        [helper.make_tensor_value_info("k", F, [2, 3])],
    )
    (want,) = ort_run(m, {})
    got = gc.from_onnx(m).compile().predict()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    names = ("test_constant", "test_constantofshape_int_zeros", "test_shape_start_1", "test_size")
    cases = _cases(*names)
    assert len(cases) == len(names)
    for case in cases:
        assert run_case(case, "compile") == ("pass", ""), case.name


def test_empty_inputs_are_known_and_their_reductions_fold() -> None:
    """An input declared with a fixed dimension of size 0 holds no values: known at import
    (predict does not take it), so the reductions over it fold to each reduction's identity
    (sum 0, max -inf, an int64 min the type's greatest, L2 0, log-sum-exp -inf), as ONNX
    Runtime computes them; the node tests' empty-set reductions, Split's zero-size pieces and
    Reshape's allowzero pass compiled."""
    i64 = TensorProto.INT64
    axes = {f"a{k}": np.array(v, np.int64) for k, v in enumerate(([0, 1], [1]))}
    m = _model(
        [
            helper.make_node("ReduceSum", ["e", "a0"], ["s"], keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"]),
            helper.make_node("ReduceMax", ["e", "a1"], ["mx"]),
            helper.make_node("ReduceL2", ["e", "a1"], ["l2"], keepdims=0),
            helper.make_node("ReduceLogSumExp", ["e", "a1"], ["lse"], keepdims=0),
            helper.make_node("ReduceMin", ["k", "a1"], ["mn"]),
        ],
        [
            helper.make_tensor_value_info("x", F, ["N", 4]),
            helper.make_tensor_value_info("e", F, [2, 0, 4]),
            helper.make_tensor_value_info("k", i64, [3, 0]),
        ],
        [
            helper.make_tensor_value_info("y", F, ["N", 4]),
            helper.make_tensor_value_info("mx", F, [2, 1, 4]),
            helper.make_tensor_value_info("l2", F, [2, 4]),
            helper.make_tensor_value_info("lse", F, [2, 4]),
            helper.make_tensor_value_info("mn", i64, [3, 1]),
        ],
        [numpy_helper.from_array(v, k) for k, v in axes.items()],
        opset=18,
    )
    model = gc.from_onnx(m).compile()
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    feeds = {"x": x, "e": np.zeros((2, 0, 4), np.float32), "k": np.zeros((3, 0), np.int64)}
    want = ort_run(m, feeds)
    got = model.predict(x)
    assert list(got) == ["y", "mx", "l2", "lse", "mn"]
    for g, w in zip(got.values(), want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    names = (
        "test_reduce_sum_empty_set",
        "test_reduce_max_empty_set",
        "test_reduce_l2_empty_set",
        "test_reduce_log_sum_exp_empty_set",
        "test_reduce_min_empty_set",
        "test_split_zero_size_splits_opset18",
        "test_reshape_allowzero_reordered",
    )
    cases = _cases(*names)
    assert len(cases) == len(names)
    for case in cases:
        assert run_case(case, "compile") == ("pass", ""), case.name


def test_empty_slice_of_a_fixed_value_is_known() -> None:
    """A Slice past the end of a fixed-shape computed value (numpy's bounds) is empty: known
    at import, returned beside the computed outputs with ONNX Runtime's shape; the node test
    test_slice_start_out_of_bounds passes compiled. An empty slice of a value holding N stays
    refused."""
    ints = {k: np.array(v, np.int64) for k, v in (("st", [7]), ("en", [9]), ("ax", [1]))}
    m = _model(
        [
            helper.make_node("Relu", ["x"], ["y"]),
            helper.make_node("Relu", ["f"], ["g"]),
            helper.make_node("Slice", ["g", "st", "en", "ax"], ["z"]),
        ],
        [
            helper.make_tensor_value_info("x", F, ["N", 4]),
            helper.make_tensor_value_info("f", F, [3, 5]),
        ],
        [
            helper.make_tensor_value_info("y", F, ["N", 4]),
            helper.make_tensor_value_info("z", F, None),
        ],
        [numpy_helper.from_array(v, k) for k, v in ints.items()],
    )
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    want = ort_run(m, {"x": x, "f": np.ones((3, 5), np.float32)})
    got = gc.from_onnx(m).compile().predict({"x": x})
    for g, w in zip(got.values(), want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    (case,) = _cases("test_slice_start_out_of_bounds")
    assert run_case(case, "compile") == ("pass", "")
    bad = _model(
        [helper.make_node("Slice", ["x", "st", "en", "ax"], ["z"])],
        [helper.make_tensor_value_info("x", F, ["N", 4])],
        [helper.make_tensor_value_info("z", F, None)],
        [numpy_helper.from_array(v, k) for k, v in ints.items()],
    )
    with pytest.raises(OnnxError, match="is empty"):
        gc.from_onnx(bad)


def test_uint16_node_cases_bind_their_integer_inputs() -> None:
    """uint16 inputs are integer inputs for run_case as the other integer types: where the
    fed run is refused (a uint16 x - y, whose checked range graphc narrows to keep the result
    in 0 .. 65535: x to 0 .. 0, so the case's x = 19 is refused naming the input), they are
    bound as constants and the node folds; before, test_sub_uint16 failed compiled."""
    (case,) = _cases("test_sub_uint16")
    assert run_case(case, "compile") == ("pass", "")
