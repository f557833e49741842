"""ONNX EyeLike, NonZero and BitShift (values known at import time: shape computations) and
Compress with a condition known at import time. EyeLike, NonZero and BitShift run ONNX's node
tests (each case's node with its inputs as initializers, its result cast to float and added to
a float input, so that the model has a computed output) against their expected outputs, the
spec's values (BitShift's signed types and out-of-range shifts of opset 28 included); Compress
against ONNX Runtime. Before, all four were refused ('not supported by graphc')."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.onnx_backend import GraphcRep, node_cases

N = helper.make_node


def _through_add(case) -> tuple:
    """The case's node, its inputs initializers, output -> Cast(float) -> Add(z): the model
    and the expected sum for z = 0."""
    node = case.model.graph.node[0]
    inputs, outputs = case.data_sets[0]
    want = np.asarray(outputs[0])
    names = [i.name for i in case.model.graph.input]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in zip(names, inputs)]
    nodes = [
        node,
        N("Cast", [node.output[0]], ["as_float__"], to=TensorProto.FLOAT),
        N("Add", ["as_float__", "z__"], ["sum__"]),
    ]
    opset = case.model.opset_import[0].version
    return make_model(nodes, [("z__", list(want.shape))], ["sum__"], inits, opset), want


@pytest.mark.parametrize("op", ["EyeLike", "NonZero", "BitShift"])
def test_node_tests_fold_to_the_expected_values(op: str) -> None:
    cases = [c for c in node_cases(op) if "uint16" not in c.name]  # (no uint16 tensors)
    assert cases
    for case in cases:
        m, want = _through_add(case)
        # (folded at import: the interpreter runs the Add the model computes)
        got = GraphcRep(m, mode="interpret").run([np.zeros(want.shape, np.float32)])[0]
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=case.name)


def test_compress_matches_onnxruntime_and_refuses_a_computed_condition() -> None:
    """Along axes 1, 2 and -1 of [N, 5, 4] (a condition shorter than the axis), and without an
    axis on a fixed-shape value; a condition computed in the graph is refused naming the node."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    conds = {
        "c1": np.array([1, 0, 1, 1, 0], bool),
        "c2": np.array([0, 1, 1], bool),
        "c3": np.array([1, 0, 0, 1], bool),
        "cw": np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1], bool),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in conds.items()]
    nodes = [
        N("Compress", ["x", "c1"], ["a"], axis=1),
        N("Compress", ["x", "c2"], ["b"], axis=2),
        N("Compress", ["x", "c3"], ["c"], axis=-1),
        N("Compress", ["w", "cw"], ["d"]),
    ]
    m = make_model(nodes, [("x", ["N", 5, 4]), ("w", [3, 4])], ["a", "b", "c"], inits, 13)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "w": w}
    )
    got = gc.from_onnx(m).compile().predict({"x": x})
    for k, name in enumerate("abc"):
        np.testing.assert_array_equal(got[name], want[k], err_msg=name)
    m = make_model(nodes[3:], [("w", [3, 4])], ["d"], inits, 13)
    d = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"w": w}
    )[0]
    np.testing.assert_array_equal(GraphcRep(m).run([w])[0], d)
    nodes = [
        N("Greater", ["x", "zero"], ["g"]),
        N("Compress", ["x", "g"], ["y"], axis=1, name="cmp"),
    ]
    zero = numpy_helper.from_array(np.zeros((5,), np.float32), "zero")
    with pytest.raises(gc.OnnxError, match=r"'cmp' \(Compress.*computed in the graph"):
        gc.from_onnx(
            make_model(
                nodes[:1] + [N("Squeeze", ["g"], ["g1"])] + nodes[1:],
                [("x", ["N", 5])],
                ["y"],
                [zero],
                13,
            )
        )


def test_eye_like_of_a_batched_value_is_refused() -> None:
    m = make_model(
        [N("EyeLike", ["x"], ["e"], name="eye"), N("Add", ["x", "e"], ["y"])],
        [("x", ["N", 4])],
        ["y"],
    )
    with pytest.raises(gc.OnnxError, match=r"'eye' \(EyeLike.*batch dimension N"):
        gc.from_onnx(m)


COL2IM = [  # image_shape, block_shape, attributes
    ([5, 6], [2, 3], {}),
    ([5, 6], [2, 3], {"strides": [1, 2], "pads": [1, 0, 0, 1]}),
    ([6, 7], [3, 2], {"dilations": [2, 1], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ([4, 4], [2, 2], {"strides": [2, 2]}),
]


def test_col2im_matches_onnxruntime() -> None:
    """Col2Im (torch's nn.Fold) of [N, C * prod(block), L] with overlapping blocks, strides,
    pads (blocks partly outside the image) and dilations."""
    rng = np.random.default_rng(7)
    for img, blk, attrs in COL2IM:
        r = len(img)
        st = attrs.get("strides", [1] * r)
        dl = attrs.get("dilations", [1] * r)
        pd = attrs.get("pads", [0] * 2 * r)
        outs = [
            (img[d] + pd[d] + pd[d + r] - dl[d] * (blk[d] - 1) - 1) // st[d] + 1 for d in range(r)
        ]
        shape = [2 * int(np.prod(blk)), int(np.prod(outs))]
        inits = [
            numpy_helper.from_array(np.array(img, np.int64), "img"),
            numpy_helper.from_array(np.array(blk, np.int64), "blk"),
        ]
        m = make_model(
            [N("Col2Im", ["x", "img", "blk"], ["y"], **attrs)],
            [("x", ["N", *shape])],
            ["y"],
            inits,
            18,
        )
        x = rng.standard_normal((3, *shape)).astype(np.float32)
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]
        np.testing.assert_allclose(
            gc.from_onnx(m).compile().predict(x), want, rtol=1e-6, atol=1e-6, err_msg=str(attrs)
        )
