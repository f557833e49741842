"""A dense / matmul of x [N, T, C] by W [C, U] is ONE GEMM with M = N*T rows (the matmul op
reads an operand of rank > 2 as the matrix of its rows): forward and gradients vs numpy
float64, the fused bias + relu epilogue, 2 threads, the exported library, ONNX export through
ONNX Runtime, and the ONNX importer's MatMul of [N, T, K] by [K, P]. graphc@a6ad90e built
T GEMMs [N, C] @ W (refusing T > 1024 in the DSL; the importer's sum of [.., T, K, P]
products past 256)."""

import numpy as np
import pytest

import graphc as gc


def _kernels(m, entry):
    return [
        (k.kind, [m.program.schedules[entry].graph[v].op for v in k.nodes])
        for k in m.program.schedules[entry].kernels
    ]


def _two_dense(shape, name):
    """relu(x @ W1 + b1) @ W2 + b2 on x [N, *shape], float64, the MSE against t."""
    x = gc.input("x", ("N", *shape), dtype="f64")
    t = gc.input("t", ("N", *shape[:-1], 3), dtype="f64")
    h = gc.dense(x, 4, "relu", name="d1")
    y = gc.dense(h, 3, name="d2")
    return gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.0), name=name)


def _np_two_dense(m, xs, ts):
    """(y, {param: dL/dparam}) by numpy float64 over the flattened rows."""
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    x2 = xs.reshape(-1, xs.shape[-1])
    z1 = x2 @ p["d1.w"] + p["d1.b"]
    h = np.maximum(z1, 0)
    y = h @ p["d2.w"] + p["d2.b"]
    dy = 2 * (y - ts.reshape(y.shape)) / y.size
    dh = dy @ p["d2.w"].T * (z1 > 0)
    grads = {"d2.w": h.T @ dy, "d2.b": dy.sum(0), "d1.w": x2.T @ dh, "d1.b": dh.sum(0)}
    return y.reshape(*xs.shape[:-1], 3), grads


@pytest.mark.parametrize("shape", [(1, 5), (3, 5), (300, 5), (2000, 5), (2, 3, 5)])
def test_dense_on_a_sequence_is_one_gemm_with_numpys_values_and_gradients(shape):
    m = _two_dense(shape, f"seq_gemm_{len(shape)}_{shape[0]}")
    kinds = _kernels(m, "infer")
    assert [k for k, _ in kinds].count("matmul") == 2, kinds  # one GEMM per dense, not T
    assert ("matmul", ["matmul", "add", "relu"]) in kinds, kinds  # bias + relu in its epilogue
    rng = np.random.default_rng(len(shape) * 7 + shape[0])
    xs = rng.standard_normal((3, *shape))
    ts = rng.standard_normal((3, *shape[:-1], 3))
    want, grads = _np_two_dense(m, xs, ts)
    np.testing.assert_allclose(m.predict(xs), want, rtol=1e-12, atol=1e-12)
    got = m.gradients(xs, ts)
    for k, g in grads.items():
        np.testing.assert_allclose(got[k], g, rtol=1e-9, atol=1e-13, err_msg=k)
    m.threads = 2  # the GEMM's rows N*T split between threads like any other M
    np.testing.assert_allclose(m.predict(xs), want, rtol=1e-12, atol=1e-12)
    got = m.gradients(xs, ts)
    for k, g in grads.items():
        np.testing.assert_allclose(got[k], g, rtol=1e-9, atol=1e-13, err_msg=k)


