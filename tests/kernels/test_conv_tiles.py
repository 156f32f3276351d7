"""The float32 "tiles" conv (forward, input and weight gradient) on both tile sets, any channel count."""
import hashlib
from unittest import mock

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycomp_kernels.conv import (conv2d_algorithm, conv2d_backward, conv2d_backward_input,
                                   conv2d_backward_weight, conv2d_forward, conv2d_ref)
from tile_sets import tile_set


def conv2d_grads_ref(dout, x, w, s, p, d):
    """(dx, dw) in float64 by conv2d_ref's slices: tap (kh, kw) of the padded input is one strided
    slice; dw contracts dout with it, dx adds dout contracted with w[:, :, kh, kw] back into it."""
    dout, x, w = (a.astype(np.float64) for a in (dout, x, w))
    H, W = x.shape[2:]
    OH, OW = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for kh in range(w.shape[2]):
        for kw in range(w.shape[3]):
            tap = (slice(None), slice(None), slice(kh * d, kh * d + s * (OH - 1) + 1, s),
                   slice(kw * d, kw * d + s * (OW - 1) + 1, s))
            dw[:, :, kh, kw] = np.einsum("nohw,nchw->oc", dout, xp[tap])
            dxp[tap] += np.einsum("nohw,oc->nchw", dout, w[:, :, kh, kw])
    return dxp[:, :, p:p + H, p:p + W], dw


@st.composite
def tiles_configs(draw):
    """float32 shapes the register-tile forward takes: OW a multiple of 8, channel counts the tiles
    do not divide among them (1-7: zero filters; 11, 13, 22: an overlapping last tile). OW in 8, 16,
    32 also selects the tiled weight gradient; W/stride a multiple of 8 the tiled input gradient."""
    k = draw(st.integers(1, 3))
    s = draw(st.sampled_from([1, 1, 2]))
    d = draw(st.sampled_from([1, 1, 2]))
    p = draw(st.integers(0, d * (k - 1)))
    OW = draw(st.sampled_from([8, 16, 32, 24]))
    W = (OW - 1) * s + 1 + d * (k - 1) - 2 * p + draw(st.integers(0, s - 1))  # + 1: W = 2*OW at stride 2
    return dict(N=draw(st.integers(1, 2)), C=draw(st.sampled_from([1, 3, 8, 11, 16])),
                H=draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 6)), W=W,
                O=draw(st.sampled_from([3, 8, 11, 13, 16, 22, 24])), K=k, stride=s, padding=p, dilation=d)


def _data(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal((cfg["O"], cfg["C"], cfg["K"], cfg["K"])).astype(np.float32)
    return x, w, (cfg["stride"], cfg["padding"], cfg["dilation"])


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@settings(max_examples=25)
@given(cfg=tiles_configs())
def test_forward_and_gradients_match_reference(wide, cfg):
    x, w, geo = _data(cfg)
    assert conv2d_algorithm(x.shape, w.shape, *geo) in ("tiles", "matmul1x1", "direct" if cfg["C"] == 1 else "")
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), *geo)
    dout = np.random.default_rng(5).standard_normal(ref.shape).astype(np.float32)
    dx_ref, dw_ref = conv2d_grads_ref(dout, x, w, *geo)
    with tile_set(wide):
        for algo in ("tiles", "im2col"):  # float32 im2col + GEMM for all three passes as the second
            y = conv2d_forward(x, w, *geo, algorithm=algo)
            dx, dw = conv2d_backward(dout, x, w, *geo, algorithm=algo)
            assert y.dtype == dx.dtype == dw.dtype == np.float32
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg=algo)
            np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4, err_msg=algo)
            np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-3, err_msg=algo)


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("C,O,H,stride", [(11, 11, 32, 1), (11, 22, 32, 2), (22, 45, 16, 2), (45, 45, 8, 1),
                                          (5, 3, 16, 1), (13, 24, 8, 1)])
