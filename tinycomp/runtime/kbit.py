"""The runtime's k-bit and ternary layers (kinds "kbit" and "kbit_weight", written by ``tinycomp.export_kbit``).

A layer's weight is stored as integer codes c (OIHW, or (out, in) for a linear layer) with their
range ("codes": [lo, hi]), an affine map ("affine": [a, z]) and per-output ``scale`` and ``bias``,
so that with the formulas of ``tinycomp/export_kbit.py``:

    kbit         y[o] = scale[o] · (a·I - z·S) + bias[o], then the "bn" entry if present
                 (y = y · bn.scale[o] + bn.shift[o], two roundings, in the epilogue pass)
                 I = Σ c·q_x over each patch (exact integers), S = Σ q_x over the patch (z != 0 only)
    kbit_weight  y[o] = conv2d(x, W')[o] + bias[o],  W'[o] = scale[o] · (a·c[o] - z)    (float inputs:
                 ternary, w<k>a32), then "bn" if present

I - z·S = Σ (a·c - z)·q_x is an integer whatever path computes it, and the float32 rounding happens
once, at scale · I, as in the eval-mode training graph (``tinycomp/compress/integer_form.py``); with
the BatchNorm unfolded ("bn", written for every layer of a network with k-bit inputs) the next layer's
input quantizer meets the graph's values bit for bit.

q_x are the unsigned m-bit codes of the layer's input, computed in float32 exactly as the training
graph's input quantizer does in eval mode (tinycomp/functional/quantize.py: the same multiply or
divide, clip, then rint, half to even), L = 2^m - 1:

    dorefa  q_x = rint(clip(x · L, 0, L))
    pact    q_x = rint(clip(x / (alpha / L), 0, L))       alpha / L rounded to float32 first, as there
    lsq     q_x = rint(clip(x / step, 0, L))

Paths (``tinycomp.runtime.paths.kbit_path``): "bitserial_conv2d" packs q_x into bit planes and runs
the AND-popcount convolution on the weight planes packed at load, then the epilogue above;
"conv2d_forward" convolves q_x with the integers a·c - z unpacked at load, in float32 where every sum
stays below 2^24 (exact), float64 otherwise (``tinycomp_kernels.bitserial.exact_float_dtype``). kbit_weight
convs run conv2d_forward on W'. Linear layers ("matmul"): q_x @ (a·c - z).T then the scale (kbit),
x @ W'.T (kbit_weight). Convs take the bias, BatchNorm, the block's residual and ReLU in one pass
(``tinycomp_kernels.epilogue``).
"""
import numpy as np
from tinycomp_kernels.bitserial import code_range, exact_float_dtype
from tinycomp_kernels.bitserial_conv import bitserial_conv2d, pack_activation_planes, pack_weight_planes, patch_sums
from tinycomp_kernels.conv import Conv2dPlan
from tinycomp_kernels.epilogue import epilogue
from tinycomp_kernels.quantize import round_to_grid, round_to_levels

from .layers import Conv, Linear, layer_kind, read_bn
from .paths import bitserial_exact, kbit_path

KINDS = ("kbit", "kbit_weight")
QUANTIZERS = {"dorefa": None, "pact": "alpha", "lsq": "step"}  # name -> the parameter the file stores


def planes_for(lo, hi):
    """(planes, signed): the fewest bit planes that hold every code in [lo, hi]."""
    signed = lo < 0
    planes = 1
    while not code_range(planes, signed)[0] <= lo <= hi <= code_range(planes, signed)[1]:
        planes += 1
    return planes, signed


class InputQuantizer:
    """The training graph's unsigned m-bit input quantizer in eval mode: x -> float32 codes q_x."""

    def __init__(self, reader, spec, where):
        name = reader.field(spec, "quantizer", str, where)
        if name not in QUANTIZERS:
            raise reader.error(f"{where}.quantizer", f"{name!r} is not one of {', '.join(QUANTIZERS)}")
        self.name, self.bits = name, reader.field(spec, "bits", int, where)
        if not 1 <= self.bits <= 8:
            raise reader.error(f"{where}.bits", f"{self.bits} is not in 1..8")
        self.levels = np.float32(2 ** self.bits - 1)
        key = QUANTIZERS[name]
        self.step = None  # dorefa multiplies by L instead
        if key is not None:
            v = reader.float_tensor(reader.field(spec, key, dict, where), (1,), f"{where}.{key}")[0]
            if not v > 0:
                raise reader.error(f"{where}.{key}", f"{v} is not > 0")
            self.step = v / self.levels if name == "pact" else v  # float32, as the training graph's step

    def __call__(self, x):
        """float32 codes, one pass (``tinycomp_kernels.quantize``: the same multiply or divide, clip and
        rint as the NumPy expressions, equal bits)."""
        x = x.astype(np.float32, copy=False)
        if self.step is None:
            return round_to_levels(x, 2 ** self.bits - 1, codes=True)
        return round_to_grid(x, self.step, 0, self.levels, codes=True)


