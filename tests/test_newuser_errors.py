"""Mistakes a newcomer makes on day one, each answered by an error that names what to change
(found trying graphc from the README alone, stop 17): an optimizer given as Keras's string or as
the class, outputs and loss swapped, the optimizer in the loss's place, a dict of arrays without
the input's name, a Keras loss name in compile_sequential; and a readable OnnxImport repr."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ArgumentError


def classifier() -> tuple[gc.Tensor, gc.Tensor]:
    x = gc.input("x", ("N", 4))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(x, 3)
    return logits, gc.softmax_cross_entropy(logits, labels)


# stands in for a torch.optim.Adam object, which graphc cannot compile
TorchAdam = type("Adam", (), {"__module__": "torch.optim.adam"})


@pytest.mark.parametrize(
    ("optimizer", "want"),
    [
        ("adam", r"optimizer 'adam' is a string.*pass gc\.Adam\(\.\.\.\)"),
        ("RMSProp", r"string.*pass gc\.RMSprop\(\.\.\.\)"),
        ("adma", r"string.*pass gc\.Adam\(\.\.\.\)"),
        ("nadamax_unknown", r"string.*graphc's: gc\.Adadelta, gc\.Adagrad, gc\.Adam, gc\.AdamW"),
        (gc.SGD, r"the class gc\.SGD, not an optimizer: call it, gc\.SGD\(\)"),
        (TorchAdam(), r"must be a graphc optimizer .*got torch\.optim\.adam\.Adam: pass gc\.Adam"),
    ],
)
def test_an_optimizer_that_is_no_graphc_optimizer_names_the_call_meant(optimizer, want) -> None:
    logits, loss = classifier()
    with pytest.raises(gc.GraphcError, match=want):
        gc.compile(logits, loss, optimizer, name="nu_opt")


def test_outputs_and_loss_swapped_or_the_optimizer_second_get_the_argument_order() -> None:
    logits, loss = classifier()
    with pytest.raises(gc.GraphcError, match=r"must be a scalar.*outputs and loss swapped"):
        gc.compile(loss, logits, name="nu_swap")
    with pytest.raises(gc.GraphcError, match=r"got Adam: the optimizer goes third"):
        gc.compile(logits, gc.Adam(), name="nu_swap")
    y = gc.input("y", ("N", 3))  # a loss that is not scalar, no scalar output: no swap hint
    with pytest.raises(gc.GraphcError, match=r"must be a scalar, got f32\[N,3\] \(\S+\)$"):
        gc.compile(logits, gc.square(logits - y), name="nu_swap")


def test_a_dict_without_the_inputs_name_lists_its_keys() -> None:
    logits, loss = classifier()
    m = gc.compile(logits, loss, name="nu_dict")
    xs = np.zeros((2, 4), np.float32)
    with (
        pytest.warns(UserWarning, match="match no input"),
        pytest.raises(
            ArgumentError,
            match=r"as x has no array for input\(s\) \['x'\] \(its keys: \['features'\]\)",
        ),
    ):
        m.predict({"features": xs})


def test_compile_sequential_names_graphcs_loss_for_a_keras_name_or_a_typo() -> None:
    def net() -> gc.Sequential:
        return gc.Sequential([gc.Dense(8, activation="relu"), gc.Dense(3)])

    with pytest.raises(
        gc.GraphcError, match=r"from_logits=True is graphc's 'softmax_cross_entropy'"
    ):
        gc.compile_sequential(net(), (4,), "sparse_categorical_crossentropy")
    for keras, ours in (("mse", "mean_squared_error"), ("MAE", "mean_absolute_error")):
        with pytest.raises(gc.GraphcError) as err:  # Keras's regression losses take no logits
            gc.compile_sequential(net(), (4,), keras)
        assert f"(Keras's {keras!r} is graphc's {ours!r})" in str(err.value)
        assert "logits" not in str(err.value), str(err.value)
    with pytest.raises(gc.GraphcError, match=r"did you mean 'softmax_cross_entropy'\?"):
        gc.compile_sequential(net(), (4,), "softmax_cross_entrpy")


def test_onnx_import_repr_summarizes_instead_of_printing_every_weight() -> None:
    pytest.importorskip("onnx")
    x = gc.input("x", ("N", 4))
    m = gc.compile(gc.dense(gc.dense(x, 64, activation="relu"), 3), name="nu_repr")
    from graphc.onnx_export import to_onnx_model

    imp = gc.from_onnx(to_onnx_model(m))
    text = repr(imp)
    assert text.startswith("<graphc OnnxImport 'nu_repr' (x: f32[N,4]) -> (")
    assert "4 params, 0 constants (515 values); opset 17>" in text, text
    assert len(text) < 200 and "array(" not in text


def header_output_names(path: str, name: str) -> list[str]:
    """The output arguments of NAME_infer in the header, in order."""
    text = open(path).read()
    sig = re.search(rf"int {name}_infer\(const {name}_ctx \*ctx, int64_t n,(.*?)\);", text, re.S)
    assert sig is not None, text[:2000]
    args = re.findall(r"(?:const )?\w+ \*(\w+), int64_t \w+_len", sig.group(1))
    return [a for a in args if not a.startswith("x")]


@pytest.mark.parametrize("labels_named_y", [False, True])
def test_unnamed_outputs_go_to_onnx_under_the_c_headers_names(tmp_path, labels_named_y) -> None:
    """graphc's own value names ("%8") were the ONNX outputs' names; now the C header's."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if labels_named_y:  # compile_sequential's labels are the input "y": the output is "out"
        net = gc.Sequential([gc.Dense(3)], name="nu_seq")
        m = gc.compile_sequential(net, (4,), "softmax_cross_entropy")
        outs, name = [None], "nu_seq"
    else:
        x = gc.input("x", ("N", 4))
        h = gc.dense(x, 3)
        outs, name = [h, gc.softmax(h, name="probs"), gc.relu(h)], "nu_names"
        m = gc.compile(outs, name=name)
    m.to_onnx(str(tmp_path / "m.onnx"))
    m.export(str(tmp_path / f"lib{name}.so"))
    got = [o.name for o in onnx.load(str(tmp_path / "m.onnx")).graph.output]
    want = header_output_names(str(tmp_path / f"{name}.h"), name)
    assert got == want == (["out"] if labels_named_y else ["y0", "probs", "y2"])
    xs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: xs}
    mine = m.predict(xs)
    mine = list(mine.values()) if isinstance(mine, dict) else [mine]
    for a, b in zip(sess.run(None, feed), mine, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    back = gc.from_onnx(str(tmp_path / "m.onnx"))
    assert [t.name for t in back.outputs] == want


def test_summary_says_its_parameter_bytes_are_the_aligned_region() -> None:
    """The iris net (4-16-3, Normalization) showed "139 (704 B)": 139 float32 are 556 B; the
    704 are the params region, each of its 6 tensors starting on a 64-byte boundary."""
    x = gc.input("x", ("N", 4))
    norm = gc.Normalization(name="feat").adapt(np.arange(12, dtype=np.float32).reshape(3, 4))
    logits = gc.dense(gc.dense(norm(x), 16, activation="tanh"), 3)
    m = gc.compile(logits, name="nu_summary")
    sizes = [a.size * 4 for a in m.params.values()]
    aligned = sum(-(-s // 64) * 64 for s in sizes)
    assert (sum(sizes), aligned) == (556, 704)
    text = m.summary(print_fn=lambda s: None)
    assert f"Parameters: 139 in 6 tensors ({aligned} B, each tensor 64-byte aligned)" in text


@pytest.mark.parametrize("batch", [None, -1])
def test_a_keras_or_torch_batch_dimension_is_answered_with_n(batch) -> None:
    with pytest.raises(
        gc.ShapeError, match=r"bad dimension .* \(the batch size is 'N': Keras's None"
    ):
        gc.input("x", (batch, 4))


def test_a_shape_that_is_one_int_names_the_tuple_meant() -> None:
    # was "'int' object is not iterable"
    with pytest.raises(
        gc.ShapeError, match=r"input 'x': the shape must be a tuple .* \('N', 4\); got 4"
    ):
        gc.input("x", 4)
    with pytest.raises(
        gc.ShapeError, match=r"param 'w': the shape must be a tuple .* \(4,\); got 4"
    ):
        gc.param("w", 4)
    assert gc.input("x", iter(("N", 3))).shape == ("N", 3)  # any iterable, as before


@pytest.mark.parametrize(
    ("call", "want"),
    [
        (
            lambda: gc.param((3, 4)),
            r"^param: needs a name, then the shape: gc\.param\('w', \(3, 4\)\)",
        ),
        (lambda: gc.param(shape=(2,)), r"^param: needs a name.*gc\.param\('w', \(2,\)\)"),
        (lambda: gc.param("w"), r"^param 'w': needs a shape: gc\.param\('w', \(3, 4\)\)"),
        (lambda: gc.input(shape=("N", 4)), r"^input: needs a name.*gc\.input\('x', \('N', 4\)\)"),
        (lambda: gc.input("x"), r"^input 'x': needs a shape: gc\.input\('x', \('N', 4\)\)"),
    ],
)
def test_a_source_without_its_name_or_shape_names_the_call_meant(call, want) -> None:
    # was Python's TypeError "param() missing 1 required positional argument: 'shape'"
    with pytest.raises(gc.GraphcError, match=want) as e:
        call()
    assert isinstance(e.value, TypeError)  # code catching the old TypeError still does
    assert gc.param("w", (3, 4)).shape == (3, 4)  # the usual call, unchanged


def test_dense_on_an_input_without_the_batch_axis_says_how_to_declare_it() -> None:
    x = gc.input("x", (4,))
    with pytest.raises(
        gc.ShapeError, match=r"declare the batch axis: gc\.input\('x', \('N', 4\)\)"
    ):
        gc.dense(x, 3)


def test_a_callback_class_instead_of_a_callback_is_refused_before_training() -> None:
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu_cb")
    before = {k: v.copy() for k, v in m.params.items()}
    xs = np.ones((8, 4), np.float32)
    ys = np.zeros(8, np.int32)
    with pytest.raises(
        gc.GraphcError, match=r"holds the class EarlyStopping, not a callback: call it"
    ):
        m.fit(xs, ys, epochs=1, callbacks=[gc.EarlyStopping], verbose=0)
    assert all(np.array_equal(before[k], m.params[k]) for k in before)


def test_lr_finder_result_prints_one_line_with_its_suggestion() -> None:
    """print(find_lr(...)) printed three lists of 100 floats (~6,000 characters)."""
    from graphc.lr_finder import find_lr

    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu_lr")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, 4)).astype(np.float32)
    ys = (xs[:, 0] > 0).astype(np.int32)
    res = find_lr(m, xs, ys)
    text = repr(res)
    assert len(text) < 160, text
    assert text.startswith(f"LRFinderResult(suggestion={res.suggestion:.3g}, {len(res.lrs)} rates")


def test_a_loaded_library_has_a_repr_like_a_models(tmp_path) -> None:
    """repr(gc.load(...)) was '<graphc.runtime.library.Library object at 0x...>'."""
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu_lib")
    m.export(str(tmp_path / "libnu.so"))
    lib = gc.load(str(tmp_path / "libnu.so"))
    lib.threads = 2
    assert repr(lib) == (
        "<graphc.Library 'nu_lib' libnu.so (x: f32[N,4]) -> y: f32[N,3]; 15 parameters; "
        "entries infer, train_step; 2 thread(s)>"
    )


def test_dump_takes_dim_for_an_onnx_file_with_a_symbolic_sequence(tmp_path, capsys) -> None:
    """The importer's error told to pass --dim, which graphc dump did not have."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from graphc.cli import main

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"])],
        "seqnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", 4])],
    )
    path = str(tmp_path / "seqnet.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["dump", path, "--stage", "forward"]) != 0
    assert "graphc compile (or dump) --dim seq=SIZE" in capsys.readouterr().err
    assert main(["dump", path, "--stage", "forward", "--dim", "seq=5"]) == 0
    assert "x: f32[N,5,4]" in capsys.readouterr().out


def test_export_refuses_one_file_reached_through_a_symlinked_folder(tmp_path) -> None:
    """The header named through a symlink to the library's folder is the library's file: the
    plain-path comparison let it through and the header replaced the library (review rvH)."""
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu")
    (tmp_path / "e").mkdir()
    (tmp_path / "e2").mkdir()
    (tmp_path / "e2" / "link").symlink_to(tmp_path / "e")
    with pytest.raises(ArgumentError, match=r"library and the header would both be written to"):
        m.export(str(tmp_path / "e" / "libnu.so"), header=str(tmp_path / "e2/link/libnu.so"))
    assert list((tmp_path / "e").iterdir()) == []


@pytest.mark.parametrize(
    ("lib", "kw", "roles"),
    [
        ("nu.h", {}, "library and the header"),  # the header's name given as the library's
        ("nu.weights", {"weights": "file"}, "library and the weights file"),
        ("libnu.so", {"header": "libnu.so"}, "library and the header"),
    ],
)
def test_export_refuses_two_of_its_files_on_one_path(tmp_path, lib, kw, roles) -> None:
    """export("iris.h") wrote the library to iris.h, then the header over it."""
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu")
    target = tmp_path / lib
    target.write_bytes(b"the user's file")
    kw = {k: str(tmp_path / v) if k == "header" else v for k, v in kw.items()}
    with pytest.raises(ArgumentError, match=rf"the {roles} would both be written to .*{lib}"):
        m.export(str(target), **kw)
    assert target.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [lib]


def test_a_library_takes_whole_number_float_labels_as_the_model_does(tmp_path) -> None:
    """Model.train_step took labels 0.0, 1.0, 2.0 (read from a CSV); the same call on its
    exported library raised 'expects integers (i32), got float32'."""
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu_lab")
    m.export(str(tmp_path / "libnu_lab.so"))
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((6, 4)).astype(np.float32)
    ys = np.array([0, 2, 1, 1, 0, 2], np.int32)
    as_ints, as_floats = (gc.load(str(tmp_path / "libnu_lab.so")) for _ in range(2))
    want = as_ints.train_step(xs, ys)
    assert as_floats.train_step(xs, ys.astype(np.float32)) == want == m.train_step(xs, ys)
    for k in as_ints.params:
        np.testing.assert_array_equal(as_floats.params[k], as_ints.params[k])
    with pytest.raises(ArgumentError, match=r"'labels' holds class labels: .* not whole numbers"):
        as_floats.train_step(xs, ys + 0.5)
    huge = ys.astype(np.float32)
    huge[3] = 1e30  # a whole number past int64: the cast gave -2**63 and the refusal named it
    for call in (lambda: as_floats.train_step(xs, huge), lambda: m.train_step(xs, huge)):
        with pytest.raises(ArgumentError, match=r"1e\+30"):
            call()


def test_boolean_targets_and_swapped_input_arguments_name_the_fix(tmp_path) -> None:
    x = gc.input("x", ("N", 4))
    t = gc.input("t", ("N", 1))
    logit = gc.dense(x, 1)
    m = gc.compile(logit, gc.binary_cross_entropy(logit, t), gc.SGD(lr=0.1), name="nu_bool")
    xs = np.ones((4, 4), np.float32)
    ts = np.array([True, False, True, True])
    lib = gc.load(m.export(str(tmp_path / "libnu_bool.so")).library)
    for call in (lambda: m.train_step(xs, ts), lambda: lib.train_step(xs, ts)):
        with pytest.raises(ArgumentError, match=r"got dtype bool \(booleans: pass a\.astype"):
            call()
    assert np.isfinite(m.train_step(xs, ts.astype(np.float32)))
    with pytest.raises(gc.GraphcError, match=r"the name comes first.*gc\.input\('x', \('N', 4\)\)"):
        gc.input(("N", 4), "x")


def test_a_checkpoint_given_to_a_librarys_load_weights_is_named(tmp_path) -> None:
    logits, loss = classifier()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="nu_w")
    lib = gc.load(m.export(str(tmp_path / "libnu_w.so")).library)
    m.save(str(tmp_path / "ck.npz"))
    with pytest.raises(gc.CheckpointError, match=r"zip archive, a graphc checkpoint .*set_weights"):
        lib.load_weights(str(tmp_path / "ck.npz"))
    lib.set_weights(m.get_weights())  # the way the message gives
    xs = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(lib.predict(xs), m.predict(xs))
