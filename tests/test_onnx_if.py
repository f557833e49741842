"""ONNX If whose condition is known at import time: torch's TorchScript exporter writes
x.squeeze(d) of a dynamically shaped x as If(Shape(x)[d] == 1, Squeeze, Identity) (as in
nn.LocalResponseNorm's export), and shape tests in general. The branch taken is imported in
place (it may read the graph's values, also ones no other node reads, and hold initializers
and Constants of its own). A condition computed from the data selects between both branches
(tests/test_onnx_control.py). Before, every If was refused ('operator If is not
supported')."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

N = helper.make_node


def _i64(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _model(shape, cond_nodes, then_nodes, then_out, else_nodes, else_out, inits=()):
    vi = helper.make_tensor_value_info
    then_g = helper.make_graph(then_nodes, "then", [], [vi(then_out, TensorProto.FLOAT, None)])
    else_g = helper.make_graph(else_nodes, "else", [], [vi(else_out, TensorProto.FLOAT, None)])
    nodes = [
        N("Relu", ["x"], ["r"]),  # read by the branches only
        *cond_nodes,
        N("If", ["c"], ["b"], then_branch=then_g, else_branch=else_g),
        N("Neg", ["b"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [vi("x", TensorProto.FLOAT, ["N", *shape])],
        [vi("y", TensorProto.FLOAT, None)],
        list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _squeeze_if(shape):
    """torch's x.squeeze(2): If(Shape(r)[2] == 1, Squeeze(r, [2]), Identity(r))."""
    cond = [
        N("Shape", ["r"], ["s"]),
        N("Gather", ["s", "two"], ["d"], axis=0),
        N("Equal", ["d", "one"], ["c"]),
    ]
    then = [N("Constant", [], ["ax"], value=_i64("axv", [2])), N("Squeeze", ["r", "ax"], ["sq"])]
    return _model(
        shape,
        cond,
        then,
        "sq",
        [N("Identity", ["r"], ["id"])],
        "id",
        [_i64("two", 2), _i64("one", 1)],
    )


