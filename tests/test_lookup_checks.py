"""Row indices of an embedding lookup (ONNX Gather of a weight by an integer input) are checked
by every entry before it runs: an index that is no row of the table (outside -V..V-1, not a
whole number, NaN) raises ArgumentError naming the input and the row, as ONNX Runtime and
torch raise, instead of a silent row of zeros; nothing is written."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest

import graphc as gc

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROWS = 10
W = np.random.default_rng(0).standard_normal((ROWS, 4)).astype(np.float32)


def _import():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])
    node = helper.make_node("Gather", ["W", "ids"], ["y"])
    g = helper.make_graph([node], "emb", [ids], [y], [numpy_helper.from_array(W, "W")])
    return gc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


BAD = [
    (np.array([[0, 10, 1], [1, 2, 3]]), 0, "10"),  # one past the last row
    (np.array([[0, 1, 1], [1, -11, 3]]), 1, "-11"),  # one before -V
    (np.array([[0, 1.5, 1]], np.float32), 0, "1.5"),  # not a whole number
    (np.array([[0, np.nan, 1]], np.float32), 0, "nan"),
    (
        np.array([[0, 1, 1], [2**40, 0, 0]]),
        1,
        "1099511627776",
    ),  # int64 beyond float32's whole numbers
]


@pytest.fixture(scope="module")
def model():
    return _import().compile()


def test_valid_indices_look_rows_up_negative_from_the_end(model) -> None:
    ok = np.array([[0, 9, -1], [3, -10, 5]])
    np.testing.assert_array_equal(model.predict(ok), W[ok])


@pytest.mark.parametrize("ids, row, shown", BAD)
def test_predict_refuses_an_index_that_is_no_row(model, ids, row, shown) -> None:
    with pytest.raises(
        gc.ArgumentError, match=rf"indices 'ids': row {row} holds {shown}.*-10\.\.9"
    ):
        model.predict(ids)


def test_predict_fast_path_checks_too(model) -> None:
    x = np.array([[0, 1, 2]], np.float32)
    np.testing.assert_array_equal(model.predict(x), W[[[0, 1, 2]]])
    x[0, 1] = 12.0  # the same layout again: the call goes straight to the native entry
    with pytest.raises(gc.ArgumentError, match=r"row 0 holds 12\.0"):
        model.predict(x)


def test_training_refuses_before_writing() -> None:
    imp = _import()
    target = gc.input("t", ("N", 3, 4))
    m = imp.compile(gc.mean_squared_error(imp.outputs[0], target), gc.SGD(lr=0.1))
    before = m.get_weights()
    ids, t = np.array([[0, 1, 2], [3, 10, 4]]), np.zeros((2, 3, 4), np.float32)
    with pytest.raises(gc.ArgumentError, match=r"indices 'ids': row 1 holds 10"):
        m.train_step({"ids": ids, "t": t})
    with pytest.raises(gc.ArgumentError, match=r"indices 'ids': row 1 holds 10"):
        m.fit({"ids": ids, "t": t}, epochs=1, batch_size=2, verbose=0)
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    m.train_step({"ids": ids[:1], "t": t[:1]})  # a good batch still trains
    assert not np.array_equal(m.get_weights()["W"], before["W"])


def test_library_refuses_with_err_lookup(model, tmp_path) -> None:
    path = str(tmp_path / "libemb.so")
    model.export(path)
    header = open(glob.glob(os.path.join(tmp_path, "*.h"))[0]).read()
    assert re.search(r"EMB_ERR_LOOKUP +14 ", header)
    assert "ids whole numbers in -10..9 (EMB_ERR_LOOKUP)" in header
    lib = gc.load(path)
    np.testing.assert_array_equal(lib.predict(np.array([[1, -1, 0]], np.float32)), W[[[1, -1, 0]]])
    with pytest.raises(gc.ArgumentError, match=r"indices 'ids': row 0 holds 10\.0"):
        lib.predict(np.array([[0, 10, 1]], np.float32))
