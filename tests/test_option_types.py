"""Boolean options take True/False only, and graphc refuses to write its own formats under
another framework's file name (Keras's .keras / .h5, torch's .pt, .onnx)."""

import os

import numpy as np
import pytest

import graphc as gc
from graphc.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint


@pytest.fixture(scope="module")
def model():
    x = gc.input("x", ("N", 3))
    y = gc.input("y", ("N", 1))
    out = gc.dense(x, 1)
    return gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.1), name="opt_types")


DATA = (np.ones((4, 3), np.float32), np.ones((4, 1), np.float32))
NOT_BOOLS = ["no", 2, None, 0.0, "False"]


@pytest.mark.parametrize("value", NOT_BOOLS)
def test_evaluate_return_dict_takes_a_bool_only(model, value):
    with pytest.raises(TypeError, match=r"return_dict must be True or False"):
        model.evaluate(*DATA, return_dict=value)
    assert isinstance(model.evaluate(*DATA, return_dict=np.bool_(False)), list)


@pytest.mark.parametrize("option", ["shuffle", "allow_nonfinite", "stop_on_nonfinite"])
def test_fit_boolean_options_take_a_bool_only(model, option):
    before = model.get_weights()
    with pytest.raises(gc.OptionTypeError, match=f"fit: {option} must be True or False"):
        model.fit(*DATA, epochs=1, verbose=0, **{option: "yes"})
    for k, v in model.get_weights().items():  # refused before any step
        np.testing.assert_array_equal(v, before[k])


def test_compile_load_to_onnx_callbacks_boolean_options(model, tmp_path):
    x = gc.input("x", ("N", 2))
    with pytest.raises(TypeError, match="compile: check_numerics"):
        gc.compile(gc.dense(x, 1), check_numerics="on")
    with pytest.raises(TypeError, match="compile: verify_each"):
        gc.compile(gc.dense(x, 1), verify_each=1)
    with pytest.raises(TypeError, match="load: weights_only"):
        model.load(str(tmp_path / "none.npz"), weights_only="yes")
    with pytest.raises(TypeError, match="to_onnx: include_loss"):
        model.to_onnx(str(tmp_path / "m.onnx"), include_loss=1)
    with pytest.raises(TypeError, match="save_best_only"):
        ModelCheckpoint(str(tmp_path / "m.gcm"), save_best_only="true")
    with pytest.raises(TypeError, match="save_weights_only"):
        ModelCheckpoint(str(tmp_path / "m.gcm"), save_weights_only=[])
    with pytest.raises(TypeError, match="restore_best_weights"):
        EarlyStopping(restore_best_weights="yes")
    with pytest.raises(TypeError, match="append"):
        CSVLogger(str(tmp_path / "log.csv"), append="a")
    assert not os.listdir(tmp_path)


def _x():
    return gc.input("x", ("N", 3))


# the graph-building and optimizer options read as flags: a string "False" (truthy) gave
# keepdims, a bias, logits read as probabilities' opposite, or Nesterov momentum silently
DSL_OPTIONS = {
    "sum: keepdims": lambda v: gc.sum(_x(), 1, keepdims=v),
    "mean: keepdims": lambda v: gc.mean(_x(), 1, keepdims=v),
    "max: keepdims": lambda v: gc.max(_x(), 1, keepdims=v),
    "min: keepdims": lambda v: gc.min(_x(), 1, keepdims=v),
    "argmax: keepdims": lambda v: gc.argmax(_x(), 1, keepdims=v),
    "dense: use_bias": lambda v: gc.dense(_x(), 2, use_bias=v),
    r"Dense \(at .*\): use_bias": lambda v: gc.Dense(2, use_bias=v),
    "binary_cross_entropy: from_logits": lambda v: gc.binary_cross_entropy(
        _x(), gc.input("t", ("N", 3)), from_logits=v
    ),
    "SGD: nesterov": lambda v: gc.SGD(0.1, momentum=0.9, nesterov=v),
    "Adam: amsgrad": lambda v: gc.Adam(amsgrad=v),
    "RMSprop: centered": lambda v: gc.RMSprop(centered=v),
}


@pytest.mark.parametrize("option", sorted(DSL_OPTIONS))
def test_graph_and_optimizer_flags_take_a_bool_only(option):
    make = DSL_OPTIONS[option]
    for value in ("False", 1):
        with pytest.raises(gc.OptionTypeError, match=rf"{option} must be True or False"):
            make(value)
    make(np.bool_(False))  # a numpy bool is a bool
    make(True)


