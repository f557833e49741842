"""ONNX Resize (and Upsample) as ONNX Runtime computes it: modes nearest, linear and cubic,
every coordinate_transformation_mode (tf_crop_and_resize's regions and extrapolation
included), antialias, every nearest_mode, scales and
sizes (axes, keep_aspect_ratio_policy), downscales, Resize-10 and Upsample; the gradient of a
linear resize; named refusals of what graphc does not import. Public reports of the class:
https://github.com/onnx/onnx/issues/2462 (the reference's align_corners over the unrounded
length, where ONNX Runtime meets the corners), https://github.com/microsoft/onnxruntime/issues/11496
(ONNX Runtime against the reference and torch for bicubic), and
https://github.com/tracel-ai/burn-onnx/issues/173 (a frontend resizing align_corners files
with half_pixel: Depth-Anything-v2 off by 1.08)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError
from graphc.onnx_backend import GraphcRep

N = helper.make_node
SHAPE = (3, 4, 5)  # C, H, W after the batch axis
COORDS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric"]
SCALES = [[2.0, 1.5], [0.5, 0.6], [3.0, 0.4], [1.0, 2.3]]


def _model(nodes, outs, inits, opset: int = 19, shape=SHAPE):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], ys, inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    m.ir_version = 9
    return m


def _f32(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _i64(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _ort(m, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _x(shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)


def _kept_ratio(sizes: str, out: str, mode: str, policy: str):
    """A Resize of axes 2 and 3 to ``sizes`` under keep_aspect_ratio_policy ``policy``."""
    ins = ["x", "", "", sizes]
    return N("Resize", ins, [out], mode=mode, axes=[2, 3], keep_aspect_ratio_policy=policy)


def _check(m, outs, exact: bool, mode: str = "compile") -> None:
    """graphc's outputs of ``m`` against ONNX Runtime's: compiled, or (for the long sweeps of
    modes, whose LLVM compile would take seconds) run by graphc's graph interpreter on the
    same imported graph."""
    x = _x([d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]])
    if mode == "compile":
        got = gc.from_onnx(m).compile().predict(x)
        got = got if isinstance(got, dict) else {outs[0]: got}
    else:
        got = dict(zip(outs, GraphcRep(m, mode="interpret").run({"x": x})))
    for name, want in zip(outs, _ort(m, x)):
        g = np.asarray(got[name])
        assert g.shape == want.shape, (name, g.shape, want.shape)
        if exact:
            np.testing.assert_array_equal(g, want, err_msg=name)
        else:
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5, err_msg=name)


def _check_compiled(nodes, inits, some: list[str], shape=SHAPE) -> None:
    """_check of the outputs ``some`` of a sweep's nodes, compiled (a few of each sweep: the
    LLVM compile of every output would take seconds)."""
    kept = [n for n in nodes if n.output[0] in some]
    used = {i for n in kept for i in n.input}
    m = _model(kept, some, [t for t in inits if t.name in used], shape=shape)
    _check(m, some, exact=False)


def test_nearest_picks_onnxruntime_elements_in_every_mode() -> None:
    """Every coordinate_transformation_mode x nearest_mode x up/down scale: the elements ONNX
    Runtime picks. Before, graphc ran onnx.reference's float64 arithmetic, which differs where a
    coordinate lies on a rounding boundary ((1 + 0.5) / 0.6 - 0.5 is 2 in float32, 1.9999 in
    float64: floor picks element 1, not 2) and maps align_corners over the unrounded length
    (9 of these 120 outputs differed, silently)."""
    nodes, outs, inits = [], [], []
    for nm in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        for ct in COORDS:
            for k, sc in enumerate(SCALES[:3]):
                name = f"y_{nm}_{ct}_{k}"
                inits.append(_f32(f"s_{name}", [1, 1, *sc]))
                attrs = {"coordinate_transformation_mode": ct, "nearest_mode": nm}
                nodes.append(N("Resize", ["x", "", f"s_{name}"], [name], mode="nearest", **attrs))
                outs.append(name)
    # tf_half_pixel_for_nn (opsets 11 to 18), sizes, axes and keep_aspect_ratio_policy
    nodes.append(N("Resize", ["x", "", "", "z1"], ["y_axes"], mode="nearest", axes=[3, 2]))
    nodes.append(_kept_ratio("z2", "y_ratio", "nearest", "not_larger"))
    inits += [_i64("z1", [7, 3]), _i64("z2", [7, 7])]
    outs += ["y_axes", "y_ratio"]
    _check(_model(nodes, outs, inits), outs, exact=True, mode="interpret")
    m = _model(
        [N("Resize", ["x", "", "s"], ["y"], coordinate_transformation_mode="tf_half_pixel_for_nn")],
        ["y"],
        [_f32("s", [1, 1, 0.6, 2.5])],
        opset=13,
    )
    _check(m, ["y"], exact=True, mode="interpret")


def test_linear_and_cubic_match_onnxruntime() -> None:
    """Modes linear and cubic (exclude_outside 0 and 1, cubic_coeff_a) in every coordinate mode,
    up and down, scales and sizes (axes, keep_aspect_ratio_policy not_smaller): ONNX Runtime's
    values within float32 rounding. Before, both modes were refused ('graphc imports
    nearest-neighbour resizing only'): torch's F.interpolate(mode='bilinear' / 'bicubic') and
    Keras's UpSampling2D(interpolation='bilinear') files did not import."""
    nodes, outs, inits = [], [], []
    for mode, ex, cts, scales in [
        ("linear", 0, COORDS, SCALES),
        ("cubic", 0, COORDS, SCALES[:2]),
        ("cubic", 1, COORDS[:3], SCALES[1:3]),
    ]:
        for ct in cts:
            for k, sc in enumerate(scales):
                name = f"y_{mode}{ex}_{ct}_{k}"
                inits.append(_f32(f"s_{name}", [1, 1, *sc]))
                attrs = {"coordinate_transformation_mode": ct, "exclude_outside": ex}
                nodes.append(N("Resize", ["x", "", f"s_{name}"], [name], mode=mode, **attrs))
                outs.append(name)
    nodes.append(N("Resize", ["x", "", "sa"], ["y_a"], mode="cubic", cubic_coeff_a=-0.5))
    nodes.append(_kept_ratio("z", "y_sizes", "linear", "not_smaller"))
    inits += [_f32("sa", [1, 1, 2, 2]), _i64("z", [7, 7])]
    outs += ["y_a", "y_sizes"]
    _check(_model(nodes, outs, inits), outs, exact=False, mode="interpret")
    _check_compiled(nodes, inits, ["y_linear0_half_pixel_1", "y_cubic1_align_corners_0", "y_sizes"])


@pytest.mark.parametrize(
    "op, opset, mode, scales",
    [
        ("Upsample", 9, "linear", [1, 1, 2, 1.5]),
        ("Resize", 10, "nearest", [1, 1, 0.5, 0.6]),  # Resize-10 downscales (ceil of x / s)
        ("Resize", 10, "linear", [1, 1, 1.5, 0.6]),
    ],
)
def test_upsample_and_resize_10_match_onnxruntime(op, opset, mode, scales) -> None:
    """Upsample and Resize-10 (asymmetric coordinates; nearest truncates, or takes the ceiling
    when downscaling). Before: Upsample linear was refused, Resize-10 refused any scale below 1."""
    m = _model([N(op, ["x", "s"], ["y"], mode=mode)], ["y"], [_f32("s", scales)], opset=opset)
    _check(m, ["y"], exact=mode == "nearest", mode="interpret")


def test_bilinear_gradient_matches_onnxruntime_transpose() -> None:
    """d/dW of sum(u * Resize_linear(x * W)): x * R^T u, where R's columns are ONNX Runtime's
    resize of each unit input (an independent linear map)."""
    x = _x()[:1]
    w0 = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    resize = N(
        "Resize",
        ["h", "", "s"],
        ["y"],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )
    scales = _f32("s", [1, 1, 1.5, 2.2])
    m = _model(
        [N("Mul", ["x", "W"], ["h"]), resize], ["y"], [numpy_helper.from_array(w0, "W"), scales]
    )
    imp = gc.from_onnx(m, trainable={"W"})
    out_shape = imp.outputs[0].shape[1:]
    u = np.random.default_rng(5).standard_normal(out_shape).astype(np.float32)
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grad = next(iter(model.gradients(x).values()))
    basis = np.eye(int(np.prod(SHAPE)), dtype=np.float32).reshape(-1, *SHAPE)
    r = _ort(
        _model(
            [
                N(
                    "Resize",
                    ["x", "", "s"],
                    ["y"],
                    mode="linear",
                    coordinate_transformation_mode="align_corners",
                )
            ],
            ["y"],
            [scales],
        ),
        basis,
    )[0]
    rt_u = np.tensordot(r.astype(np.float64), u.astype(np.float64), axes=3).reshape(SHAPE)
    np.testing.assert_allclose(grad, x[0].astype(np.float64) * rt_u, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "attrs, says",
    [
        ({"mode": "nearest", "antialias": 1}, "antialias=1 applies to modes linear and cubic"),
        (
            {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
            "needs its region of interest",
        ),
        (
            {"mode": "linear", "exclude_outside": 1},
            r"exclude_outside=1 applies to mode 'cubic' \(or",
        ),
        ({"mode": "area"}, "mode 'area' is not one of nearest, linear, cubic"),
    ],
)
def test_unsupported_resizes_are_refused_by_name(attrs, says) -> None:
    m = _model(
        [N("Resize", ["x", "", "s"], ["y"], name="up", **attrs)],
        ["y"],
        [_f32("s", [1, 1, 0.5, 0.5])],
    )
    with pytest.raises(OnnxError, match=r"node 0 'up' \(Resize, opset 19\).*" + says):
        gc.from_onnx(m)


def test_crop_and_resize_matches_onnxruntime() -> None:
    """tf_crop_and_resize (TensorFlow's crop_and_resize as tf2onnx writes it): the region of
    interest per axis (inside, reaching past the input, reversed), extrapolation_value where a
    coordinate leaves the input, in the three modes, up and down; roi for the axes attribute.
    Before: refused ('tf_crop_and_resize is not supported')."""
    rois = [[0, 0, 0.2, 0.1, 1, 1, 0.8, 0.9], [0, 0, -0.3, 0.4, 1, 1, 1.2, 0.6]]
    rois.append([0, 0, 0.9, 0.1, 1, 1, 0.1, 0.9])
    nodes, outs, inits = [], [], []
    for mode in ("nearest", "linear", "cubic"):
        for k, roi in enumerate(rois):
            for j, sc in enumerate([[2.0, 1.5], [0.5, 0.6]]):
                name = f"y_{mode}_{k}_{j}"
                inits += [_f32(f"r_{name}", roi), _f32(f"s_{name}", [1, 1, *sc])]
                attrs = {"coordinate_transformation_mode": "tf_crop_and_resize"}
                ins = ["x", f"r_{name}", f"s_{name}"]
                nodes.append(N("Resize", ins, [name], mode=mode, extrapolation_value=-3.5, **attrs))
                outs.append(name)
    attrs = {"coordinate_transformation_mode": "tf_crop_and_resize", "axes": [3, 2]}
    nodes.append(N("Resize", ["x", "ra", "", "za"], ["y_axes"], mode="linear", **attrs))
    inits += [_f32("ra", [0.1, -0.2, 0.7, 1.3]), _i64("za", [6, 3])]
    outs.append("y_axes")
    _check(_model(nodes, outs, inits), outs, exact=False, mode="interpret")
    _check_compiled(nodes, inits, ["y_linear_1_0", "y_nearest_2_1"])


def test_antialias_matches_onnxruntime() -> None:
    """antialias=1 (torch's F.interpolate(antialias=True) at opset 18): linear and cubic,
    exclude_outside 0 (the weights past the input added to the edge element) and 1 (dropped),
    down and up, every coordinate mode but tf_crop_and_resize (covered above). Before: refused
    ('antialias=1 is not supported')."""
    nodes, outs, inits = [], [], []
    for mode in ("linear", "cubic"):
        for ct in COORDS[:3]:
            for j, sc in enumerate([[0.5, 0.6], [0.25, 1.7]]):
                for ex in (0, 1):
                    name = f"y_{mode}_{ct}_{j}_{ex}"
                    inits.append(_f32(f"s_{name}", [1, 1, *sc]))
                    attrs = {"coordinate_transformation_mode": ct, "exclude_outside": ex}
                    ins = ["x", "", f"s_{name}"]
                    nodes.append(N("Resize", ins, [name], mode=mode, antialias=1, **attrs))
                    outs.append(name)
    shape = (3, 8, 9)
    _check(_model(nodes, outs, inits, shape=shape), outs, exact=False, mode="interpret")
    _check_compiled(nodes, inits, ["y_linear_half_pixel_1_0", "y_cubic_align_corners_0_1"], shape)


@pytest.mark.parametrize(
    "mode, scale, most",
    [
        ("nearest", 2, 20),
        ("linear", 2, 80),
        ("cubic", 2, 150),
        ("nearest", 1.5, 40),
        ("linear", 1.5, 120),
    ],
)
def test_an_integer_upscale_composes_few_ops(mode, scale, most) -> None:
    """A 2x upscale of 56 x 56 picks each element twice per tap: graphc's _take copies the
    distinct elements by a concat along a new axis instead of a slice per element (before:
    117 / 245 / 491 graph nodes, 24 s / 62 s to compile nearest / bilinear; now 7 / 57 / 103
    nodes, 0.3 s / 1.7 s); a 1.5x one repeats a pattern of 3 picks, taken phase by phase.
    Counted as graph nodes, not timed."""
    from graphc.dsl import collect_graph

    m = _model(
        [N("Resize", ["x", "", "s"], ["y"], mode=mode)],
        ["y"],
        [_f32("s", [1, 1, scale, scale])],
        shape=(2, 56, 56),
    )
    imp = gc.from_onnx(m)
    assert len(collect_graph("g", imp.outputs).nodes) <= most


def test_periodic_and_repeated_picks_match_numpy_take() -> None:
    """_take's shortcuts (repeated runs; a pattern of P picks shifted by Q, as a rational
    resize's indices) against numpy's take: random periodic index lists with clamped ends and
    arbitrary prefixes and suffixes, read by a Gather of a computed value."""
    rng = np.random.default_rng(5)
    size, cases = 40, []
    for _ in range(20):
        p, q, reps = int(rng.integers(2, 6)), int(rng.integers(-3, 5)), int(rng.integers(3, 8))
        pat = rng.integers(0, size, p)
        body = [int(np.clip(pat[j] + k * q, 0, size - 1)) for k in range(reps) for j in range(p)]
        pre = rng.integers(0, size, int(rng.integers(0, 4))).tolist()
        cases.append(pre + body + rng.integers(0, size, int(rng.integers(0, 4))).tolist())
    cases += [
        [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 10, 11],
        [0] * 3 + list(range(1, 30)),
    ]
    nodes = [N("Add", ["x", "z"], ["h"])]
    inits = [_f32("z", [0.0])]
    for k, idx in enumerate(cases):
        inits.append(_i64(f"i{k}", idx))
        nodes.append(N("Gather", ["h", f"i{k}"], [f"g{k}"], axis=2))
    outs = [f"g{k}" for k in range(len(cases))]
    x = rng.standard_normal((2, 2, size)).astype(np.float32)
    got = gc.from_onnx(_model(nodes, outs, inits, shape=(2, size))).compile().predict(x)
    for k, idx in enumerate(cases):
        np.testing.assert_array_equal(got[f"g{k}"], np.take(x, idx, axis=2), err_msg=str(idx))
