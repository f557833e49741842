"""scikit-learn's k-nearest-neighbour models through skl2onnx against ONNX Runtime.

skl2onnx writes them as distances to every training row, TopK of the k nearest, then
ArrayFeatureExtractor(training labels, indices [N, k]): the labels of the k neighbours (a
table picked by computed indices, [N, k] at once), then votes or a mean. graphc's rule took
one index per row ([N] or [N, 1], an ArgMax's) and failed on [N, k] with an internal
broadcasting error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

import graphc as gc


def _data(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return rng, x


@pytest.mark.parametrize("k", [1, 3, 4])
def test_knn_classifier_labels_and_probabilities_match_onnxruntime(k: int) -> None:
    from skl2onnx import to_onnx
    from sklearn.neighbors import KNeighborsClassifier

    rng, x = _data(k)
    y = np.array([3, 7, 11])[rng.integers(0, 3, len(x))]  # labels that are not 0..C-1
    clf = KNeighborsClassifier(n_neighbors=k).fit(x, y)
    m = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    model = gc.from_onnx(m).compile()
    q = rng.standard_normal((9, 4)).astype(np.float32)
    ref_label, ref_proba = sess.run(None, {m.graph.input[0].name: q})
    got = model.predict(q)
    np.testing.assert_array_equal(got["label"].reshape(-1), ref_label)
    np.testing.assert_allclose(got["probabilities"], ref_proba, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ref_label, clf.predict(q))  # (the reference is sklearn's)


def test_knn_regressor_mean_of_neighbours_matches_onnxruntime() -> None:
    from skl2onnx import to_onnx
    from sklearn.neighbors import KNeighborsRegressor

    rng, x = _data(5)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 10).astype(np.float32)
    reg = KNeighborsRegressor(n_neighbors=3).fit(x, y)
    m = to_onnx(reg, x[:1], target_opset=17)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    q = rng.standard_normal((7, 4)).astype(np.float32)
    (ref,) = sess.run(None, {m.graph.input[0].name: q})
    got = gc.from_onnx(m).compile().predict(q)
    np.testing.assert_allclose(np.reshape(got, ref.shape), ref, rtol=1e-5, atol=1e-5)
