"""pack_signs / unpack_signs: JIT against the NumPy oracles, round trips, bit order, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import sign_arrays
from tinycomp_kernels import bits
from tinycomp_kernels.bits import (_pack_signs_loops, _unpack_signs_loops, n_words, pack_signs,
                                   pack_signs_ref, unpack_signs, unpack_signs_ref)


@st.composite
def sign_case(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    n = draw(st.sampled_from([1, 3, 63, 64, 65, 127, 128, 129, 200]))
    shape = list(shape)
    shape[axis] = n
    x = draw(sign_arrays(tuple(shape), zero_fraction=0.15))
    return x, axis


@given(sign_case())
def test_pack_matches_reference_and_roundtrips(case):
    x, axis = case
    n = x.shape[axis]
    packed = pack_signs(x, axis=axis)
    assert packed.dtype == np.uint64 and packed.flags.c_contiguous
    moved = np.moveaxis(x, axis, -1).reshape(-1, n)
    expect = pack_signs_ref(moved).reshape(np.moveaxis(x, axis, -1).shape[:-1] + (n_words(n),))
    np.testing.assert_array_equal(np.moveaxis(packed, axis, -1), expect)
    signs = np.where(x >= 0, 1.0, -1.0).astype(np.float32)  # sign(0) = +1
    np.testing.assert_array_equal(unpack_signs(packed, n, axis=axis), signs)
    np.testing.assert_array_equal(unpack_signs_ref(np.moveaxis(packed, axis, -1).reshape(-1, n_words(n)), n),
                                  np.moveaxis(signs, axis, -1).reshape(-1, n))


def test_bit_order_and_tail_bits():
    x = -np.ones(70, dtype=np.float32)
    x[[0, 5, 63, 64, 69]] = [1.0, 0.0, 2.0, 0.5, 3.0]
    w = pack_signs(x)
    assert w.shape == (2,)
    assert int(w[0]) == (1 << 0) | (1 << 5) | (1 << 63)
    assert int(w[1]) == (1 << 0) | (1 << 5)  # bits 6..63 of the last word are the tail: 0
    assert int(pack_signs(np.ones(70))[1]) == (1 << 6) - 1


def test_integer_and_noncontiguous_inputs():
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=(6, 130))
    np.testing.assert_array_equal(pack_signs(x), pack_signs_ref(x.astype(np.float64)))
    y = rng.standard_normal((130, 12)).astype(np.float32)[:, ::3]  # non-contiguous view
    np.testing.assert_array_equal(pack_signs(y, axis=0), pack_signs_ref(np.ascontiguousarray(y.T)).T)


def test_loops_in_plain_python():
    x = np.array([[0.0, -1.0, 2.0, -0.5, 1.0], [-1.0, -1.0, -1.0, -1.0, 0.0]])
    out = np.empty((2, 1), dtype=np.uint64)
    _pack_signs_loops(out, x)
    assert out[0, 0] == 0b10101 and out[1, 0] == 0b10000
    back = np.empty((2, 5), dtype=np.float32)
    _unpack_signs_loops(back, out)
    np.testing.assert_array_equal(back, np.where(x >= 0, 1.0, -1.0))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: pack_signs([1.0, -1.0]), TypeError, "pack_signs: x"),
    (lambda: pack_signs(np.array([True, False])), TypeError, "pack_signs: x"),
    (lambda: pack_signs(np.array([1.0, np.nan])), ValueError, "NaN"),
    (lambda: pack_signs(np.ones((2, 3)), axis=2), ValueError, "pack_signs: axis"),
    (lambda: pack_signs(np.ones((2, 3)), axis=1.0), TypeError, "pack_signs: axis"),
    (lambda: pack_signs(np.ones((2, 0))), ValueError, "pack_signs"),
    (lambda: pack_signs(np.float32(1.0)), TypeError, "pack_signs: x"),
    (lambda: unpack_signs(np.zeros(2, dtype=np.int64), 70), TypeError, "unpack_signs: bits"),
    (lambda: unpack_signs(np.zeros(2, dtype=np.uint64), 129), ValueError, "unpack_signs: n=129"),
    (lambda: unpack_signs(np.zeros(2, dtype=np.uint64), 0), ValueError, "unpack_signs: n=0"),
    (lambda: unpack_signs(np.zeros(2, dtype=np.uint64), 70.0), TypeError, "unpack_signs: n"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_module_documents_bit_order():
    assert "bit (j % 64) of word j // 64" in bits.__doc__
