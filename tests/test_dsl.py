"""The DSL: shapes inferred while building, mismatches reported with the op, both shapes and the
user's line; graphs collected in a topological order."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.dsl import collect_graph


def test_matmul_rejects_mismatched_inner_dims_naming_op_shapes_and_line() -> None:
    x = gc.input("x", ("N", 64))
    w = gc.param("w", (32, 10))
    with pytest.raises(gc.ShapeError) as e:
        gc.matmul(x, w)
    msg = str(e.value)
    assert "matmul: inner dimensions differ (64 vs 32)" in msg
    assert "f32[N,64]" in msg and "f32[32,10]" in msg
    assert "test_dsl.py:" in msg  # the user's line


def test_add_rejects_shapes_that_do_not_broadcast() -> None:
    with pytest.raises(
        gc.ShapeError, match=r"add: shapes cannot be broadcast together \(f32\[N,3\] vs f32\[4\]\)"
    ):
        gc.input("a", ("N", 3)) + gc.input("b", (4,))


def test_dtype_mismatch_is_a_shape_error() -> None:
    with pytest.raises(gc.ShapeError, match="different dtypes"):
        gc.input("a", (3,)) * gc.input("b", (3,), dtype="f64")


def test_dense_infers_shapes_and_names_params() -> None:
    x = gc.input("x", ("N", 5))
    y = gc.dense(x, 7, "relu", name="fc")
    assert y.shape == ("N", 7)
    g = collect_graph("m", [y])
    assert [n.name for n in g.params] == ["fc.w", "fc.b"]
    assert g["fc.w"].attr("init") == "he_uniform"
    assert [n.op for n in g.nodes if n.op not in ("input", "param")] == ["matmul", "add", "relu"]


def test_sequential_applies_layers_in_order() -> None:
    net = gc.Sequential([gc.Dense(8, "tanh"), gc.Dense(3)], name="seq")
    out = net(gc.input("x", ("N", 4)))
    assert out.shape == ("N", 3)


def test_softmax_cross_entropy_requires_integer_labels_of_batch_shape() -> None:
    logits = gc.input("z", ("N", 10))
    with pytest.raises(gc.ShapeError, match=r"labels must be i32\[N\]"):
        gc.softmax_cross_entropy(logits, gc.input("y", ("N",)))


def test_loss_targets_must_match_prediction() -> None:
    p = gc.input("p", ("N", 1))
    with pytest.raises(gc.ShapeError, match="must match"):
        gc.mean_squared_error(p, gc.input("t", ("N",)))


def test_unknown_activation_is_rejected() -> None:
    with pytest.raises(gc.GraphcError, match="unknown activation 'relu6x'"):
        gc.Dense(3, "relu6x")


def test_misspelled_activation_names_its_close_match_and_gc_functions_are_accepted() -> None:
    """A typo or another library's casing ("ReLU", "Tanh", "leaky-relu") says which name was
    meant, before any param is made; graphc's own functions (activation=gc.relu, Keras's
    activation=tf.nn.relu habit) are their names; other callables are refused as such."""
    x = gc.input("x", ("N", 4))
    for typo, meant in (
        ("rellu", "relu"),
        ("ReLU", "relu"),
        ("Tanh", "tanh"),
        ("leaky-relu", "leaky_relu"),
        ("sigmoud", "sigmoid"),
    ):
        with pytest.raises(
            gc.GraphcError, match=f"unknown activation '{typo}' \\(did you mean '{meant}'"
        ):
            gc.dense(x, 3, typo)
        with pytest.raises(gc.GraphcError, match=f"did you mean '{meant}'"):
            gc.Dense(3, typo)
    with pytest.raises(gc.GraphcError, match="a function: graphc compiles only its own"):
        gc.dense(x, 3, np.tanh)
    with pytest.raises(gc.GraphcError, match="unknown activation 3; choose one of elu, "):
        gc.dense(x, 3, 3)
    by_name = gc.dense(x, 3, "relu", name="a")
    by_function = gc.dense(x, 3, gc.relu, name="b")
    assert by_function.node.op == by_name.node.op == "relu"
    assert gc.Dense(3, gc.silu).activation == "silu"


def test_collected_graph_is_topological_with_shared_subexpressions_once() -> None:
    x = gc.input("x", ("N", 2))
    h = gc.tanh(x)
    y = h * h + h
    g = collect_graph("m", [y])
    seen: set[str] = set()
    for n in g.nodes:
        assert all(i in seen for i in n.inputs), n
        seen.add(n.name)
    assert sum(1 for n in g.nodes if n.op == "tanh") == 1


def test_two_distinct_tensors_with_one_name_are_rejected() -> None:
    a = gc.param("w", (2,))
    b = gc.param("w", (3,))
    with pytest.raises(gc.GraphcError, match="named 'w'"):
        collect_graph("m", [a + gc.sum(b)])


def test_reshape_minus_one_takes_the_remaining_size_as_numpy():
    """gc.reshape accepts one -1 (numpy.reshape's and ONNX Reshape's rule): the size that keeps
    the element count, per row beside N; the results equal numpy's reshape, and the gradient
    flows back through it (vs the float64 formula); two -1 or a size that does not divide are
    ShapeErrors naming both shapes."""
    x = gc.input("x", ("N", 2, 6))
    flat, split = gc.reshape(x, ("N", -1)), gc.reshape(x, ("N", 3, -1))
    assert flat.shape == ("N", 12) and split.shape == ("N", 3, 4)
    w = gc.constant(np.arange(12, dtype=np.float32).reshape(4, 3))
    assert gc.reshape(w, (-1,)).shape == (12,) and gc.reshape(w, (2, -1)).shape == (2, 6)
    m = gc.compile([flat, split], name="reshape_minus_one")
    a = np.arange(48, dtype=np.float32).reshape(4, 2, 6)
    out = list(m.predict(a).values())
    np.testing.assert_array_equal(out[0], a.reshape(4, -1))
    np.testing.assert_array_equal(out[1], a.reshape(4, 3, -1))
    for bad in (("N", -1, -1), ("N", 5, -1)):
        with pytest.raises(gc.ShapeError, match=r"reshape of \('N', 2, 6\)"):
            gc.reshape(x, bad)

    t = gc.input("t", ("N", 12))
    v = gc.input("v", ("N", 6))
    h = gc.dense(gc.reshape(gc.reshape(v, ("N", 2, -1)), ("N", -1)), 12, name="d")
    mt = gc.compile(h, gc.mean_squared_error(h, t), gc.SGD(lr=0.1), name="reshape_grad", seed=3)
    xs = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    ts = np.zeros((3, 12), np.float32)
    grads = mt.gradients(xs, ts)
    wd = mt.params["d.w"].astype(np.float64)
    bd = mt.params["d.b"].astype(np.float64)
    err = xs.astype(np.float64) @ wd + bd - ts
    want = xs.T.astype(np.float64) @ (2 * err / err.size)
    np.testing.assert_allclose(grads["d.w"], want, rtol=1e-4, atol=1e-6)


def test_input_dtype_takes_numpy_spellings_and_names_the_choices() -> None:
    """dtype="int32" (numpy's name, what a user reads off y.dtype) was refused as unknown."""
    for spelling, want in (
        ("int32", "i32"),
        (np.int32, "i32"),
        (np.dtype("int64"), "i64"),
        ("float32", "f32"),
        (np.float64, "f64"),
        ("i32", "i32"),
    ):
        assert gc.input(f"v{want}", ("N",), dtype=spelling).dtype == want, spelling
    labels = gc.input("labels", ("N",), dtype=np.int32)
    logits = gc.dense(gc.input("x", ("N", 3)), 2)
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, labels), gc.SGD(0.1))
    assert np.isfinite(m.train_step(np.ones((4, 3), np.float32), np.array([0, 1, 1, 0])))
    for bad in ("int8", bool, None, "f16", "label"):
        with pytest.raises(gc.ShapeError, match=r"unknown dtype .*f32, f64, i32, i64 \(numpy's"):
            gc.input("z", ("N",), dtype=bad)