@pytest.mark.parametrize("name", ["best.keras", "w.weights.h5", "M.HDF5", "m.pt", "m.onnx"])
def test_foreign_file_names_are_refused_before_writing(model, tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(gc.CheckpointError, match=r"is named like .*Nothing was written"):
        model.save(path)
    with pytest.raises(gc.CheckpointError, match=r"save_model: .*graphc model file"):
        model.save_model(path)
    with pytest.raises(gc.CheckpointError, match="ModelCheckpoint: "):
        ModelCheckpoint(path)
    with pytest.raises(gc.CheckpointError, match=r"ModelCheckpoint: .*checkpoint"):
        ModelCheckpoint(path, save_weights_only=True)
    with pytest.raises(gc.ArgumentError, match=r"export: .*libNAME.so"):
        model.export(path)
    if not name.endswith(".onnx"):
        with pytest.raises(gc.OnnxError, match=r"to_onnx: .*model\.onnx"):
            model.to_onnx(path)
    assert not os.listdir(tmp_path)


def test_own_names_still_write(model, tmp_path):
    ck = ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"), save_weights_only=True)
    model.fit(*DATA, epochs=1, verbose=0, callbacks=[ck])
    assert ck.saved == [str(tmp_path / "ck-1.npz")]
    assert model.save_model(str(tmp_path / "m.gcm")).endswith("m.gcm")


def test_other_frameworks_files_are_named_when_loaded(model, tmp_path) -> None:
    import zipfile

    h5 = tmp_path / "w.weights.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    keras = tmp_path / "best.keras"
    with zipfile.ZipFile(keras, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", "")
    before = model.get_weights()
    for path, what in ((h5, "an HDF5 file"), (keras, "a Keras .keras archive")):
        with pytest.raises(gc.CheckpointError, match=f"is {what}.*from_onnx"):
            model.load(str(path))
        with pytest.raises(gc.CheckpointError, match=f"is {what}"):
            gc.load_model(str(path))
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, before[k])


def test_signatureless_and_pickled_foreign_files_are_named_when_loaded(model, tmp_path) -> None:
    """The class beside Keras's and torch's zip files: a safetensors file (its 8-byte header
    length and JSON), a pickle (torch.save's legacy format), and files without a signature
    named .onnx / .tflite / .pb; each named, not called a damaged .npz; a graphc file saved
    under such a name (before this was refused) still loads."""
    import json
    import pickle
    import struct

    meta = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    files = {
        "m.safetensors": struct.pack("<Q", len(meta)) + meta + bytes(4),
        "m.bin": pickle.dumps({"w": [1.0]}, protocol=2),
        "m.onnx": b"\x08\x08\x12\x07pytorch\x1a\x032.1",  # ModelProto's first fields
        "m.TFLITE": b"\x1c\x00\x00\x00TFL3",
        "saved_model.pb": b"\x08\x01\x12\x00",
    }
    what = {
        "m.safetensors": "a safetensors file",
        "m.bin": "a pickle file",
        "m.onnx": "an ONNX model",
        "m.TFLITE": "a TensorFlow Lite model",
        "saved_model.pb": "a TensorFlow graph",
    }
    before = model.get_weights()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(gc.CheckpointError, match=rf"is {what[name]}.*from_onnx"):
            model.load(str(tmp_path / name))
        with pytest.raises(gc.CheckpointError, match=rf"is {what[name]}"):
            gc.load_model(str(tmp_path / name))
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    own = tmp_path / "own.npz"
    model.save(str(own))
    os.replace(own, tmp_path / "old.pb")  # a graphc checkpoint under a foreign name
    model.load(str(tmp_path / "old.pb"))


def test_fit_counts_and_callbacks_are_checked(model) -> None:
    with pytest.raises(gc.ArgumentError, match="epochs must be an int"):
        model.fit(*DATA, epochs=True, verbose=0)
    before = model.get_weights()
    with pytest.raises(gc.ArgumentError, match=r"fit: epochs must .*epochs=2 .*got 2\.0 \(float\)"):
        model.fit(*DATA, epochs=2.0, verbose=0)  # Keras's range(epochs) refuses a float too
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(gc.ArgumentError, match="initial_epoch must be an int"):
        model.fit(*DATA, epochs=2, initial_epoch=True, verbose=0)
    with pytest.raises(TypeError, match=r"callbacks must be a list.*EarlyStopping"):
        model.fit(*DATA, epochs=1, verbose=0, callbacks=EarlyStopping(monitor="loss"))
    assert len(model.fit(*DATA, epochs=1, verbose=0, callbacks=None).history["loss"]) == 1
    h = model.fit(*DATA, epochs=np.int64(2), initial_epoch=np.int32(1), verbose=0)
    assert len(h.history["loss"]) == 1  # numpy integers count, as in Keras


def test_evaluate_names_keras_arguments_it_has_not(model) -> None:
    with pytest.raises(gc.ArgumentError, match=r"evaluate: no argument 'sample_weight' \(Keras's"):
        model.evaluate(*DATA, sample_weight=np.ones(4))
    with pytest.raises(gc.ArgumentError, match=r"evaluate: no argument 'steps'.*return_dict"):
        model.evaluate(*DATA, steps=1)


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda: EarlyStopping(patience=2.7), TypeError),  # was read as 2
        (lambda: EarlyStopping(patience="3"), TypeError),
        (lambda: EarlyStopping(baseline="1.0"), TypeError),  # failed after the first epoch
        (lambda: EarlyStopping(min_delta=float("nan")), gc.GraphcError),  # no epoch improved
        (lambda: EarlyStopping(start_from_epoch=-1), gc.GraphcError),
        (lambda: gc.ReduceLROnPlateau(patience=-1), gc.GraphcError),  # lowered every epoch
        (lambda: gc.ReduceLROnPlateau(patience=1.5), TypeError),
        (lambda: gc.ReduceLROnPlateau(cooldown=-2), gc.GraphcError),
        (lambda: gc.ReduceLROnPlateau(factor="0.5"), TypeError),
        (lambda: gc.ReduceLROnPlateau(min_lr=float("nan")), gc.GraphcError),
        (lambda: gc.ReduceLROnPlateau(threshold=-1e-4), gc.GraphcError),
        (lambda: gc.ReduceLROnPlateau(min_delta="0.1"), TypeError),
        (lambda: gc.StepLR(1.5), TypeError),  # decayed at epochs 2, 3, 5, 6, ...
        (lambda: gc.CosineAnnealingLR("10"), TypeError),
        (lambda: ModelCheckpoint("m.gcm", initial_value_threshold="0.5"), TypeError),
        (lambda: gc.Normalization(mean=[np.nan, 0.0], variance=[1.0, 1.0]), gc.GraphcError),
        (lambda: gc.Normalization(mean=[0.0], variance=[np.nan]), gc.GraphcError),
        (lambda: CSVLogger("log.csv", separator=""), gc.GraphcError),  # TypeError at fit
        (lambda: CSVLogger("log.csv", separator=";;"), gc.GraphcError),
    ],
)
def test_callback_and_layer_numbers_are_checked_when_made(make, kind) -> None:
    """A callback's counts take ints, its thresholds finite numbers in range, a Normalization's
    given statistics finite numbers: each wrong value is a GraphcError when the object is
    made (OptionTypeError, also a TypeError, for the wrong type), before anything trains."""
    with pytest.raises(kind) as err:
        make()
    assert isinstance(err.value, gc.GraphcError)


