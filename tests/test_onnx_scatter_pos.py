"""torch's index_put on a batched tensor at positions read from an int64 input (a cache written
at time step ``pos``: ``c[:, :, pos] = k``; a step per row: ``y[arange(N), pos] = v``; two
steps per row, equal ones too, written or added: ``index_put_(.., accumulate=True)``), torch
2.13's TorchScript export (tests/data/onnx/scatter_pos_ts_*_17.onnx): ScatterND whose index
tuples are each sample's row and positions computed from the input. Against ONNX Runtime; a
negative position counts from the end, as ONNX Runtime's; one outside -size .. size - 1 is
refused at run time naming the input, the row and the node (ONNX Runtime raises too). A
realistic KV cache (8 heads x 128 steps x 64, one step written) imports: each index tuple is
compared with the slice positions only and selects a whole slice (refused before: 524,288
comparisons per sample)."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx_models import weight_gradient_check

import graphc as gc

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _check(name, feeds_list):
    path = os.path.join(DATA, f"scatter_pos_ts_{name}_17.onnx")
    cm = gc.from_onnx(path).compile()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for feeds in feeds_list:
        np.testing.assert_array_equal(cm.predict(feeds), sess.run(None, feeds)[0])
    return cm


def test_cache_written_at_an_input_position() -> None:
    rng = np.random.default_rng(0)
    cache = rng.standard_normal((3, 2, 6, 4)).astype(np.float32)
    k = rng.standard_normal((3, 2, 1, 4)).astype(np.float32)
    feeds = [{"cache": cache, "k": k, "pos": np.array([p], np.int64)} for p in (0, 3, 5, -1, -6)]
    cm = _check("cache", feeds)
    for bad in (6, -7):
        with pytest.raises(gc.ArgumentError, match=rf"'pos': row 0 holds {bad}.*ScatterND"):
            cm.predict({"cache": cache, "k": k, "pos": np.array([bad], np.int64)})


def test_kv_cache_of_realistic_size_written_at_one_step() -> None:
    rng = np.random.default_rng(3)
    cache = rng.standard_normal((2, 8, 128, 64)).astype(np.float32)
    k = rng.standard_normal((2, 8, 1, 64)).astype(np.float32)
    k[1, 3, 0, :3] = [np.inf, -np.inf, np.nan]  # copied as they are, nothing else touched
    steps = (0, 77, 127, -1, -128)
    cm = _check("kv", [{"cache": cache, "k": k, "pos": np.array([p], np.int64)} for p in steps])
    for bad in (128, -129):
        with pytest.raises(gc.ArgumentError, match=rf"'pos': row 0 holds {bad}.*ScatterND"):
            cm.predict({"cache": cache, "k": k, "pos": np.array([bad], np.int64)})


@pytest.mark.parametrize("name", ["two", "acc"])
def test_two_steps_per_row_written_or_added(name: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    v = rng.standard_normal((4, 2, 3)).astype(np.float32)
    pos = ([[1, 4], [0, 0], [3, -2], [-1, 4]], [[2, 2], [4, -1], [0, 1], [-5, 0]])
    cm = _check(name, [{"x": x, "v": v, "pos": np.array(p, np.int64)} for p in pos])
    with pytest.raises(gc.ArgumentError, match=r"'pos': row 3 holds -6"):
        cm.predict({"x": x, "v": v, "pos": np.array([[0, 1]] * 3 + [[-6, 0]], np.int64)})


def test_a_step_per_row_at_input_positions() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    v = rng.standard_normal((4, 3)).astype(np.float32)
    pos = ([1, 4, 0, 2], [0, 0, 4, 4], [-1, -5, 3, -2])
    cm = _check("rows", [{"x": x, "v": v, "pos": np.array(p, np.int64)} for p in pos])
    for bad in (5, -6):
        with pytest.raises(gc.ArgumentError, match=rf"'pos': row 2 holds {bad}"):
            cm.predict({"x": x, "v": v, "pos": np.array([1, 2, bad, 0], np.int64)})


def test_gradient_through_the_computed_scatter() -> None:
    """d/dw of sum(r * y) for the cache written with k * w (w a trainable [4] weight inserted
    before the scatter): against central differences of ONNX Runtime's forward (linear in w)."""
    from onnx import helper, numpy_helper

    m = onnx.load(os.path.join(DATA, "scatter_pos_ts_cache_17.onnx"))
    g = m.graph
    for n in g.node:
        n.input[:] = ["kw" if v == "k" else v for v in n.input]
    g.node.insert(0, helper.make_node("Mul", ["k", "w"], ["kw"]))
    w0 = np.array([0.5, -1.0, 2.0, 1.5], np.float32)
    g.initializer.append(numpy_helper.from_array(w0, "w"))
    rng = np.random.default_rng(2)
    feeds = {
        "cache": rng.standard_normal((2, 2, 6, 4)).astype(np.float32),
        "k": rng.standard_normal((2, 2, 1, 4)).astype(np.float32),
        "pos": np.array([2], np.int64),
    }
    weight_gradient_check(m, feeds, rng.standard_normal((2, 6, 4)).astype(np.float32))
