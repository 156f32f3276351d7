"""Public helpers for users' own tests: gradient checks, STE checks and hypothesis strategies.

    from tinycomp.testing import gradcheck
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x64, w64])

``gradcheck`` compares the autograd backward with float64 central differences over *every*
element, contracting the output with a random cotangent v (so a wrong sign or a transposed
gradient cannot hide behind a sum). The strategies need ``hypothesis`` (extra ``testing``).
"""
import numpy as np

from .tensor import Tensor


def _as_float64_tensors(inputs):
    tensors = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs must be float64 for finite differences, got {data.dtype}")
        tensors.append(Tensor(data.copy(), requires_grad=True))
    return tensors


def numerical_grads(fn, inputs, cotangent, eps=1e-6):
    """Central differences of ``sum(fn(*inputs) * cotangent)`` w.r.t. every element of every input."""
    arrays = [x.data.copy() for x in inputs]

    def value():
        return float(np.sum(fn(*[Tensor(a) for a in arrays]).data * cotangent))

    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            plus = value()
            a[idx] = saved - eps
            minus = value()
            a[idx] = saved
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, check=None):
    """Assert that autograd's gradients of ``fn`` match central differences.

    ``fn`` takes Tensors and returns a Tensor; ``inputs`` are float64 arrays or Tensors;
    ``check`` optionally lists which inputs to differentiate (default: all). Returns True or
    raises AssertionError naming the input and the worst element.
    """
    tensors = _as_float64_tensors(inputs)
    out = fn(*tensors)
    cotangent = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(cotangent)
    numeric = numerical_grads(fn, tensors, cotangent, eps)
    for i, (t, num) in enumerate(zip(tensors, numeric)):
        if check is not None and i not in check:
            continue
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad
        if not np.allclose(analytic, num, atol=atol, rtol=rtol):
            err = np.abs(analytic - num)
            worst = np.unravel_index(np.argmax(err), err.shape)
            raise AssertionError(f"gradcheck: input {i} (shape {t.shape}): at {worst} autograd gives "
                                 f"{analytic[worst]:.6g}, finite differences {num[worst]:.6g} "
                                 f"(max abs error {err.max():.3g})")
    return True


def check_ste(quantizer, surrogate, pseudo_grad, x, eps=1e-6, atol=1e-5):
    """Check an STE on float64 ``x`` (kept away from kinks by the caller): its backward equals the
    pseudo-gradient formula ``pseudo_grad(x)`` and the central difference of the smooth surrogate."""
    t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    g = np.random.default_rng(0).standard_normal(t.shape)
    quantizer(t).backward(g)
    expected = pseudo_grad(t.data) * g
    numeric = (surrogate(t.data + eps) - surrogate(t.data - eps)) / (2 * eps) * g
    np.testing.assert_allclose(t.grad, expected, atol=atol, err_msg="STE backward != pseudo-gradient formula")
    np.testing.assert_allclose(t.grad, numeric, atol=max(atol, 1e-4),
                               err_msg="STE backward != finite difference of the surrogate")
    return True


# --- hypothesis strategies ----------------------------------------------------------------------
def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover
        raise ImportError("tinycomp.testing strategies need hypothesis: pip install 'tinycomp-engine[testing]'") from exc
    return st


def arrays(shape=None, dtype=np.float64, min_dims=1, max_dims=4, max_side=5, lo=-2.0, hi=2.0,
           noncontiguous=True):
    """Float arrays (drawn shape unless ``shape`` is given), sometimes as non-contiguous views."""
    st = _st()

    @st.composite
    def build(draw):
        shp = shape if shape is not None else tuple(
            draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        view = noncontiguous and len(shp) > 0 and draw(st.booleans())
        if view:  # a strided view: every other row of a twice-as-large array
            big = rng.uniform(lo, hi, (shp[0] * 2,) + tuple(shp[1:])).astype(dtype)
            return big[::2]
        return rng.uniform(lo, hi, shp).astype(dtype)

    return build()


def conv_configs(max_batch=3, max_channels=8, max_size=9, max_kernel=3, groups=True, dilation=True):
    """Valid conv2d configurations: dict(N, C, H, W, O, KH, KW, stride, padding, dilation, groups)."""
    st = _st()

    @st.composite
    def build(draw):
        g = draw(st.sampled_from([1, 1, 2, 3])) if groups else 1
        c = g * draw(st.integers(1, max(1, max_channels // g)))
        o = g * draw(st.integers(1, max(1, max_channels // g)))
        if groups and draw(st.integers(0, 4)) == 0:  # depthwise
            g, c = c, c
            o = c * draw(st.sampled_from([1, 2]))
        kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
        d = draw(st.sampled_from([1, 1, 2])) if dilation else 1
        p = draw(st.integers(0, 2))
        s = draw(st.sampled_from([1, 1, 2]))
        min_h = max(1, d * (kh - 1) + 1 - 2 * p)
        min_w = max(1, d * (kw - 1) + 1 - 2 * p)
        h = draw(st.integers(min_h, max(min_h, max_size)))
        w = draw(st.integers(min_w, max(min_w, max_size)))
        return dict(N=draw(st.integers(1, max_batch)), C=c, H=h, W=w, O=o, KH=kh, KW=kw,
                    stride=s, padding=p, dilation=d, groups=g)

    return build()