def test_probabilities_given_to_a_loss_from_logits_warn_at_the_users_line() -> None:
    """sigmoid/softmax outputs given to the losses that apply sigmoid/softmax themselves (the
    Keras-habit model dense(..., "sigmoid") + binary_cross_entropy) and one-column logits for
    softmax_cross_entropy (the loss is identically 0) warn, naming the user's line; logits and
    from_logits=False do not."""
    import warnings

    x = gc.input("x", ("N", 4))
    t1 = gc.input("t1", ("N", 1))
    t3 = gc.input("t3", ("N", 3))
    labels = gc.input("labels", ("N",), dtype="i32")
    p = gc.dense(x, 1, "sigmoid")
    probs = gc.dense(x, 3, "softmax")
    logits = gc.dense(x, 3)
    for call, what in (
        (lambda: gc.binary_cross_entropy(p, t1), "output of sigmoid.*from_logits=False"),
        (lambda: gc.softmax_cross_entropy(probs, labels), "output of softmax"),
        (lambda: gc.categorical_cross_entropy(probs, t3), "output of softmax"),
        (lambda: gc.softmax_cross_entropy(gc.dense(x, 1), labels), "one column.*loss is 0"),
    ):
        with pytest.warns(gc.LossInputWarning, match=what) as rec:
            call()
        assert rec[0].filename == __file__, rec[0].filename
    with warnings.catch_warnings():
        warnings.simplefilter("error", gc.LossInputWarning)
        gc.binary_cross_entropy(p, t1, from_logits=False)
        gc.binary_cross_entropy(gc.dense(x, 1), t1)
        gc.softmax_cross_entropy(logits, labels)
        gc.categorical_cross_entropy(logits, t3)


def test_numpy_operands_on_the_left() -> None:
    """An array on the left of a Tensor operator is refused as on the right: np.ones(4) + x
    was numpy's broadcast over the Tensor, an object array of four Tensors 1 + x that compile
    took as four outputs (a silent wrong model); numpy scalars on the left still compute,
    in the written order (3 / x, 1 - x), vs numpy float64."""
    x = gc.input("x", ("N", 4))
    for bad in (lambda: np.ones(4) + x, lambda: np.ones((1, 4)) * x, lambda: np.array(2.0) - x):
        with pytest.raises(gc.ArgumentError, match="combined with ndarray"):
            bad()
    m = gc.compile([np.float64(3) / x, np.int64(1) - x, np.float32(2) * x])
    X = np.array([[1.0, 2.0, -4.0, 0.5]], np.float32)
    out = list(m.predict(X).values())
    np.testing.assert_allclose(out[0], 3 / X.astype(np.float64), rtol=1e-6)
    np.testing.assert_array_equal(out[1], 1 - X)
    np.testing.assert_array_equal(out[2], 2 * X)