def test_odd_channels_equal_the_zero_padded_conv_bitwise(wide, C, O, H, stride):
    """Each output of a channel count the tiles do not divide is the sum the conv padded with zero
    channels up to a multiple of 8 computes: forward and input gradient channel for channel, the
    weight gradient too (its sums run over rows, never across channels; at OW = 8 on the AVX-512 set
    it is OpenBLAS's GEMM, whose sums for a row of dw do not depend on the other rows either)."""
    rng = np.random.default_rng(C * O)
    C8, O8 = -(-C // 8) * 8, -(-O // 8) * 8
    x = np.zeros((2, C8, H, H), np.float32)
    w = np.zeros((O8, C8, 3, 3), np.float32)
    dout = np.zeros((2, O8, H // stride, H // stride), np.float32)
    x[:, :C] = rng.standard_normal((2, C, H, H))
    w[:O, :C] = rng.standard_normal((O, C, 3, 3))
    dout[:, :O] = rng.standard_normal((2, O, H // stride, H // stride))
    with tile_set(wide):
        assert conv2d_algorithm(x[:, :C].shape, w[:O, :C].shape, stride, 1) == "tiles"
        y = conv2d_forward(x[:, :C], w[:O, :C], stride, 1)
        dx, dw = conv2d_backward(dout[:, :O], x[:, :C], w[:O, :C], stride, 1)
        y8 = conv2d_forward(x, w, stride, 1)
        dx8, dw8 = conv2d_backward(dout, x, w, stride, 1)
    np.testing.assert_array_equal(y, y8[:, :O])
    np.testing.assert_array_equal(dx, dx8[:, :C])
    np.testing.assert_array_equal(dw, dw8[:O, :C])


@pytest.mark.parametrize("C,H,O,stride", [(16, 32, 16, 1), (16, 32, 32, 2), (32, 16, 32, 1), (64, 8, 64, 1),
                                          (11, 32, 11, 1), (22, 16, 45, 2)])
def test_tile_sets_sum_the_forward_in_the_same_order(C, H, O, stride):
    """Both tile sets add each output's taps in order k = 0..K-1 (one FMA per tap): bitwise equal."""
    rng = np.random.default_rng(C + H)
    x = rng.standard_normal((2, C, H, H)).astype(np.float32)
    w = rng.standard_normal((O, C, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, O, H // stride, H // stride)).astype(np.float32)
    got = []
    for wide in (True, False):
        with tile_set(wide):
            got.append((conv2d_forward(x, w, stride, 1), conv2d_backward_input(dout, w, x.shape, stride, 1)))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


def _phases_with_taps(cfg):
    """Whether every stride phase of dx has rows and a tap: the strided input gradient runs image by
    image only then (a phase with no rows, H < stride, or with no tap takes the batch path)."""
    from tinycomp_kernels.conv_tiles import _phase_taps

    s, p, d, K = cfg["stride"], cfg["padding"], cfg["dilation"], cfg["K"]
    rows_ok = all(_phase_taps(a, K, s, p, d) and -(-(cfg["H"] - a) // s) > 0 for a in range(s))
    cols_ok = all(_phase_taps(b, K, s, p, d) for b in range(s))   # columns: W/s >= 8 (tiles_backward_input_fit)
    return rows_ok and cols_ok


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@settings(max_examples=25)
@given(cfg=tiles_configs(), N=st.integers(1, 5))
def test_image_by_image_equals_the_batch_split_bitwise(wide, cfg, N):
    """The tiles run image by image (each image's phase planes made just before its rows) or from the
    whole batch's phase split: the same sums, bit for bit, forward and input gradient."""
    from tinycomp_kernels import conv_tiles

    x, w, geo = _data(dict(cfg, N=N))
    y = conv2d_forward(x, w, *geo, algorithm="tiles")
    dout = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    calls = []

    def counted(name):
        jit = getattr(conv_tiles, name)
        return mock.patch.object(conv_tiles, name, lambda *args: (calls.append(name), jit(*args))[1])

    got, calls_of = [], []
    with tile_set(wide), counted("conv2d_tiles_by_image_jit"), counted("conv2d_tiles_backward_input_by_image_jit"):
        for by_image in (False, True):
            calls.clear()
            with mock.patch.object(conv_tiles, "by_image_fit", lambda n: by_image):
                got.append((conv2d_forward(x, w, *geo, algorithm="tiles"),
                            conv2d_backward_input(dout, w, x.shape, *geo, algorithm="tiles")))
            calls_of.append(list(calls))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    expected = ["conv2d_tiles_by_image_jit"]                 # the forward; then the input gradient's path:
    if conv_tiles.tiles_backward_input_fit(x.shape, (cfg["stride"],) * 2, 1, np.float32):
        if cfg["stride"] == 1:
            expected.append("conv2d_tiles_by_image_jit")
        elif _phases_with_taps(cfg):
            expected.append("conv2d_tiles_backward_input_by_image_jit")
    assert calls_of == [[], expected]                       # the batch split first, then image by image


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
def test_weight_gradient_chunks_that_start_inside_an_image(wide):
    """The weight gradient splits each 128-row chunk's images itself: at 48 rows an image, chunk 1
    starts at row 32 of image 2, whose split both chunks make. Each chunk's sums equal the same tiles'
    on the whole batch's split at absolute rows, bit for bit (O = 12, K = 72: neither padded); dw of
    13 output channels (dout padded to 16) is close to the reference."""
    from numba import njit

    from tinycomp_kernels.conv_tiles import conv2d_tiles_backward_weight_jit, phase_split_offsets
    from tinycomp_kernels.fma_tile import dw_tile_4x3_8x2, dw_tile_4x4_16x1

    @njit
    def chunk_on_the_batch_split(part, dout, xq, koff, m0, m1, taps, wide):
        N, O, OH, OW = dout.shape
        plane = xq.shape[1] * xq.shape[2] * xq.shape[3]
        for o0 in range(0, O, 4):
            for k0 in range(0, koff.size, taps):
                if wide:
                    dw_tile_4x4_16x1(part, o0, k0, dout.reshape(-1), xq.reshape(-1), koff, m0, m1, OH, OW, O * OH * OW,
                                     OH * OW, plane, xq.shape[3])
                else:
                    dw_tile_4x3_8x2(part, o0, k0, dout.reshape(-1), xq.reshape(-1), koff, m0, m1, OH, OW, O * OH * OW,
                                    OH * OW, plane, xq.shape[3])

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 8, 48, 16)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((3, 12, 48, 16)).astype(np.float32)
    xq, koff = phase_split_offsets(x, 3, 3, (1, 1), (1, 1), (1, 1))
    taps = 4 if wide else 3
    kpad = np.concatenate([koff, np.full(-koff.size % taps, koff[0], np.int64)])
    parts = np.zeros((2, 12, kpad.size), np.float32)
    conv2d_tiles_backward_weight_jit(parts, dout, x, kpad, 128, 1, 1, 1, 1, 50, 18, wide)
    for ch, (m0, m1) in enumerate([(0, 128), (128, 144)]):
        ref = np.zeros_like(parts[ch])
        chunk_on_the_batch_split(ref, dout, xq, kpad, m0, m1, taps, wide)
        np.testing.assert_array_equal(parts[ch], ref)
    w13 = rng.standard_normal((13, 8, 3, 3)).astype(np.float32)
    dout13 = rng.standard_normal((3, 13, 48, 16)).astype(np.float32)
    with tile_set(wide):
        dw = conv2d_backward_weight(dout13, x, w13.shape, 1, 1)
    np.testing.assert_allclose(dw, conv2d_grads_ref(dout13, x, w13, 1, 1, 1)[1], rtol=1e-4, atol=1e-3)


def test_tap_offsets_are_cached_once_per_geometry_whatever_the_pairs():
    from tinycomp_kernels.conv_tiles import _tap_offsets

    a = _tap_offsets(16, 3, 3, (2, 2), (1, 1), 17, 17)
    b = _tap_offsets(np.int64(16), 3, 3, [2, 2], [1, 1], 17, 17)
    assert a is b and not a.flags.writeable
    assert a.dtype == np.int64 and a.shape == (16 * 9,)


def test_image_by_image_from_two_images_per_thread():
    from tinycomp_kernels.conv_tiles import by_image_fit

    threads = numba.get_num_threads()
    assert by_image_fit(2 * threads) and not by_image_fit(2 * threads - 1)


def _lcg(shape, seed):
    """Float32 values with 24 significant bits from integer arithmetic alone: the same on every
    machine and NumPy version (a random generator's stream may change), and inexact in sums."""
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    v = (i + np.uint64(seed)) * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
    return ((v >> np.uint64(40)).astype(np.int64) - 2**23).astype(np.float32).reshape(shape) / np.float32(2**23)


# SHA-256 (first 16 hex digits) of forward, dx, dw (AVX-512 set), dw (AVX2 set) from the default
# path, recorded at 82bd436, before the tiles took other channel counts; None: that pass was not on
# the tiles then. dx re-recorded when the input gradient began summing its taps in ascending input
# offsets (2026-12-01: the flipped kernel's descending reads ran 1.2-1.5x slower), a deliberate change
# of its bits: a run started before that change and resumed after it is not bitwise an uninterrupted one. Keys (N, C, H, W, O, K, stride, padding, dilation) reach every branch of the loops.
# The AVX-512 dw of every key with more than 8 input and at least 8 output channels was re-recorded on
# 2026-12-02 (after a day at None for the three with OW = 8, on im2col + GEMM then), when that set moved
# them to the channels-last tiles (conv_dw_nhwc): another deliberate change of bits. The AVX2 dw of the
# three keys with OW = 8 and more than 8 input channels likewise on 2026-12-03, when that set moved them
# there too (they now equal the AVX-512 set's: for these keys both sets pad O alike and sum each column
# in the same order).
PINNED = {
    (2, 16, 32, 32, 16, 3, 1, 1, 1): ("622b9c80235059a6", "d2011255c08348ef", "eb45b1a89e68ca47", "6dfe5c9bae2b51ec"),
    (2, 16, 32, 32, 32, 3, 2, 1, 1): ("d43908a08086e021", "d4fff8b15464dcde", "8096a5baf5c8641d", "33732645da406827"),
    (5, 32, 16, 16, 32, 3, 1, 1, 1): ("da3d6d4e7d8e7063", "8cbc8f792d5195aa", "2cef6144cbd94694", "81a054f73644c69d"),
    (2, 32, 16, 16, 64, 3, 2, 1, 1): ("bb781d971535896e", "2ccf6b6c53c00532", "0587f379ba8ad208", "0587f379ba8ad208"),
    (3, 64, 8, 8, 64, 3, 1, 1, 1): ("7eea43ee12e8c8d6", "43d1dea6aac187ca", "db3d3ee1c041f577", "db3d3ee1c041f577"),
    (2, 3, 32, 32, 16, 3, 1, 1, 1): ("2f9184bb64da3a49", None, "af36c80980a7617f", "29bf7043a8dd3f8d"),
    (2, 8, 7, 24, 8, 3, 1, 1, 1): ("f2228af240d89cb8", "f4e57a362e764a29", None, None),
    (2, 16, 5, 18, 24, 3, 1, 0, 1): ("f32bf5cd20027b95", None, "9d5339bdd216c79e", "f88e8767a9f3790f"),
    (2, 8, 6, 18, 16, 2, 1, 0, 2): ("202fcc419d87f55a", None, "16eef650b26a89ad", "0c1057d4aa75b9f1"),
    (2, 16, 9, 16, 8, 3, 2, 1, 1): ("15eb3e912ff12e1e", "d250b26f42e543da", "687577c50e2ee6e6", "687577c50e2ee6e6"),
    (1, 16, 6, 24, 32, 1, 1, 1, 1): (None, "ae2a174d399c5cf7", "6008a336f23ac64b", None),
    (9, 16, 16, 16, 16, 3, 1, 1, 1): ("9cbecbc7b2e9106a", "4fbd504f9f54ae36", "54682786665e9622", "7f8964cc58c89dc1"),
}


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="the plain-Python tiles round without FMA")
@pytest.mark.parametrize("key", list(PINNED), ids=str)
def test_shapes_that_were_on_the_tiles_keep_their_bits(key):
    """Training runs resume from checkpoints bit for bit: the shapes the tiles took before any
    channel count could (multiples of 8; of 4 for the weight gradient) give the recorded results."""
    N, C, H, W, O, K, s, p, d = key
    x, w = _lcg((N, C, H, W), 1), _lcg((O, C, K, K), 2)
    fwd, dx_pin, *dw_pins = PINNED[key]
    for wide, dw_pin in zip((True, False), dw_pins):
        with tile_set(wide):
            y = conv2d_forward(x, w, s, p, d)
            dx, dw = conv2d_backward(_lcg(y.shape, 3), x, w, s, p, d)
        for name, got, pin in (("forward", y, fwd), ("dx", dx, dx_pin), ("dw", dw, dw_pin)):
            if pin is not None:
                assert hashlib.sha256(got.tobytes()).hexdigest()[:16] == pin, (name, wide)


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("O", [8, 11])
def test_tiles_loops_run_as_plain_python(wide, O):
    from tinycomp_kernels.conv_tiles import (_conv2d_tiles_backward_weight_loops, _conv2d_tiles_loops,
                                             _phase_split_loops, phase_split_offsets)

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 3, 15)).astype(np.float32)   # stride 2, padding 1, 2x2 kernel: OW = 8
    w = rng.standard_normal((O, 2, 2, 2)).astype(np.float32)
    xq, koff = phase_split_offsets(x, 2, 2, (2, 2), (1, 1), (1, 1))
    assert xq.shape == (1, 2 * 2 * 2, 3, 9)
    xq_py = np.full_like(xq, np.nan)
    _phase_split_loops(xq_py, x, 1, 1, 2, 2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))           # (1, 2, 5, 17)
    np.testing.assert_array_equal(xq_py[0, (1 * 2 + 1) * 2 + 0], np.pad(xp[0, 1, 1::2, 0::2], ((0, 1), (0, 0))))
    np.testing.assert_array_equal(xq_py, xq)
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), 2, 1)
    out = np.full((1, O, 2, 8), np.nan, np.float32)             # O = 11: the last tile overlaps
    _conv2d_tiles_loops(out, xq, w.reshape(O, -1), koff, wide)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    taps = 4 if wide else 3                                     # patch rows per weight-gradient tile
    kpad = np.concatenate([koff, np.full(-koff.size % taps, koff[0], np.int64)])   # K = 8 padded to taps
    dout = rng.standard_normal(out.shape).astype(np.float32)
    O4 = -(-O // 4) * 4                                         # dout padded with zero channels, as the wrapper does
    parts = np.zeros((1, O4, kpad.size), np.float32)
    _conv2d_tiles_backward_weight_loops(parts, np.concatenate([dout, np.zeros((1, O4 - O, 2, 8), np.float32)], 1),
                                        x, kpad, 32, 1, 1, 2, 2, 3, 9, wide)  # splits x itself, as xq above
    dw_ref = conv2d_backward_weight(dout.astype(np.float64), x.astype(np.float64), w.shape, 2, 1, algorithm="im2col")
    np.testing.assert_allclose(parts[0, :O, :8].reshape(w.shape), dw_ref, rtol=1e-4, atol=1e-4)
    if wide:  # four output rows of 8 (fma_tile_8_16hx2) in plain Python: a 3x3 "same" conv of 4 x 8
        x4 = rng.standard_normal((1, 2, 4, 8)).astype(np.float32)
        w4 = rng.standard_normal((O, 2, 3, 3)).astype(np.float32)
        xq4, koff4 = phase_split_offsets(x4, 3, 3, (1, 1), (1, 1), (1, 1))
        out4 = np.full((1, O, 4, 8), np.nan, np.float32)
        _conv2d_tiles_loops(out4, xq4, w4.reshape(O, -1), koff4, wide)
        ref4 = conv2d_ref(x4.astype(np.float64), w4.astype(np.float64), 1, 1)
        np.testing.assert_allclose(out4, ref4, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
def test_image_by_image_loops_run_as_plain_python(wide):
    from tinycomp_kernels.conv_tiles import (_conv2d_tiles_backward_input_by_image_loops,
                                             _conv2d_tiles_by_image_loops, _phase_weights, _phase_taps,
                                             _tap_offsets, _tile_rows)

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 4, 16)).astype(np.float32)   # stride 2, padding 1, 3x3: 2 x 8 outputs
    w = rng.standard_normal((11, 3, 3, 3)).astype(np.float32)   # 11 channels: the last tile overlaps
    out = np.full((2, 11, 2, 8), np.nan, np.float32)
    _conv2d_tiles_by_image_loops(out, x, w.reshape(11, -1), _tap_offsets(3, 3, 3, (2, 2), (1, 1), 3, 9),
                                 1, 1, 2, 2, 3, 9, wide)
    np.testing.assert_allclose(out, conv2d_ref(x.astype(np.float64), w.astype(np.float64), 2, 1), rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    rows = [_phase_taps(a, 3, 2, 1, 1) for a in range(2)]      # as conv2d_tiles_backward_input lays them out
    cols = [_phase_taps(b, 3, 2, 1, 1) for b in range(2)]
    top, left, Hd, Wd = 0, 0, 3, 9                               # as the wrapper pads dout: shifts 0 and 1
    blocks = [_phase_weights(w, rows[a], cols[b], top, left, Hd, Wd) for a in range(2) for b in range(2)]
    phases = np.array([(a, b, 2, 8) for a in range(2) for b in range(2)], np.int64)
    dx = np.full(x.shape, np.nan, np.float32)
    _conv2d_tiles_backward_input_by_image_loops(dx, dout, tuple(_tile_rows(m) for m, _ in blocks),
                                                tuple(k for _, k in blocks), phases, 2, 2, top, left, Hd, Wd, wide)
    dx_ref = conv2d_backward_input(dout.astype(np.float64), w.astype(np.float64), x.shape, 2, 1, algorithm="im2col")
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)


def test_phase_merge_loops_run_as_plain_python():
    from tinycomp_kernels.conv_tiles import _phase_merge_loops, phase_merge_jit

    rng = np.random.default_rng(7)
    out = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for merge in (_phase_merge_loops, phase_merge_jit):
        dx = np.full((2, 3, 8, 15), np.nan, np.float32)
        merge(dx, out, 1, 2, 2, 3)
        np.testing.assert_array_equal(dx[:, :, 1::2, 2::3], out)
        assert np.isnan(dx[:, :, 0::2]).all() and np.isnan(dx[:, :, :, 0::3]).all()


def test_the_weight_gradient_leaves_the_tiles_at_width_8_on_avx512_only():
    from tinycomp_kernels.conv_tiles import tiles_backward_weight_fit

    with tile_set(True):
        assert [tiles_backward_weight_fit(ow, 1, np.float32) for ow in (8, 16, 32)] == [False, True, True]
    with tile_set(False):
        assert [tiles_backward_weight_fit(ow, 1, np.float32) for ow in (8, 16, 32)] == [True, True, True]
    assert not tiles_backward_weight_fit(16, 2, np.float32) and not tiles_backward_weight_fit(16, 1, np.float64)
