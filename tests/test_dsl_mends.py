"""Review rvD's findings on the DSL's operators and embedding (graphc.dsl, graphc.functional):
state left changed by a failed call, misleading or missing errors, docstrings that said
something false. References: numpy float64."""

import numpy as np
import pytest

import graphc as gc


def test_eq_ne_against_a_number_is_refused_naming_the_mask_functions():
    """x == 0 / x != 0 were Python's identity (False / True silently) on graphc@d6646c0, and
    gc.where(x == 0, ..) then crashed in float() naming nothing. Between Tensors == stays
    identity (hashing); against a number or an array it is refused naming gc.equal."""
    x = gc.input("x", ("N", 3), dtype="f64")
    y = x * 2.0
    for bad, fn in (
        (lambda: x == 0, "equal"),
        (lambda: 0.5 == x, "equal"),  # noqa: SIM300 (the reflected operator)
        (lambda: x != np.float64(0), "not_equal"),
        (lambda: x == np.zeros(3), "equal"),
    ):
        with pytest.raises(gc.ArgumentError, match=rf"gc\.{fn}\(x, y\)"):
            bad()
    with pytest.raises(gc.ArgumentError, match=r"where: cond must be a graphc Tensor.*gc\.equal"):
        gc.where(x == y, x, 1.0)
    with pytest.raises(gc.ArgumentError, match=r"not_equal"):
        _ = x * (x != y)
    assert x == x and x != y and len({x, x, y}) == 2 and {x: 1, y: 2}[y] == 2
    assert x != "x" and x != None  # noqa: E711 (identity against a non-number stays)
    z = gc.where(gc.equal(x, 0.0), 1.0, x) + gc.not_equal(x, y)
    xv = np.array([[0.0, -1.5, 2.0], [0.0, 0.0, 3.0]])
    got = gc.compile(z, None, name="eq_masks").predict(xv)
    np.testing.assert_array_equal(got, np.where(xv == 0, 1.0, xv) + (xv != 2 * xv))
