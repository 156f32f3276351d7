"""The one-pass epilogue against its NumPy passes, bit for bit, and its refusals."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycomp_kernels import epilogue as E
from tinycomp_kernels.epilogue import epilogue, epilogue_ref


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(2, 3, 4, 5), (1, 16, 8, 8), (3, 5), (2, 7, 9)]), st.sampled_from([np.float32, np.float64]),
       st.lists(st.booleans(), min_size=5, max_size=5), st.integers(0, 2 ** 31))
def test_equals_the_numpy_passes_bit_for_bit(shape, dtype, use, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    y = (rng.standard_normal(shape) * 3).astype(dtype)
    y.flat[::7] = 0.0  # ReLU's edge
    vec = lambda: rng.standard_normal(C).astype(dtype)
    args = dict(scale=vec() if use[0] else None, bias=vec() if use[1] else None,
                bn=(vec(), vec()) if use[2] else None,
                residual=rng.standard_normal(shape).astype(dtype) if use[3] else None, relu=use[4])
    ref = epilogue_ref(y, **args)
    out = epilogue(y, **args)
    assert out is y
    np.testing.assert_array_equal(out, ref)


def test_loops_in_plain_python():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((2, 3, 6)).astype(np.float32)
    s, b, g, h = (rng.standard_normal(3).astype(np.float32) for _ in range(4))
    r = rng.standard_normal(y.shape).astype(np.float32)
    expected = epilogue_ref(y, s, b, (g, h), r, True)
    E._epilogue_loops(y, s, b, g, h, r, np.ones(5, np.int8), np.zeros(1, np.float32))
    np.testing.assert_array_equal(y, expected)


def test_relu_gives_plus_zero_and_keeps_nan():
    y = np.array([[-0.0, -1.0, np.nan, 2.0]], np.float32).reshape(1, 1, 4)
    out = epilogue(y, relu=True)
    assert np.signbit(out[0, 0, :2]).tolist() == [False, False] and np.isnan(out[0, 0, 2]) and out[0, 0, 3] == 2


@pytest.mark.parametrize("call, words", [
    (lambda y: epilogue(y.astype(np.int32)), "y must be a C-contiguous float32"),
    (lambda y: epilogue(y[:, :, ::2]), "C-contiguous"),
    (lambda y: epilogue(y, scale=np.ones(4, np.float32)), r"scale must be a \(3,\) float32"),
    (lambda y: epilogue(y, bias=np.ones(3)), r"bias must be a \(3,\) float32 array, got float64"),
    (lambda y: epilogue(y, bn=(np.ones(3, np.float32), np.ones(2, np.float32))), "bn_shift"),
    (lambda y: epilogue(y, residual=np.ones((2, 3, 5), np.float32)), r"residual must be float32 \(2, 3, 4\)"),
])
def test_bad_input_is_refused_naming_the_argument(call, words):
    with pytest.raises(ValueError, match=words):
        call(np.ones((2, 3, 4), np.float32))