def _load(layer, reader, entry, where, ndim):
    """Read what both layer classes hold: name, kind, shape, codes, affine map, scale, bias, quantizer."""
    layer.name, layer.where = reader.field(entry, "name", str, where), where
    layer.kind = layer_kind(reader, entry, where, KINDS)
    layer.shape = reader.ints(entry, "shape", ndim, 1, where)
    lo, hi = reader.ints(entry, "codes", 2, -128, where)
    a, z = reader.ints(entry, "affine", 2, 0, where)
    if lo > hi or hi > 255:
        raise reader.error(f"{where}.codes", f"[{lo}, {hi}] is not a range of codes lo <= hi in -128..255")
    if a < 1:
        raise reader.error(f"{where}.affine", f"[{a}, {z}]: the weight a·c - z needs a >= 1")
    codes, planes, signed = reader.code_tensor(reader.field(entry, "weight", dict, where), layer.shape,
                                               f"{where}.weight")
    if (planes, signed) != planes_for(lo, hi):
        need, need_signed = planes_for(lo, hi)
        raise reader.error(f"{where}.weight", f"{planes} {'signed' if signed else 'unsigned'} planes, but codes in "
                           f"[{lo}, {hi}] take {need} {'signed' if need_signed else 'unsigned'} ones")
    if codes.min() < lo or codes.max() > hi:
        raise reader.error(f"{where}.weight", f"codes in [{codes.min()}, {codes.max()}], outside the header's "
                           f"codes [{lo}, {hi}]")
    out = (layer.shape[0],)
    layer.scale = reader.float_tensor(reader.field(entry, "scale", dict, where), out, f"{where}.scale")
    layer.bias = reader.float_tensor(reader.field(entry, "bias", dict, where), out, f"{where}.bias")
    layer.affine, layer.planes, layer.signed = (a, z), planes, signed
    layer.quantizer = (InputQuantizer(reader, reader.field(entry, "input", dict, where), f"{where}.input")
                       if layer.kind == "kbit" else None)
    layer.codes = codes.astype(np.int16)  # the weight codes, for inspection (-128..255 fit int16)
    layer.bn = read_bn(reader, entry, out[0], where) if ndim == 4 else None  # convs only: no BatchNorm after the linear
    n = a * codes.astype(np.int64) - z
    if layer.quantizer is not None:  # kbit: the integers, in the dtype that sums them exactly
        return n.astype(exact_float_dtype(n, layer.quantizer.levels))
    scale = layer.scale.astype(np.float64).reshape(out + (1,) * (ndim - 1))
    return (scale * n).astype(np.float32)  # kbit_weight: W' = scale · (a·c - z)


class KbitConv(Conv):
    """A "kbit" or "kbit_weight" conv (module docstring); geometry and channels as ``Conv``'s."""

    def __init__(self, reader, entry, where):
        weight = _load(self, reader, entry, where, 4)
        self.stride = reader.ints(entry, "stride", 2, 1, where)
        self.padding = reader.ints(entry, "padding", 2, 0, where)
        bits = self.quantizer.bits if self.quantizer else None
        self.exact = self.kind == "kbit" and bitserial_exact(self.shape, self.planes, self.signed, bits)
        self.path = kbit_path(self.shape, self.planes, self.signed, bits) if bits else "conv2d_forward"
        self.w_planes = pack_weight_planes(self.codes, self.planes, self.signed) if self.exact else None
        self.weight = weight if self.path == "conv2d_forward" else None  # W' or the integers a·c - z
        self._plans = {}

    def __call__(self, x, residual=None, relu=False):
        """The layer on x, then + ``residual`` and ReLU if asked, in one epilogue pass (as ``Conv``)."""
        scale = None
        if self.quantizer is None:
            y = self.plan(x)(x)
        elif self.path == "conv2d_forward":
            acc = self.plan(x)(self.quantizer(x).astype(self.weight.dtype, copy=False))
            y, scale = acc.astype(np.float32, copy=False), self.scale  # exact integers, rounded once if float64
        else:
            y, scale = self._integers(self.quantizer(x).astype(np.uint8)), self.scale
        return epilogue(np.ascontiguousarray(y), scale=scale, bias=self.bias, bn=self.bn, residual=residual,
                        relu=relu)

    def _make_plan(self, hw):
        return Conv2dPlan(self.weight, hw, self.stride, self.padding)

    def _integers(self, q):
        """a·I - z·S (N, O, OH, OW) as float32 from the uint8 input codes q, before the scale."""
        acc = self._accumulators(q)
        a, z = self.affine
        if a != 1 or z:
            acc = acc.astype(np.int64)  # a·I - z·S may pass int32's range
            acc *= a
            if z:
                acc -= z * patch_sums(q, self.shape[2], self.shape[3], self.stride, self.padding)[:, None]  # (N, 1, OH, OW)
        return acc.astype(np.float32)

    def _accumulators(self, q):
        return bitserial_conv2d(pack_activation_planes(q, self.quantizer.bits), self.w_planes, self.shape[1],
                                self.stride, self.padding, w_signed=self.signed)

    def input_codes(self, x):
        """The m-bit codes (float32) this layer multiplies for input x (kbit layers only)."""
        if self.quantizer is None:
            raise ValueError(f"input_codes: layer {self.name} is {self.kind}; its input stays float")
        return self.quantizer(np.ascontiguousarray(x, dtype=np.float32))

    def integer_part(self, x):
        """The exact int32 accumulators I = conv2d(q_x, c) (zero padding) of a kbit layer, on the
        bit-serial kernel whichever path the layer runs."""
        if not self.exact:
            raise ValueError(f"integer_part: layer {self.name} is {self.kind} and has no exact bit-serial accumulator")
        return self._accumulators(self.input_codes(x).astype(np.uint8))


class KbitLinear(Linear):
    """A "kbit" linear layer, y = scale · (q_x @ (a·c - z).T) + bias, or a "kbit_weight" one,
    y = x @ W'.T + bias."""

    def __init__(self, reader, entry, where):
        self.weight_t = np.ascontiguousarray(_load(self, reader, entry, where, 2).T)  # (in_features, out_features)
        self.path = "matmul"

    def __call__(self, x):
        if self.quantizer is None:
            y = x @ self.weight_t  # (N, out_features)
        else:  # the integer product, then scale, as the graph's integer form
            y = (self.quantizer(x).astype(self.weight_t.dtype, copy=False) @ self.weight_t).astype(np.float32)
            y *= self.scale
        y += self.bias
        return y
