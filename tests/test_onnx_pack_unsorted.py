"""torch's pack_padded_sequence(..., enforce_sorted=False) around an LSTM and a bidirectional
GRU, as torch 2.13's TorchScript exporter writes it (rows sorted by length with TopK + Gather,
sorted back by the inverse permutation): graphc drops the sort and the sort back where
everything between is computed row by row (graphc/onnx_import_rows.py). Against ONNX Runtime,
unsorted lengths included; a row-mixing op between them keeps the refusal. Before, the import
refused the lengths ('node 4 /TopK (TopK) reads ... as an integer')."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper

import graphc as gc

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


@pytest.mark.parametrize("name", ["lstm", "bigru"])
def test_pack_padded_unsorted_as_onnxruntime(name) -> None:
    path = os.path.join(DATA, f"pack_unsorted_ts_{name}_14.onnx")
    cm = gc.from_onnx(path).compile()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for lengths in ([2, 5, 3, 1], [5], [1, 1, 4]):
        L = np.array(lengths, np.int64)
        x = np.random.default_rng(len(L)).standard_normal((len(L), 5, 3)).astype(np.float32)
        got = cm.predict({"x": x, "lengths": L})
        for g, w in zip(got.values(), sess.run(None, {"x": x, "lengths": L})):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(gc.ArgumentError, match="lengths"):
        cm.predict({"x": x, "lengths": np.array([1, 6, 2], np.int64)})  # past T = 5


def test_a_row_mixing_op_between_keeps_the_sort() -> None:
    """A CumSum along the sorted rows (its result depends on their order): the sort is not
    dropped, and the import refuses (naming a node) rather than compute without it."""
    m = onnx.load(os.path.join(DATA, "pack_unsorted_ts_lstm_14.onnx"))
    g = m.graph
    k, tr = next((k, n) for k, n in enumerate(g.node) if n.op_type == "Transpose")
    src = tr.input[0]
    tr.input[0] = "mixed"
    g.node.insert(k, helper.make_node("CumSum", [src, "ax0"], ["mixed"]))
    g.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "ax0"))
    with pytest.raises(gc.OnnxError, match=r"node \d+ "):
        gc.from_onnx(m)


def test_two_permutations_keep_the_sort() -> None:
    """A second full-length TopK of the lengths (a second permutation): which inverse undoes
    which is not followed, so the model is left as it is (and refused naming a node), never
    unsorted by the wrong inverse."""
    from graphc.onnx_import_rows import unsorted_rows

    m = onnx.load(os.path.join(DATA, "pack_unsorted_ts_lstm_14.onnx"))
    assert unsorted_rows(m) is not m
    g = m.graph
    top = next(n for n in g.node if n.op_type == "TopK")
    twin = helper.make_node("TopK", list(top.input), ["v2", "i2"], axis=-1, largest=0)
    g.node.insert(list(g.node).index(top) + 1, twin)
    assert unsorted_rows(m) is m
    with pytest.raises(gc.OnnxError, match=r"node \d+ "):
        gc.from_onnx(m)
