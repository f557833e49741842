"""torch's dynamo export of nn.Embedding(max_norm=...) against ONNX Runtime: Unique(ids), the
rows of those ids renormalised to at most max_norm, ScatterND back into the table, then the
Gather by ids (the graph torch 2.14 writes at opset 20, built here with onnx.helper so that the
test needs no torch). graphc refused the Unique; the lookup of the updated rows is now the
lookup in the table updated row by row (graphc.onnx_import._lookup_of_updated_rows). ~0.5 s."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(0)
TABLE = (RNG.standard_normal((10, 4)) * 1.5).astype(np.float32)
TABLE[0] = 0.0  # padding_idx's row
MAX_NORM = 1.5


def _norm_nodes(norm_type: int) -> list:
    """val_4 (the rows of the unique ids) -> norm, as the dynamo exporter writes it."""
    if norm_type == 2:
        return [helper.make_node("ReduceL2", ["rows", "axis1"], ["norm"], keepdims=1)]
    return [
        helper.make_node("Abs", ["rows"], ["a"]),
        helper.make_node("Pow", ["a", "p"], ["ap"]),
        helper.make_node("ReduceSum", ["ap", "axis1"], ["s"], keepdims=1),
        helper.make_node("Pow", ["s", "inv_p"], ["norm"]),
    ]


def _embedding(norm_type=2, lookup_ids="ids", extra=(), head=True):
    nodes = [
        helper.make_node("Unique", ["ids"], ["u"], sorted=1),
        helper.make_node("Gather", ["table", "u"], ["rows"], axis=0),
        *_norm_nodes(norm_type),
        helper.make_node("Add", ["norm", "eps"], ["d"]),
        helper.make_node("Div", ["max_norm", "d"], ["scale"]),
        helper.make_node("Mul", ["rows", "scale"], ["scaled"]),
        helper.make_node("Greater", ["norm", "max_norm"], ["over"]),
        helper.make_node("Where", ["over", "scaled", "rows"], ["new"]),
        helper.make_node("Unsqueeze", ["u", "axis1"], ["col"]),
        helper.make_node("ScatterND", ["table", "col", "new"], ["renorm"], reduction="none"),
        helper.make_node("Gather", ["renorm", lookup_ids], ["emb"], axis=0),
        *extra,
    ]
    out = "emb"
    if head:  # torch's mean over the sequence and a Linear (Gemm)
        nodes += [
            helper.make_node("ReduceMean", ["emb", "axis1"], ["mean"], keepdims=0),
            helper.make_node("Gemm", ["mean", "w", "b"], ["y"], transB=1),
        ]
        out = "y"
    consts = {
        "table": TABLE,
        "axis1": np.array([1], np.int64),
        "eps": np.array(1e-7, np.float32),
        "max_norm": np.array(MAX_NORM, np.float32),
        "p": np.array(norm_type, np.float32),
        "inv_p": np.array(1.0 / norm_type, np.float32),
        "w": RNG.standard_normal((2, 4)).astype(np.float32),
        "b": RNG.standard_normal(2).astype(np.float32),
    }
    inputs = [helper.make_tensor_value_info("ids", I64, ["N", 3])]
    if lookup_ids != "ids":
        inputs.append(helper.make_tensor_value_info(lookup_ids, I64, ["N", 3]))
    g = helper.make_graph(
        nodes,
        "main_graph",
        inputs,
        [helper.make_tensor_value_info(out, F32, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def _ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


@pytest.mark.parametrize("norm_type", [2, 3])
@pytest.mark.parametrize("head", [False, True])
def test_dynamo_embedding_max_norm_matches_onnxruntime(norm_type, head) -> None:
    m = _embedding(norm_type, head=head)
    model = gc.from_onnx(m).compile()
    ids = np.array([[1, 2, 3], [4, 5, 1], [9, 0, 9], [7, 7, 7]], np.int64)
    want = _ort(m, {"ids": ids})
    got = model.predict(ids)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    if not head:  # the renormalised rows: norms at most max_norm, others as they were
        norms = np.linalg.norm(TABLE.astype(np.float64), ord=norm_type, axis=1)
        assert (norms[ids] > MAX_NORM).any() and (norms[ids] <= MAX_NORM).any()
        np.testing.assert_array_equal(
            got[norms[ids] <= MAX_NORM], TABLE[ids][norms[ids] <= MAX_NORM]
        )
        assert (
            np.linalg.norm(got.astype(np.float64), ord=norm_type, axis=-1) <= MAX_NORM + 1e-5
        ).all()


def test_a_lookup_of_updated_rows_by_other_ids_is_refused_naming_unique() -> None:
    # Gather(ScatterND(...), other): rows that are not among Unique(ids) read the table as
    # it was, which the whole-table form would change: not rewritten, Unique refused by name
    m = _embedding(lookup_ids="other", head=False)
    with pytest.raises(OnnxError, match=r"Unique"):
        gc.from_onnx(m)