def test_sequence_gemm_gradient_matches_central_differences():
    """dL/dW1 of the float64 model at T = 3 by central differences of its own loss."""
    m = _two_dense((3, 5), "seq_gemm_fd")
    rng = np.random.default_rng(3)
    xs, ts = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 3))
    g = m.gradients(xs, ts)["d1.w"]
    w0 = m.params["d1.w"].copy()
    for idx in [(0, 0), (2, 1), (4, 3)]:
        vals = []
        for s in (1.0, -1.0):
            w = w0.copy()
            w[idx] += s * 1e-6
            m.set_weights({"d1.w": w})
            vals.append(float(m.evaluate(xs, ts)["loss"]))
        m.set_weights({"d1.w": w0})
        assert abs((vals[0] - vals[1]) / 2e-6 - g[idx]) < 1e-5 * max(1.0, abs(g[idx]))


def test_sequence_gemm_float32_library_and_onnx_runtime(tmp_path):
    x = gc.input("x", ("N", 7, 6))
    y = gc.dense(gc.dense(x, 8, "relu", name="e1"), 2, name="e2")
    m = gc.compile(y, None, name="seq_gemm_lib")
    xs = np.random.default_rng(4).standard_normal((5, 7, 6)).astype(np.float32)
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    want = np.maximum(xs @ p["e1.w"] + p["e1.b"], 0) @ p["e2.w"] + p["e2.b"]
    got = m.predict(xs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    lib = gc.load(m.export(str(tmp_path / "libseq.so")).library)
    np.testing.assert_allclose(lib.predict(xs), got, rtol=1e-6, atol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "seq.onnx"
    m.to_onnx(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": xs})
    np.testing.assert_allclose(out, got, rtol=1e-5, atol=1e-6)


def test_onnx_import_of_a_linear_on_a_long_sequence_is_one_gemm():
    """MatMul [N, 300, 8] @ [8, 4] + bias: one GEMM, numpy's values (the importer summed
    [.., 300, 8, 4] products past 256 positions before)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["y"])],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 300, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 300, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m = gc.from_onnx(model.SerializeToString()).compile()
    kinds = _kernels(m, "infer")
    assert [k for k, _ in kinds].count("matmul") == 1, kinds
    xs = rng.standard_normal((3, 300, 8)).astype(np.float32)
    want = xs.astype(np.float64) @ w + b
    np.testing.assert_allclose(m.predict(xs), want, rtol=1e-5, atol=1e-5)


def test_matmul_of_rank_three_operands_in_other_forms_is_refused_clearly():
    x = gc.input("x", ("N", 3, 4))
    with pytest.raises(gc.GraphcError, match="inner dimensions differ"):
        x @ gc.param("bad_w", (5, 2))
    with pytest.raises(gc.GraphcError, match=r"inner dimensions differ \(3 vs 2\)"):
        gc.matmul(x, gc.param("bad_w2", (2, 4)), transpose_a=True)  # numpy's x^T: [N, 4, 3]
    with pytest.raises(gc.GraphcError, match="N must lead the operands"):
        x @ gc.param("bad_w3", (2, 1, 4, 2))  # N would be broadcast against 2


def test_time_major_rows_with_n_inside_are_one_gemm():
    """x [T, N, C] @ W (time-major, N not first): the rows are T*N all the same; graphc@a6ad90e
    refused it ("N elsewhere than first"). Forward and dL/dW vs numpy float64, fused relu."""
    x = gc.input("x", (3, "N", 4), dtype="f64")
    y = gc.relu(x @ gc.param("tw", (4, 2), dtype="f64") + gc.param("tb", (2,), dtype="f64"))
    m = gc.compile(y, gc.sum(y * y), gc.SGD(0.0), name="seq_gemm_tn")
    assert _kernels(m, "infer") == [("matmul", ["matmul", "add", "relu"])]
    xs = np.random.default_rng(2).standard_normal((3, 5, 4))
    z = xs @ m.params["tw"] + m.params["tb"]
    want = np.maximum(z, 0)
    np.testing.assert_allclose(m.predict(xs), want, rtol=1e-12, atol=1e-12)
    dz = (2 * want * (z > 0)).reshape(-1, 2)
    np.testing.assert_allclose(m.gradients(xs)["tw"], xs.reshape(-1, 4).T @ dz, rtol=1e-10)
