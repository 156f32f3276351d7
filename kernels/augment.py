"""Fused image augmentation: padded random crop + horizontal flip + per-channel normalisation.

Math: for uint8 images X (N, C, H, W), a padding p, per-image crop offsets (dy[n], dx[n]) in
[0, 2p] and flip flags f[n], and per-channel affine coefficients (scale[c], shift[c]):

    P      = X padded by p pixels on each side of H and W      ("reflect" or "zero" padding)
    crop   = P[n, c, y + dy[n], x + dx[n]]                      for y < H, x < W
    x'     = W - 1 - x if f[n] else x                           (flip after the crop)
    out[n, c, y, x] = crop[n, c, y, x'] * scale[c] + shift[c]    float32

Normalisation ``(pixel / 255 - mean[c]) / std[c]`` is the affine map with
scale = 1 / (255 std), shift = -mean / std; ``(p=0, dy=dx=0, f=0)`` gives normalisation alone.

Padding conventions: "reflect" mirrors without repeating the edge pixel (NumPy's ``np.pad``
mode "reflect", PyTorch's ``F.pad(mode="reflect")``), so it needs p < H and p < W; "zero" pads
the *uint8 image* with 0, which the affine map then sends to shift[c] (torchvision's
``RandomCrop(padding=p)`` followed by ``Normalize``).

Shapes: images uint8 (N, C, H, W), offsets int64 (N, 2) as (dy, dx), flips uint8 (N,),
scale/shift float32 (C,); output float32 (N, C, H, W), C-contiguous.

The kernel reads each source pixel once and writes each output once, with no padded copy: the
padded coordinate is mapped back into the image (mirrored for "reflect", or flagged as outside
for "zero"). One thread: see the note at ``augment_jit``.

Reference: ``augment_ref`` builds the padded batch with ``np.pad``, slices each window, flips with
``[..., ::-1]`` and normalises in float64.
"""
import numpy as np
from numba import njit, prange

from .checks import is_int
from .fastmath import ALL_FLAGS

MODES = ("reflect", "zero")


# --- reference ---------------------------------------------------------------------------------
def augment_ref(images, offsets, flips, pad, mode, scale, shift):
    """NumPy oracle: np.pad, window slices, [..., ::-1] flips, float64 affine map, cast to float32."""
    images = np.asarray(images)
    N, C, H, W = images.shape
    np_mode = "reflect" if mode == "reflect" else "constant"
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=np_mode)  # (N, C, H+2p, W+2p)
    out = np.empty((N, C, H, W), dtype=np.float64)
    for n in range(N):
        dy, dx = int(offsets[n, 0]), int(offsets[n, 1])
        window = padded[n, :, dy:dy + H, dx:dx + W]  # (C, H, W)
        out[n] = window[:, :, ::-1] if flips[n] else window
    scale = np.asarray(scale, dtype=np.float64).reshape(1, C, 1, 1)
    shift = np.asarray(shift, dtype=np.float64).reshape(1, C, 1, 1)
    return (out * scale + shift).astype(np.float32)


# --- loops -------------------------------------------------------------------------------------
def _augment_loops(out, images, offsets, flips, pad, reflect, scale, shift):
    """out[n, c, y, x] = P[n, c, y + dy, x' + dx] * scale[c] + shift[c]; images independent."""
    N, C, H, W = images.shape
    for n in prange(N):
        dy = offsets[n, 0] - pad  # window origin in image coordinates
        dx = offsets[n, 1] - pad
        flip = flips[n] != 0
        for c in range(C):
            a = scale[c]
            b = shift[c]
            for y in range(H):
                sy = y + dy
                row_inside = True
                if sy < 0 or sy >= H:
                    if reflect:
                        # mirror about the edge pixel (p < H, so one reflection suffices)
                        sy = -sy if sy < 0 else 2 * (H - 1) - sy
                    else:
                        row_inside = False
                for x in range(W):
                    xs = W - 1 - x if flip else x
                    sx = xs + dx
                    inside = row_inside
                    if sx < 0 or sx >= W:
                        if reflect:
                            sx = -sx if sx < 0 else 2 * (W - 1) - sx
                        else:
                            inside = False
                    # zero padding pads the uint8 image, so an outside pixel is 0 before the map
                    v = np.float32(images[n, c, sy, sx]) if inside else np.float32(0.0)
                    out[n, c, y, x] = v * a + b


# Serial on purpose: a 128-image batch is ~0.5 ms of work, less than a parallel region's fork/join
# on a busy machine (measured 25x slower with two threads under load), and the training step that
# consumes the batch already uses every core. prange still marks the independent loop.
# ALL_FLAGS: uint8 pixels are finite, so of all the flags only the FMA of the affine map acts
augment_jit = njit(parallel=False, cache=True, fastmath=ALL_FLAGS)(_augment_loops)


# --- wrapper -----------------------------------------------------------------------------------
def augment(images, offsets, flips, scale, shift, pad=4, mode="reflect", out=None):
    """Crop (padded by ``pad``), flip and normalise a uint8 batch in one pass; float32 out.

    ``images`` uint8 (N, C, H, W) (non-contiguous input is copied); ``offsets`` integers (N, 2),
    each in [0, 2*pad] (the window's top-left corner in the padded image, (dy, dx)); ``flips``
    (N,) booleans; ``scale``/``shift`` (C,) floats; ``mode`` "reflect" or "zero".
    ``out``: optional writeable C-contiguous float32 (N, C, H, W) array to fill.
    """
    name = "augment"
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name}: images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{name}: images must be uint8, got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{name}: images must be 4-D (N, C, H, W), got shape {images.shape}")
    N, C, H, W = images.shape
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
    if not is_int(pad) or pad < 0:
        raise ValueError(f"{name}: pad must be a non-negative int, got {pad!r}")
    if mode == "reflect" and N and (pad >= H or pad >= W):
        raise ValueError(f"{name}: reflect padding needs pad < H and pad < W, got pad={pad} for {H}x{W}")
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu" and offsets.size:
        raise TypeError(f"{name}: offsets must be integers, got dtype {offsets.dtype}")
    if offsets.shape != (N, 2):
        raise ValueError(f"{name}: offsets must have shape ({N}, 2), got {offsets.shape}")
    if offsets.size and (offsets.min() < 0 or offsets.max() > 2 * pad):
        raise ValueError(f"{name}: offsets must lie in [0, {2 * pad}] for pad={pad}")
    flips = np.asarray(flips)
    if flips.shape != (N,):
        raise ValueError(f"{name}: flips must have shape ({N},), got {flips.shape}")
    if flips.dtype.kind not in "biu" and flips.size:
        raise TypeError(f"{name}: flips must be booleans, got dtype {flips.dtype}")
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    shift = np.ascontiguousarray(shift, dtype=np.float32)
    if scale.shape != (C,) or shift.shape != (C,):
        raise ValueError(f"{name}: scale and shift must have shape ({C},), got {scale.shape}, {shift.shape}")
    if out is None:
        out = np.empty((N, C, H, W), dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (N, C, H, W) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name}: out must be a writeable C-contiguous float32 array of shape {(N, C, H, W)}")
    if N:
        augment_jit(out, np.ascontiguousarray(images), np.ascontiguousarray(offsets, dtype=np.int64),
                    np.ascontiguousarray(flips, dtype=np.uint8), int(pad), mode == "reflect", scale, shift)
    return out
