"""Numbers combined with an i32 tensor become i32 constants (``dsl.const``): comparisons of an
i32 input with whole numbers equal numpy's, and a number that is not a whole int32 is refused
when the graph is built (it was emitted as a float literal into an i32 compare, which LLVM
rejected: CodegenError at compile)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def test_i32_inputs_compare_with_whole_numbers_as_numpy() -> None:
    a = gc.input("a", ("N",), dtype="i32")
    outs = [gc.greater(a, 2), gc.equal(a, 2), gc.less_equal(a, -3), gc.not_equal(-4, a)]
    m = gc.compile(outs, name="i32cmp")
    av = np.array([1, 2, 3, -4, 2**31 - 1, -(2**31)], np.int32)
    got = m.predict(av)
    want = [av > 2, av == 2, av <= -3, av != -4]
    for o, w in zip(outs, want, strict=True):
        np.testing.assert_array_equal(got[o.name], w.astype(np.float32))


@pytest.mark.parametrize("bad", [2.5, float(2**31), -1e12])
def test_a_number_that_is_no_int32_is_refused_with_an_i32_tensor(bad) -> None:
    a = gc.input("a", ("N",), dtype="i32")
    with pytest.raises(gc.ArgumentError, match="not a whole number in int32's range"):
        gc.greater(a, bad)
