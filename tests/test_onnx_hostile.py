"""Malformed and hostile ONNX files found by mutation fuzzing (fuzz_onnx of the fuzzer helper):
each is refused with an OnnxError naming the field or node, never a Python exception escaping.
The minimal file of each class is built here with onnx.helper."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphc as gc


def _mlp(graph_name: str = "mlpQQ", node_input: str = "x") -> bytes:
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", [node_input, "W"], ["y"], name="mm")],
        graph_name,
        [helper.make_tensor_value_info(node_input, TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return m.SerializeToString()


@pytest.mark.parametrize(
    "data, field",
    [
        (_mlp("mlpQQ").replace(b"mlpQQ", b"mlp\x80\xff"), "model.graph.name"),
        (_mlp(node_input="inQQ").replace(b"inQQ", b"in\xc3\x28"), "model.graph.node[0].input[0]"),
    ],
)
def test_names_that_are_not_utf8_are_refused_naming_the_field(tmp_path, data, field) -> None:
    # protobuf's Python runtime hands a non-UTF-8 string field over as bytes: the importer's
    # re.sub on the graph name raised TypeError (a byte flip in a real file found it)
    with pytest.raises(gc.OnnxError, match=re.escape(f"{field} is not UTF-8")):
        gc.from_onnx(data)
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(gc.OnnxError, match=r"bad\.onnx: model\.graph"):
        gc.from_onnx(str(path))
    with pytest.raises(gc.OnnxError, match="not UTF-8"):
        gc.from_onnx(onnx.load(str(path)))
    # the same file with valid names imports
    gc.from_onnx(_mlp())


def _int_mul_graph(mask_nodes: list) -> bytes:
    e = numpy_helper.from_array(np.ones((10, 2), np.float32), "E")
    g = helper.make_graph(
        [
            *mask_nodes,
            helper.make_node("Mul", ["ids", "mask"], ["m"], name="mul"),
            helper.make_node("Gather", ["E", "m"], ["y"], name="gather", axis=0),
        ],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2])],
        [e],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize(
    "mask_nodes",
    [
        # a Cast with no input behind the Mul's other factor (IndexError before)
        [helper.make_node("Cast", [], ["mask"], name="c0", to=TensorProto.INT64)],
        # Casts in a cycle (RecursionError before)
        [
            helper.make_node("Cast", ["mask2"], ["mask"], name="c1", to=TensorProto.INT64),
            helper.make_node("Cast", ["mask"], ["mask2"], name="c2", to=TensorProto.INT64),
        ],
    ],
)
def test_integer_inputs_mask_scan_of_malformed_casts_is_refused(mask_nodes) -> None:
    # (the mask scan is gone with Mul's restriction; the malformed Cast is named)
    with pytest.raises(gc.OnnxError, match=r"'c[012]' \(Cast"):
        gc.from_onnx(_int_mul_graph(mask_nodes))


def test_a_graph_input_listed_twice_is_refused() -> None:
    # ONNX Runtime: "Duplicate definition-site for (x)"; graphc made two inputs x and x_1, the
    # nodes reading the second (found by fuzzing: a graph input duplicated)
    m = onnx.load_from_string(_mlp())
    m.graph.input.append(m.graph.input[0])
    with pytest.raises(gc.OnnxError, match="graph input 'x' is listed twice"):
        gc.from_onnx(m)


def test_value_info_contradicting_the_nodes_type_is_refused() -> None:
    # a float Div declared int64 in value_info was computed as integer division (truncated:
    # [1, 2, -1] for [1.5, 2.5, -1.5]); ONNX Runtime refuses the file with a type error
    # (found by fuzzing: value_info entries of other types, compared with ONNX Runtime)
    d = numpy_helper.from_array(np.full((3,), 2, np.float32), "D")

    def model(declared: int) -> onnx.ModelProto:
        g = helper.make_graph(
            [helper.make_node("Div", ["x", "D"], ["q"]), helper.make_node("Neg", ["q"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
            [d],
            value_info=[helper.make_tensor_value_info("q", declared, ["N", 3])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    with pytest.raises(gc.OnnxError, match=r"'q' is declared int64 .* yields float"):
        gc.from_onnx(model(TensorProto.INT64))
    m = model(TensorProto.FLOAT)
    gc.from_onnx(m)  # declared as computed: imports
    assert len(m.graph.value_info) == 1  # the caller's ModelProto is left as it was


def test_an_attribute_of_another_type_than_the_operators_is_refused() -> None:
    # ConstantOfShape's value declared SPARSE_TENSOR (its data in the dense field): the rule got
    # a SparseTensorProto and AttributeError escaped; an axis given as a float (found by fuzzing)
    def model(attr: onnx.AttributeProto) -> onnx.ModelProto:
        n = helper.make_node("Softmax", ["x"], ["y"], name="sm")
        n.attribute.append(attr)
        g = helper.make_graph(
            [n],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    with pytest.raises(gc.OnnxError, match=r"'sm'.*attribute 'axis' has type FLOAT.* is INT"):
        gc.from_onnx(model(helper.make_attribute("axis", 1.0)))
    gc.from_onnx(model(helper.make_attribute("axis", 1)))
    value = helper.make_attribute("value", numpy_helper.from_array(np.ones(1, np.float32)))
    value.type = onnx.AttributeProto.SPARSE_TENSOR
    n = helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos")
    n.attribute.append(value)
    g = helper.make_graph(
        [n, helper.make_node("Add", ["x", "c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([3], np.int64), "s")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(gc.OnnxError, match=r"'cos'.*'value' has type SPARSE_TENSOR.* is TENSOR"):
        gc.from_onnx(m)


def test_values_defined_twice_and_attributes_given_twice_are_refused() -> None:
    # a node repeated after the last use of its output was skipped (imported; ONNX Runtime
    # refuses the file), and of an attribute given twice the last was read (found by fuzzing)
    def model(nodes: list) -> onnx.ModelProto:
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    relu = helper.make_node("Relu", ["x"], ["r"], name="relu")
    neg = helper.make_node("Neg", ["r"], ["y"], name="neg")
    with pytest.raises(gc.OnnxError, match=r"node 2 'relu' \(Relu\): output 'r' is defined twice"):
        gc.from_onnx(model([relu, neg, relu]))
    with pytest.raises(gc.OnnxError, match="output 'x' is defined twice"):
        gc.from_onnx(model([helper.make_node("Relu", ["x"], ["x"]), neg]))
    sm = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)
    sm.attribute.append(helper.make_attribute("axis", 0))
    with pytest.raises(gc.OnnxError, match=r"'sm'.*attribute.*'axis' given more than once"):
        gc.from_onnx(model([sm]))
    gc.from_onnx(model([relu, neg]))


def test_a_reference_attribute_outside_a_function_is_refused() -> None:
    # ref_attr_name belongs in function bodies; onnx's get_attribute_value raised ValueError
    # from the importer's merged-rows check (found by fuzzing tests/data/onnx/tf_mha_13.onnx)
    n = helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[0, 2, 1])
    n.attribute[0].ref_attr_name = "perm_of_caller"
    g = helper.make_graph(
        [n],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(gc.OnnxError, match=r"'tr'.*'perm' refers to 'perm_of_caller'"):
        gc.from_onnx(m)
    # the fuzzer's file: a Transpose of merged rows in tf2onnx's attention
    m = onnx.load(os.path.join(os.path.dirname(__file__), "data", "onnx", "tf_mha_13.onnx"))
    (node,) = [n for n in m.graph.node if n.name == "Transpose__169"]
    node.attribute[0].ref_attr_name = "r"
    with pytest.raises(gc.OnnxError, match=r"'Transpose__169'.*'perm' refers to 'r'"):
        gc.from_onnx(m)


@pytest.mark.parametrize("lengths", [(2, 1, 2), (1, 1, 2), (2, 2, 1)])
def test_slice_with_starts_ends_axes_of_other_lengths_is_refused(lengths) -> None:
    # zip() dropped the extra entries and the slice imported (ONNX Runtime: "Starts and ends
    # shape mismatch"; found by fuzzing tests/data/onnx/torch_chunk_17.onnx against it)
    ns, ne, na = lengths
    inits = [
        numpy_helper.from_array(np.array([0, 1][:ns], np.int64), "s"),
        numpy_helper.from_array(np.array([2, 3][:ne], np.int64), "e"),
        numpy_helper.from_array(np.array([1, 2][:na], np.int64), "a"),
    ]
    g = helper.make_graph(
        [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="sl")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(gc.OnnxError, match=r"'sl'.*Slice needs as many of each"):
        gc.from_onnx(m)