@pytest.mark.parametrize("d", [1, 4])
def test_an_if_on_a_shape_imports_the_branch_it_takes(d) -> None:
    """Axis 2 symbolic in the file (as torch's dynamic export), fixed by dims= in graphc."""
    m = _squeeze_if((3, "d", 5))
    x = np.random.default_rng(0).standard_normal((2, 3, d, 5)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = gc.from_onnx(m, dims={"d": d}).compile().predict(x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_branch_with_its_own_initializer_and_a_trainable_outer_weight() -> None:
    """then: r * w + k (w a graph initializer, k the branch's own; both train by default)."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 4).astype(np.float32), "w")
    k = numpy_helper.from_array(np.full(4, 0.5, np.float32), "k")
    then_g = helper.make_graph(
        [N("Mul", ["r", "w"], ["rw"]), N("Add", ["rw", "k"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
        [k],
    )
    m = _model(
        (4,),
        [N("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "cv"))],
        [],
        "r",
        [N("Identity", ["r"], ["e"])],
        "e",
        [w],
    )
    next(a for a in m.graph.node[2].attribute if a.name == "then_branch").g.CopyFrom(then_g)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    imp = gc.from_onnx(m)
    np.testing.assert_allclose(imp.compile().predict(x), sess.run(None, {"x": x})[0], rtol=1e-6)
    assert set(imp.params) == {"w", "k"}, imp.params  # float initializers train, as the graph's


def test_an_if_on_the_data_selects_between_its_branches() -> None:
    """Refused before; now both branches are computed and selected (onnx_import_control, whose
    tests hold the refusals: branches of different shapes)."""
    cond = [N("ReduceSum", ["r"], ["t"], keepdims=0), N("Greater", ["t", "zero"], ["c"])]
    m = _model((4,), cond, [N("Identity", ["r"], ["ir"])], "ir", [N("Neg", ["r"], ["nr"])], "nr")
    m.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    model = gc.from_onnx(m).compile()
    for shift in (2.0, -2.0):  # sum(relu(x)) > 0 and == 0
        x = (np.random.default_rng(2).standard_normal((3, 4)) + shift).astype(np.float32)
        np.testing.assert_array_equal(model.predict(x), sess.run(None, {"x": x})[0])


def _ids_if_model(with_optional: bool = False) -> onnx.ModelProto:
    """If on a bool input c: the then branch picks ids (int64 input) and ArgMax(x), the else
    branch ids + 1 and ArgMin(x); outside, Gather(emb, chosen ids) and the chosen ArgMax /
    ArgMin as an int64 graph output."""
    vi = helper.make_tensor_value_info
    I64 = TensorProto.INT64

    def branch(name, nodes, outs):
        return helper.make_graph(nodes, name, [], [vi(o, I64, None) for o in outs])

    then_g = branch(
        "then",
        [N("Identity", ["ids"], ["ta"]), N("ArgMax", ["x"], ["pa"], axis=1, keepdims=0)],
        ["ta", "pa"],
    )
    else_g = branch(
        "else",
        [N("Add", ["ids", "one"], ["tb"]), N("ArgMin", ["x"], ["pb"], axis=1, keepdims=0)],
        ["tb", "pb"],
    )
    if with_optional:  # an optional output of a branch: selected by no rule
        then_g.node.append(N("Optional", ["x"], ["oa"]))
        else_g.node.append(N("Optional", ["x"], ["ob"]))
        then_g.output.append(
            helper.make_value_info(
                "oa",
                helper.make_optional_type_proto(
                    helper.make_tensor_type_proto(TensorProto.FLOAT, None)
                ),
            )
        )
        else_g.output.append(
            helper.make_value_info(
                "ob",
                helper.make_optional_type_proto(
                    helper.make_tensor_type_proto(TensorProto.FLOAT, None)
                ),
            )
        )
    outs = ["sel", "pos"] + (["opt"] if with_optional else [])
    nodes = [
        N("If", ["c"], outs, then_branch=then_g, else_branch=else_g),
        N("Gather", ["emb", "sel"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            vi("x", TensorProto.FLOAT, ["N", 5]),
            vi("ids", I64, ["N", 3]),
            vi("c", TensorProto.BOOL, [1]),
        ],
        [vi("y", TensorProto.FLOAT, None), vi("pos", I64, None)]
        + ([vi("opt", TensorProto.FLOAT, None)] if with_optional else []),
        [
            numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "emb"),
            _i64("one", 1),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def test_integer_ids_chosen_by_an_if_on_a_bool_input_and_used_outside() -> None:
    """The chosen ids index a table outside the If and the chosen ArgMax / ArgMin is an int64
    output, as ONNX Runtime gives them for both conditions; an id whose chosen index leaves the
    table (ids + 1 = 10) is refused at run time naming 'ids'. Before, the bool input c was
    refused ('element type bool used as an integer')."""
    m = _ids_if_model()
    model = gc.from_onnx(m).compile()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    ids = rng.integers(0, 9, (4, 3)).astype(np.int64)
    for c in (True, False):
        feeds = {"x": x, "ids": ids, "c": np.array([c])}
        want = sess.run(None, feeds)
        got = model.predict(feeds)
        np.testing.assert_array_equal(got["y"], want[0])
        assert got["pos"].dtype == np.int64
        np.testing.assert_array_equal(got["pos"], want[1])
    with pytest.raises(gc.ArgumentError, match="'ids'"):
        model.predict({"x": x, "ids": np.full((4, 3), 9, np.int64), "c": np.array([False])})


def test_an_optional_chosen_by_an_if_on_the_data_is_refused_by_name() -> None:
    """(AttributeError before: 'OptionalValue' object has no attribute 'shape')"""
    with pytest.raises(gc.OnnxError, match=r"\(If.*output 2 is an optional"):
        gc.from_onnx(_ids_if_model(with_optional=True))
