"""predict split over threads (runtime/parallel.py): the same rows as one thread and as numpy."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        x = gc.input("x", ("N", 12))
        logits = gc.dense(gc.dense(x, 20, "relu", name="fc1"), 3, name="fc2")
        yield gc.compile(logits, name="threadnet", seed=2, threads=2)


def _numpy_forward(m, x: np.ndarray) -> np.ndarray:
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    h = np.maximum(x @ p["fc1.w"] + p["fc1.b"], 0)
    return h @ p["fc2.w"] + p["fc2.b"]


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_predict_matches_one_thread_and_numpy(model, threads) -> None:
    x = np.random.default_rng(threads).standard_normal((203, 12)).astype(np.float32)
    model.threads = 1
    one = model.predict(x, batch_size=64)
    model.threads = threads
    many = model.predict(x, batch_size=64)                 # 203 rows: uneven blocks
    assert model._pool is not None and model._pool.threads == threads
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(many, _numpy_forward(model, x.astype(np.float64)),
                               rtol=1e-4, atol=1e-5)


def test_small_batches_stay_on_the_calling_thread(model) -> None:
    model.threads = 4
    model._pool = None
    x = np.ones((5, 12), np.float32)
    np.testing.assert_allclose(model.predict(x), _numpy_forward(model, x.astype(np.float64)),
                               rtol=1e-4, atol=1e-5)
    assert model._pool is None


def test_threads_must_be_positive() -> None:
    x = gc.input("x", ("N", 2))
    with pytest.raises(gc.GraphcError, match="threads"):
        gc.compile(gc.dense(x, 1), threads=0)
