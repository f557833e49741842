"""ONNX Einsum with a label repeated in an input term (a diagonal: torch.einsum("bii->bi"),
the trace "bii->b", "bii,i->bi") and a one-operand transpose of any order ("bijk->bkij"),
against ONNX Runtime. Before, both were refused ('a diagonal is not supported', 'graphc
transposes two labels only')."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

EQUATIONS = [  # (equation, operands)
    ("bii->b", ["a"]),
    ("bii->bi", ["a"]),
    ("bij->bji", ["a"]),
    ("bijk->bkij", ["c"]),
    ("bijk->bjki", ["c"]),
    ("bii,i->bi", ["a", "v"]),
    ("bi,ii->bi", ["d", "m"]),
    ("bijj,jk->bik", ["e", "w"]),
]


def test_einsum_diagonals_and_transposes_match_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.standard_normal((2, 3, 3)).astype(np.float32),
        "c": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
        "d": rng.standard_normal((2, 3)).astype(np.float32),
        "e": rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
    }
    weights = {
        "v": rng.standard_normal(3),
        "m": rng.standard_normal((3, 3)),
        "w": rng.standard_normal((4, 5)),
    }
    nodes = [
        helper.make_node("Einsum", ins, [f"y{k}"], equation=eq)
        for k, (eq, ins) in enumerate(EQUATIONS)
    ]
    outs = [f"y{k}" for k in range(len(EQUATIONS))]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *a.shape[1:]])
            for n, a in feeds.items()
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 7
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got = gc.from_onnx(m).compile().predict(feeds)
    for (eq, _), name, want in zip(EQUATIONS, outs, sess.run(None, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=eq)
