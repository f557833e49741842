"""ONNX GridSample (torch's F.grid_sample, spatial transformers), opsets 16 and 20, against
ONNX Runtime: every mode (nearest, linear / bilinear, cubic / bicubic), padding_mode (zeros,
border, reflection) and align_corners, 2-D and 3-D, with grids reaching far past the input
and coordinates on exact pixel centres and halves (nearest's ties to even); a grid computed
from the input (theta -> AffineGrid); the gradient to the input and to the grid against
central differences of a float64 numpy forward; refusals by name (ONNX's node tests run in
tests/test_onnx.py). Before, GridSample was refused ('not supported by graphc')."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

N = helper.make_node
F = TensorProto.FLOAT


def _model(nodes, inputs, outs, inits=(), opset: int = 20):
    return make_model(nodes, inputs, outs, inits, opset)


def _check(m, feeds) -> None:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = gc.from_onnx(m).compile().predict(feeds)
    outs = [o.name for o in m.graph.output]
    got = got if isinstance(got, dict) else {outs[0]: got}
    for name, w in zip(outs, want):
        np.testing.assert_allclose(got[name], w, rtol=2e-5, atol=2e-5, err_msg=name)


def _grid(rng, shape) -> np.ndarray:
    """Positions in -1.6 .. 1.6 (past the input on every side), a quarter of them snapped to
    multiples of 1/8 (pixel centres and halves: floor's and nearbyint's ties)."""
    g = rng.uniform(-1.6, 1.6, shape)
    snap = rng.random(shape) < 0.25
    return np.where(snap, np.round(g * 8) / 8, g).astype(np.float32)


@pytest.mark.parametrize("opset", [16, 20])
def test_every_mode_padding_and_alignment_matches_onnxruntime(opset: int) -> None:
    rng = np.random.default_rng(opset)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    grid = _grid(rng, (2, 3, 6, 2))
    modes = ("bilinear", "nearest", "bicubic") if opset == 16 else ("linear", "nearest", "cubic")
    nodes, outs = [], []
    for mode in modes:
        for pad in ("zeros", "border", "reflection"):
            for align in (0, 1):
                name = f"{mode}_{pad}_{align}"
                nodes.append(
                    N(
                        "GridSample",
                        ["x", "grid"],
                        [name],
                        mode=mode,
                        padding_mode=pad,
                        align_corners=align,
                    )
                )
                outs.append(name)
    nodes.append(N("GridSample", ["x", "grid"], ["default"]))
    m = _model(
        nodes, [("x", ["N", 3, 4, 5]), ("grid", ["N", 3, 6, 2])], outs + ["default"], opset=opset
    )
    _check(m, {"x": x, "grid": grid})


def test_volumetric_matches_onnxruntime() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 3, 4, 3)).astype(np.float32)
    grid = _grid(rng, (2, 2, 3, 2, 3))
    nodes, outs = [], []
    for mode in ("linear", "nearest"):
        for pad in ("zeros", "border", "reflection"):
            for align in (0, 1):
                outs.append(f"{mode}_{pad}_{align}")
                nodes.append(
                    N(
                        "GridSample",
                        ["x", "grid"],
                        [outs[-1]],
                        mode=mode,
                        padding_mode=pad,
                        align_corners=align,
                    )
                )
    m = _model(nodes, [("x", ["N", 2, 3, 4, 3]), ("grid", ["N", 2, 3, 2, 3])], outs)
    _check(m, {"x": x, "grid": grid})


def test_affine_grid_and_a_spatial_transformer_match_onnxruntime() -> None:
    """AffineGrid of a theta input (2-D and 3-D, align_corners 0 and 1; size's N the batch
    size from Shape), and the spatial transformer torch 2.13 exports at opset 20: theta =
    Gemm(flatten(x)) -> AffineGrid -> GridSample of x."""
    rng = np.random.default_rng(5)
    t2 = (np.eye(2, 3) + rng.uniform(-0.3, 0.3, (3, 2, 3))).astype(np.float32)
    t3 = (np.eye(3, 4) + rng.uniform(-0.3, 0.3, (3, 3, 4))).astype(np.float32)
    x = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    w = rng.uniform(-0.05, 0.05, (40, 6)).astype(np.float32)
    bias = np.array([0.9, 0.1, 0.05, -0.1, 1.1, 0.02], np.float32)
    inits = [
        numpy_helper.from_array(np.array([5, 2, 3], np.int64), "s2"),
        numpy_helper.from_array(np.array([5, 4, 2, 3], np.int64), "s3"),
        numpy_helper.from_array(np.array([2, 6, 7], np.int64), "sx"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "t_shape"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [
        N("Shape", ["t2"], ["shape"]),
        N("Gather", ["shape", "zero"], ["n"], axis=0),
        N("Concat", ["n", "s2"], ["size2"], axis=0),
        N("Concat", ["n", "s3"], ["size3"], axis=0),
        N("Concat", ["n", "sx"], ["sizex"], axis=0),
        N("AffineGrid", ["t2", "size2"], ["g2"]),
        N("AffineGrid", ["t2", "size2"], ["g2a"], align_corners=1),
        N("AffineGrid", ["t3", "size3"], ["g3"]),
        N("AffineGrid", ["t3", "size3"], ["g3a"], align_corners=1),
        N("Flatten", ["x"], ["flat"]),
        N("Gemm", ["flat", "w", "b"], ["th"]),
        N("Reshape", ["th", "t_shape"], ["theta"]),
        N("AffineGrid", ["theta", "sizex"], ["grid"]),
        N("GridSample", ["x", "grid"], ["stn"]),
    ]
    inputs = [("t2", ["N", 2, 3]), ("t3", ["N", 3, 4]), ("x", ["N", 2, 4, 5])]
    m = _model(nodes, inputs, ["g2", "g2a", "g3", "g3a", "stn"], inits)
    _check(m, {"t2": t2, "t3": t3, "x": x})


def _bilinear64(x, grid):
    """F.grid_sample(x, grid, 'bilinear', 'zeros', align_corners=False) in float64 loops."""
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    y = np.zeros((n, c, ho, wo))
    for b, i, j in np.ndindex(n, ho, wo):
        px = ((grid[b, i, j, 0] + 1) * w - 1) / 2
        py = ((grid[b, i, j, 1] + 1) * h - 1) / 2
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        for yy, wy in ((y0, y0 + 1 - py), (y0 + 1, py - y0)):
            for xx, wx in ((x0, x0 + 1 - px), (x0 + 1, px - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    y[b, :, i, j] += wy * wx * x[b, :, yy, xx]
    return y


def test_gradient_to_the_input_and_the_grid() -> None:
    """d/dW and d/dG of sum(u * GridSample(x * W, G + x_g)) (W [2, 3, 4] and an offset G of
    the grid trainable), bilinear with zero padding, against central differences of a float64
    loop (grid positions kept off the pixel lines, where the weights have kinks)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    w0 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    xg = _grid(rng, (1, 2, 3, 2)) * 0.7
    g0 = (rng.uniform(-0.3, 0.3, (2, 3, 2))).astype(np.float32)
    u = rng.standard_normal((1, 2, 2, 3))
    nodes = [
        N("Mul", ["x", "W"], ["xw"]),
        N("Add", ["xg", "G"], ["grid"]),
        N("GridSample", ["xw", "grid"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w0, "W"), numpy_helper.from_array(g0, "G")]
    imp = gc.from_onnx(
        _model(nodes, [("x", ["N", 2, 3, 4]), ("xg", ["N", 2, 3, 2])], ["y"], inits),
        trainable={"W", "G"},
    )
    loss = gc.sum(imp.outputs[0] * gc.constant(u.astype(np.float32)))
    grads = imp.compile(loss, gc.SGD(0.1)).gradients({"x": x, "xg": xg})

    def f(w, g) -> float:
        return float((u * _bilinear64(x * w, xg + g)).sum())

    for k, name in enumerate("WG"):
        got = next(v for n, v in grads.items() if n.endswith(name))
        np.testing.assert_allclose(
            got, numeric_grad(f, [w0, g0], k), rtol=1e-3, atol=1e-4, err_msg=name
        )


def test_refusals_name_the_node() -> None:
    grid = numpy_helper.from_array(np.zeros((1, 2, 2, 2), np.float32), "c")
    cases = [
        (N("GridSample", ["x", "c"], ["y"], name="s"), [("x", ["N", 1, 3, 3])], 20, "batch size"),
        (
            N("GridSample", ["x", "g"], ["y"], mode="linear", name="s"),
            [("x", ["N", 1, 3, 3]), ("g", ["N", 2, 2, 2])],
            16,
            "mode 'linear'",
        ),
        (
            N("GridSample", ["x", "g"], ["y"], mode="cubic", name="s"),
            [("x", ["N", 1, 3, 3, 3]), ("g", ["N", 2, 2, 2, 3])],
            20,
            "cubic sampling of a 3-D",
        ),
        (
            N("GridSample", ["x", "g"], ["y"], name="s"),
            [("x", ["N", 64, 64, 64]), ("g", ["N", 64, 64, 2])],
            20,
            "densely",
        ),
    ]
    for node, inputs, opset, why in cases:
        with pytest.raises(gc.OnnxError, match=r"'s' \(GridSample") as e:
            gc.from_onnx(_model([node], inputs, ["y"], [grid], opset))
        assert e.match(why), str(e.value)
