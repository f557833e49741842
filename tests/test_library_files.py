"""Loading exported libraries from files that change (#13 item 2) and weights files that are not
regular files (#13 item 17, the C loader)."""

from __future__ import annotations

import gc as pygc
import os
import shutil

import numpy as np
import pytest

import graphc as gc

CC = shutil.which(os.environ.get("CC", "cc") or "cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")


def _mapped(tag: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(tag in line for line in f)


def test_reexported_library_at_the_same_path_serves_the_new_file(tmp_path) -> None:
    x = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(x, 2, name="d"), name="reload")
    path = str(tmp_path / "libreload.so")
    xs = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)

    def reference() -> np.ndarray:  # float64 numpy of the model's current weights
        w = {k: v.astype(np.float64) for k, v in m.params.items()}
        return xs @ w["d.w"] + w["d.b"]

    m.export(path)
    first = gc.load(path)
    old = reference()
    np.testing.assert_allclose(first.predict(xs), old, rtol=1e-5, atol=1e-6)
    m.params["d.w"][...] *= -2.0
    m.params["d.b"][...] = 3.0
    m.export(path)  # same path, new weights
    second = gc.load(path)
    np.testing.assert_allclose(second.predict(xs), reference(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.predict(xs), old, rtol=1e-5, atol=1e-6)  # its own copy
    if os.path.isdir("/proc/self"):
        assert _mapped("graphc-libreload") > 0
        del first, second
        pygc.collect()
        assert _mapped("graphc-libreload") == 0  # dropped libraries are unloaded
