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


def test_a_failed_embedding_call_leaves_its_ids_unchanged():
    """On graphc@d6646c0 gc.embedding wrote the range 0 .. 2 into ids before the table's dtype
    was checked: after the failed call a valid embedding of 10 rows refused id 5 naming the
    embedding that does not exist."""
    ids = gc.input("ids", ("N",), dtype="i32")
    before = dict(ids.node.attrs)
    with pytest.raises(gc.ShapeError, match="f16"):
        gc.embedding(ids, 3, 2, name="bad", dtype="f16")
    assert dict(ids.node.attrs) == before
    e = gc.embedding(ids, 10, 2, name="good", dtype="f64")
    m = gc.compile(e, None, name="emb_after_failed")
    iv = np.array([1, 5, 9], np.int32)
    np.testing.assert_array_equal(m.predict(iv), m.params["good.table"][iv])
    with pytest.raises(gc.ArgumentError, match=r"holds 10.*embedding good: 0 \.\. 9"):
        m.predict(np.array([10], np.int32))


def test_two_embeddings_of_one_input_name_both_and_the_narrower_range():
    """The refusal named only the first (wider) embedding, "big: 0 .. 9", for an id refused by
    the second's 0 .. 3; a shared gc.Embedding layer on two inputs named a table that does not
    exist ("embedding5") for its second input."""
    ids = gc.input("ids", ("N",), dtype="i32")
    big = gc.embedding(ids, 10, 2, name="big", dtype="f64")
    small = gc.embedding(ids, 4, 3, name="small", dtype="f64")
    m = gc.compile([big, small], None, name="emb_two")
    iv = np.array([0, 3, 2], np.int32)
    got = m.predict(iv)
    np.testing.assert_array_equal(got[big.name], m.params["big.table"][iv])
    np.testing.assert_array_equal(got[small.name], m.params["small.table"][iv])
    with pytest.raises(gc.ArgumentError, match=r"big: 0 \.\. 9.*small: 0 \.\. 3.*0 \.\. 3"):
        m.predict(np.array([1, 5], np.int32))
    a = gc.input("a", ("N",), dtype="i32")
    b = gc.input("b", ("N",), dtype="i32")
    layer = gc.Embedding(6, 2, dtype="f64")
    ea, eb = layer(a), layer(b)
    shared = gc.compile([ea, eb], None, name="emb_shared")
    (table,) = [k for k in shared.params if k.endswith(".table")]
    owner = table.removesuffix(".table")
    for t in (a, b):
        assert dict(t.node.attrs)["index_note"] == f"the rows of embedding {owner}: 0 .. 5"
    with pytest.raises(gc.ArgumentError, match=rf"'b'.*holds 6.*embedding {owner}: 0 \.\. 5"):
        shared.predict({"a": np.array([1], np.int32), "b": np.array([6], np.int32)})


def test_transpose_name_and_refusal_and_layer_norm_repr():
    """gc.transpose(x, perm, name=) dropped the name except for the 2-D reversal; its refusal of
    a non-permutation did not name x; LayerNorm(axes=np.array([1, 2])) worked but its repr
    raised numpy's ambiguous-truth ValueError."""
    x = gc.input("x", ("N", 2, 3), dtype="f64")
    p = gc.param("p", (2, 3), dtype="f64")
    t = gc.transpose(x * p, (0, 2, 1), name="tt")
    same = gc.transpose(x, (0, 1, 2), name="same")
    assert (t.name, same.name, t.shape, same.shape) == ("tt", "same", ("N", 3, 2), ("N", 2, 3))
    m = gc.compile([t, same], None, name="named_transpose")
    xv = np.arange(12.0).reshape(2, 2, 3) - 5.0
    got = m.predict(xv)
    np.testing.assert_array_equal(got["tt"], np.transpose(xv * m.params["p"], (0, 2, 1)))
    np.testing.assert_array_equal(got["same"], xv)
    with pytest.raises(gc.ShapeError, match=r"not a permutation .*\(x\)"):
        gc.transpose(x, (0, 1))
    ln = gc.LayerNorm(axes=np.array([1, 2]))
    assert repr(ln) == "LayerNorm(eps=1e-05, axes=array([1, 2]))"
    assert repr(gc.LayerNorm()) == "LayerNorm(eps=1e-05)"
    assert repr(gc.LayerNorm(axes=(1, 2))) == "LayerNorm(eps=1e-05, axes=(1, 2))"


def test_pow_exponents_and_number_to_a_tensor_power():
    """x ** np.complex128(2) was accepted (its imaginary part dropped with a warning) while a
    Fraction or a 0-d array exponent, accepted by graphc@a883aa2, was refused; 2 ** i was
    refused naming a constant 0.693.. the user never wrote; 1 ** x was NaN at x = +-inf and
    inf ** x NaN at x = 0, where numpy gives 1."""
    from fractions import Fraction

    x = gc.input("x", ("N", 5), dtype="f64")
    y = gc.pow(x, Fraction(1, 2)) + x ** np.array(2.0) + 1**x + 2.0**x + 0.5**x
    xv = np.array([[0.0, 2.0, np.inf, -np.inf, np.nan], [4.0, 0.25, 1.0, 9.0, 3.0]])
    got = gc.compile(y, None, name="pow_forms").predict(xv)
    with np.errstate(invalid="ignore"):
        want = xv**0.5 + xv**2.0 + 1.0**xv + 2.0**xv + 0.5**xv
    np.testing.assert_allclose(got, want, rtol=1e-14)
    one = gc.compile(1**x, None, name="pow_one").predict(xv[:1])
    np.testing.assert_array_equal(one, np.ones((1, 5)))  # numpy: 1 ** inf = 1 ** nan = 1
    for e in (np.complex128(2), 1j, "2"):
        with pytest.raises(gc.OptionTypeError, match="must be a number, a real one"):
            _ = x**e
    for base in (float("inf"), float("nan"), 0.0, -2.0):
        with pytest.raises(gc.ArgumentError, match=r"a number > 0 \(finite\)"):
            _ = base**x
    i = gc.input("i", ("N", 2), dtype="i32")
    with pytest.raises(gc.ArgumentError, match=r"2 \*\* i: the exponent must be a float tensor"):
        _ = 2**i


def test_getitem_checks_the_key_kind_on_every_axis():
    """On the batch axis an array index raised numpy's ambiguous-truth ValueError and a list
    or a Tensor the batch-axis ShapeError; a float slice bound raised Python's TypeError naming
    no tensor; x[0:] and x[::1], the whole batch axis, were refused."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    for key in (np.array([0, 1]), [0, 1], x, (slice(None), [0, 1]), True):
        with pytest.raises(gc.ArgumentError, match=r"x\[.*graphc indexes with ints"):
            x[key]
    for key in ((slice(None), slice(1.0, 3)), (slice(None), slice(None, None, 0))):
        with pytest.raises(gc.ArgumentError, match=r"x\[.*axis 1 of f64\[N,3,4\]: its bounds"):
            x[key]
    for key in (slice(1, None), -1, slice(None, None, -1)):
        with pytest.raises(gc.ShapeError, match="batch dimension N"):
            x[key]
    y = x[0:, 1] + x[::1, -1] + x[0 : 1 << 62, 0]
    xv = np.arange(24.0).reshape(2, 3, 4)
    got = gc.compile(y, None, name="getitem_whole_n").predict(xv)
    np.testing.assert_array_equal(got, xv[:, 1] + xv[:, -1] + xv[:, 0])