def test_callback_numbers_of_numpy_types_are_taken() -> None:
    es = EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.5), baseline=np.float64(2))
    assert (es.patience, es.min_delta, es.baseline) == (3, 0.5, 2.0)
    assert type(es.patience) is int and type(es.min_delta) is float
    r = gc.ReduceLROnPlateau(patience=np.int32(2), cooldown=1, factor=np.float64(0.5))
    assert (r.patience, r.cooldown, r.factor) == (2, 1, 0.5)


def test_validation_split_of_another_type_is_refused(model) -> None:
    with pytest.raises(gc.ArgumentError, match="validation_split"):
        model.fit(*DATA, validation_split="0.25", verbose=0)  # TypeError escaped


def test_normalization_axis_is_one_axis_of_the_data() -> None:
    """Normalization's axis is an int naming an axis of the data and of the input: axis=4 of
    an [N, 3, 4] input was wrapped (4 % 3) to axis 1 and normalized it silently when the
    statistics had 3 values; Keras's axis=None / tuples and an axis the data lacks escaped as
    TypeError / ValueError / numpy's AxisError. The feature axis itself vs numpy float64."""
    rng = np.random.default_rng(4)
    data = (rng.normal(size=(20, 3, 4)) * 3 + 1).astype(np.float32)
    x = gc.input("x", ("N", 3, 4))
    with pytest.raises(gc.ShapeError, match="axis 4 is not an axis"):
        gc.Normalization(axis=4, mean=[0.0, 0.0, 0.0], variance=[1.0, 1.0, 1.0])(x)
    for axis in (None, (1, 2), "1", True):
        with pytest.raises(gc.GraphcError, match="axis must be the int"):
            gc.Normalization(axis=axis)
    with pytest.raises(gc.GraphcError, match="axis 3 is not an axis of the data"):
        gc.Normalization(axis=3).adapt(data)
    d = data.astype(np.float64)
    m = gc.compile(gc.Normalization(axis=np.int64(-2)).adapt(data)(x))
    want = (d - d.mean(axis=(0, 2), keepdims=True)) / d.std(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(m.predict(data), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", [{"opt_level": True}, {"threads": True}, {"threads": False}])
def test_compile_numbers_are_not_bools(option) -> None:
    """opt_level=True compiled at -O1 and threads=True ran 1 thread (True == 1), silently."""
    x = gc.input("x", ("N", 2))
    with pytest.raises(gc.GraphcError, match=next(iter(option))):
        gc.compile(gc.dense(x, 1), **option)
