"""evaluate's metrics read the loss's prediction (graphc.compiler.metric_source), whichever
output carries it, against numpy on the predicted values."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ArgumentError

RNG = np.random.default_rng(11)
X = RNG.normal(size=(40, 4)).astype(np.float32)
T = (RNG.random((40, 1)) > 0.5).astype(np.float32)
C = RNG.integers(0, 3, 40).astype(np.int32)
R = RNG.normal(size=(40, 2)).astype(np.float32)


def _net(width):
    x = gc.input("x", ("N", 4))
    h = gc.dense(x, 5, "relu", name="h")
    return x, h, gc.dense(h, width, name="z")


def test_binary_accuracy_of_a_sigmoid_output_and_of_logits_for_probabilities(tmp_path) -> None:
    # a sigmoid output was thresholded at 0 as if logits: accuracy = the share of 1 labels
    _, _, z = _net(1)
    m = gc.compile(gc.sigmoid(z), gc.binary_cross_entropy(z, gc.input("y", ("N", 1))))
    p = m.predict(X)
    assert m.evaluate(X, T)["accuracy"] == np.mean((p > 0.5) == (T > 0.5))
    path = m.save_model(str(tmp_path / "m.gcm"))  # the model file keeps which output it is
    assert gc.load_model(path).evaluate(X, T)["accuracy"] == np.mean((p > 0.5) == (T > 0.5))
    # probabilities in the loss, the logits as the output
    _, _, z = _net(1)
    y = gc.input("y", ("N", 1))
    m = gc.compile(z, gc.binary_cross_entropy(gc.sigmoid(z), y, from_logits=False))
    assert m.evaluate(X, T)["accuracy"] == np.mean((m.predict(X) > 0) == (T > 0.5))


def test_metrics_read_the_output_the_loss_takes_not_the_first() -> None:
    _, h, z = _net(3)
    m = gc.compile([h, z], gc.softmax_cross_entropy(z, gc.input("y", ("N",), "i32")))
    logits = list(m.predict(X).values())[1]
    assert m.evaluate(X, C)["accuracy"] == np.mean(logits.argmax(1) == C)
    _, h, z = _net(2)
    m = gc.compile([h, z], gc.mean_squared_error(z, gc.input("y", ("N", 2))))
    pred = list(m.predict(X).values())[1].astype(np.float64)  # the first output was read: crash
    ev = m.evaluate(X, R)
    assert np.isclose(ev["mse"], np.mean((pred - R) ** 2), rtol=1e-6)
    assert np.isclose(ev["mae"], np.mean(np.abs(pred - R)), rtol=1e-6)


def test_no_output_carries_the_prediction_reports_the_loss_alone() -> None:
    _, h, z = _net(2)
    m = gc.compile(h, gc.mean_squared_error(z, gc.input("y", ("N", 2))))
    assert set(m.evaluate(X, R)) == {"loss"}
    # Keras's list form is the scalar loss when it is the only figure
    loss = m.evaluate(X, R, return_dict=False)
    z64 = m.predict(X).astype(np.float64) @ m.params["z.w"].astype(np.float64) + m.params["z.b"]
    assert isinstance(loss, float) and np.isclose(loss, np.mean((z64 - R) ** 2), rtol=1e-5)
    assert m.figure_names(validation=True) == ["loss", "lr", "seconds", "val_loss"]
    with pytest.raises(ArgumentError, match="val_mse"):
        m.fit(X, R, validation_split=0.25, callbacks=[gc.EarlyStopping("val_mse")], verbose=0)


def test_keras_call_forms_of_predict_and_evaluate() -> None:
    # predict(x, verbose=0), evaluate(x, y, verbose=0, return_dict=False): TypeErrors before
    _, _, z = _net(3)
    m = gc.compile(z, gc.softmax_cross_entropy(z, gc.input("y", ("N",), "i32")))
    p = m.predict(X, verbose=0)
    loss, acc = m.evaluate(X, C, verbose=0, return_dict=False)
    assert acc == np.mean(p.argmax(1) == C) and loss == m.evaluate(X, C)["loss"]


def test_metrics_compare_with_the_loss_target_operand(tmp_path) -> None:
    """The metrics compare the prediction with the loss's target operand, not with the first
    label input: an input reached through a reshape (its values reshaped), a feature input
    (an autoencoder's mean_squared_error(decoded, x): val_mse was announced to callbacks but
    never reported), and a target computed from the inputs (log(y), 1 - t) gives the loss
    alone (the metrics were those of the raw input: an mse against y for a loss against
    log(y), a binary accuracy against t for targets 1 - t)."""
    y64 = np.exp(R[:, :1].astype(np.float64))
    _, _, z = _net(1)
    y = gc.input("y", ("N", 1))
    m = gc.compile(z, gc.mean_squared_error(z, gc.log(y)))
    ev = m.evaluate(X, y64.astype(np.float32))
    assert set(ev) == {"loss"} and "val_mse" not in m.figure_names(validation=True)
    assert np.isclose(ev["loss"], np.mean((m.predict(X) - np.log(y64)) ** 2), rtol=1e-5)
    back = gc.load_model(m.save_model(str(tmp_path / "log.gcm")))  # the file keeps the target
    assert set(back.evaluate(X, y64.astype(np.float32))) == {"loss"}
    _, _, z = _net(1)
    m = gc.compile(z, gc.binary_cross_entropy(z, 1.0 - gc.input("t", ("N", 1))))
    assert set(m.evaluate(X, T)) == {"loss"}
    # the targets as a vector, reshaped to the prediction's [N, 1]
    _, _, z = _net(1)
    m = gc.compile(z, gc.mean_squared_error(z, gc.reshape(gc.input("y", ("N",)), ("N", 1))))
    pred = m.predict(X).astype(np.float64)
    ev = m.evaluate(X, R[:, 0])
    assert np.isclose(ev["mse"], np.mean((pred[:, 0] - R[:, 0]) ** 2), rtol=1e-6)
    # an autoencoder: the target is the feature input
    x = gc.input("x", ("N", 4))
    dec = gc.dense(gc.dense(x, 2, "tanh"), 4)
    m = gc.compile(dec, gc.mean_squared_error(dec, x))
    err = m.predict(X).astype(np.float64) - X
    ev = m.evaluate(X)
    assert np.isclose(ev["mse"], np.mean(err**2), rtol=1e-6)
    assert np.isclose(ev["mae"], np.mean(np.abs(err)), rtol=1e-6)
    h = m.fit(X, epochs=1, validation_split=0.25, verbose=0)
    assert set(m.figure_names(validation=True)) == set(h.history)
    back = gc.load_model(m.save_model(str(tmp_path / "ae.gcm")))
    assert np.isclose(back.evaluate(X)["mse"], np.mean((back.predict(X) - X) ** 2), rtol=1e-5)


def test_accuracy_of_labels_given_as_a_column() -> None:
    """Class labels declared [N, 1] and reshaped to [N] for the loss: the accuracy compares
    each row's argmax with its label (the [N, 1] column broadcast against the [N] argmaxes
    to an [N, N] comparison: 0.24 where it is 0.4), vs numpy."""
    _, _, z = _net(3)
    y = gc.input("y", ("N", 1), "i32")
    m = gc.compile(z, gc.softmax_cross_entropy(z, gc.reshape(y, ("N",))))
    col = C.reshape(-1, 1)
    assert m.evaluate(X, col)["accuracy"] == np.mean(m.predict(X).argmax(1) == C)
