"""Bit-serial k-bit GEMM: integer codes as bit planes, multiplied by AND + popcount.

The math (DoReFa-Net §2.1; docs/methods.md, "Bit-serial k-bit inference"). A b-bit code is a sum of
bit planes, a = Σ_{i<b} c_i · a_i with a_i in {0, 1}:
- unsigned codes in [0, 2^b - 1]: c_i = 2^i;
- signed codes in [-2^(b-1), 2^(b-1) - 1] (two's complement, LSQ's signed grid): c_i = 2^i for
  i < b - 1 and c_(b-1) = -2^(b-1).
A dot product of a ka-bit row with a kb-bit row is then

    a · b = Σ_{i<ka} Σ_{j<kb} c_i · c_j · popcount(a_i AND b_j)        (c_i · c_j = ±2^(i+j))

exact in integers; bits 1..8 on each side, either side signed or not.

Layout. ``pack_planes(codes, bits)``: codes (M, K) -> planes (bits, M, ceil(K/64)) uint64, plane i =
bit i of each code's two's-complement pattern; element k of a row sits in bit k % 64 of word k // 64
(``tinycomp_kernels.bits``' order), tail bits 0. ``bitserial_gemm(a_planes, b_planes, k, a_signed,
b_signed)`` returns int32 (M, N) = a_codes @ b_codes.T.

Why int32: |a · b| <= k · max|a| · max|b| (max|a| = 2^ka - 1 unsigned, 2^(ka-1) signed), which the
wrapper requires to be < 2^31: at 8 x 8 unsigned bits that allows k <= 33025 (C*KH*KW of any ResNet
or VGG layer is <= 4608); larger products are refused rather than wrapped. Sums run in int64 inside.

The kernel. b is transposed to (kb, words, N): 8 consecutive columns sit side by side, so one word
of a row of a, broadcast, meets them in two 256-bit ANDs. The micro-kernel
``and_popcount_tile_4x8`` keeps a 4 x 8 block of counts in 8 vector registers: for each plane pair
(i, j) it walks the words (AND, ctpop, add), then adds the pair's count shifted by i + j (or
subtracts it, for a signed top plane). A strip of 8 columns (kb * words * 64 bytes) stays in L1
while the row tiles pass over it, so every activation word is reused from cache by all weight planes and
all rows. ``llvm.ctpop.v4i64`` is VPOPCNTQ ymm on AVX-512 VPOPCNTDQ and a VPSHUFB nibble-table
sequence on AVX2. Rows are padded to a multiple of 4 and columns to a multiple of 8 with zero codes.

Exporter epilogues (integer I from this kernel or ``bitserial_conv2d``):
- DoReFa: weights w = (2 q_w - L_w) / L_w (unsigned code q_w, L_w = 2^kw - 1), activations
  x = q_x / L_x. Then Σ w·x = (2 I - L_w S) / (L_w L_x) with I = Σ q_w q_x and S = Σ q_x (for a
  GEMM row: ``codes.sum(axis=1)``; for a convolution: ``bitserial_conv.patch_sums``), so
  y = scale_o · (2 I - L_w S) / (L_w L_x) + bias_o with BatchNorm folded into scale_o, bias_o
  (1-bit DoReFa weights, mean|W|·(2 q_w - 1), the same with L_w = 1 and the mean in scale_o).
- LSQ: w = s_w q_w (signed codes), x = s_x q_x (unsigned): Σ w·x = s_w s_x I.

References: ``bitserial_gemm_ref`` (int64 matmul of the codes) and ``pack_planes_ref`` (sum of
``bit << position`` in NumPy) never call the loops.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .bits import WORD_BITS, n_words
from .checks import is_int
from .ir_loop import accumulate_loop
from .popcount import popcount64

__all__ = ["pack_planes", "pack_planes_ref", "unpack_planes", "code_range", "exact_float_dtype", "bitserial_gemm",
           "bitserial_gemm_ref", "plane_pairs", "MAX_BITS"]

MAX_BITS = 8
TILE_ROWS = 4
LANES = 4  # 256-bit vectors of uint64
TILE_COLS = 2 * LANES
ROW_CHUNK = 64  # rows per parallel work item
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)


def code_range(bits, signed):
    """(lo, hi) of a ``bits``-bit code: [0, 2^b - 1] unsigned, [-2^(b-1), 2^(b-1) - 1] signed."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def exact_float_dtype(n, levels):
    """The float dtype in which every product of integer weights ``n`` (O, ...) with codes 0..``levels``
    sums exactly, in any order: float32 while each output's worst sum Σ|n|·levels stays below 2^24,
    float64 otherwise. A float conv or matmul of codes in it equals the integer product."""
    worst = int(np.abs(np.asarray(n, np.int64).reshape(n.shape[0], -1)).sum(axis=1).max()) * int(levels)
    return np.dtype(np.float32) if worst < 2 ** 24 else np.dtype(np.float64)


# --- references ---------------------------------------------------------------------------------
def bitserial_gemm_ref(a_codes, b_codes):
    """NumPy oracle: (M, K) @ (N, K).T of integer codes, int64 matmul."""
    return np.asarray(a_codes, np.int64) @ np.asarray(b_codes, np.int64).T


def pack_planes_ref(codes, bits):
    """NumPy oracle: (M, K) codes -> (bits, M, ceil(K/64)) uint64, plane i = bit i of each code."""
    M, K = codes.shape
    words = n_words(K)
    pattern = np.asarray(codes, np.int64) & ((1 << bits) - 1)  # two's complement, low bits
    planes = np.zeros((bits, M, words * WORD_BITS), dtype=np.uint64)  # tail stays 0
    for i in range(bits):
        planes[i, :, :K] = (pattern >> i) & 1
    shifts = np.arange(WORD_BITS, dtype=np.uint64)  # (64,)
    return (planes.reshape(bits, M, words, WORD_BITS) << shifts).sum(axis=3, dtype=np.uint64)


# --- micro-kernel -------------------------------------------------------------------------------
def and_popcount_tile_4x8(out, a, b_t, pairs, i0, j0, oj0):
    """out[i0 + r, oj0 + c] (r < 4, c < 8) = Σ_p ±2^shift_p · Σ_w popcount(a[i_p, i0 + r, w] AND
    b_t[j_p, w, j0 + c]), pairs rows (i, j, shift, negative). No bounds checks."""
    words = a.shape[2]
    for r in range(TILE_ROWS):
        for c in range(TILE_COLS):
            acc = 0
            for p in range(pairs.shape[0]):
                cnt = 0
                for w in range(words):
                    cnt += popcount64(a[pairs[p, 0], i0 + r, w] & b_t[pairs[p, 1], w, j0 + c])
                acc += -(cnt << pairs[p, 2]) if pairs[p, 3] else cnt << pairs[p, 2]
            out[i0 + r, oj0 + c] = acc


def _splat(builder, value, vty):
    undef = ir.Constant(vty, ir.Undefined)
    first = builder.insert_element(undef, value, _I32(0))
    return builder.shuffle_vector(first, undef, ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _tile_codegen(context, builder, signature, args):
    """LLVM IR of ``and_popcount_tile_4x8``: pair loop around a word loop, 8 <4 x i64> accumulators."""
    out, a, b, pairs = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:4], args[:4])]
    i0, j0, oj0 = [context.cast(builder, v, t, types.intp) for t, v in zip(signature.args[4:], args[4:])]
    words = cgutils.unpack_tuple(builder, a.shape, 3)[2]
    a_plane, a_row, _ = cgutils.unpack_tuple(builder, a.strides, 3)  # bytes
    b_plane, b_word, _ = cgutils.unpack_tuple(builder, b.strides, 3)
    n_pairs = cgutils.unpack_tuple(builder, pairs.shape, 2)[0]
    vty = ir.VectorType(_I64, LANES)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.ctpop.v4i64")
    zeros = [ir.Constant(vty, [0] * LANES)] * (TILE_ROWS * 2)

    def byte_gep(ptr, offset):
        return builder.gep(ptr, [offset], source_etype=_I8)

    def pair_step(p, accs):
        row = builder.gep(pairs.data, [builder.mul(p, _I64(4))], source_etype=_I64)
        i, j, shift, neg = [builder.load(builder.gep(row, [_I64(k)], source_etype=_I64), typ=_I64) for k in range(4)]
        a_base = byte_gep(a.data, builder.mul(i, a_plane))
        a_rows = [byte_gep(a_base, builder.mul(builder.add(i0, _I64(r)), a_row)) for r in range(TILE_ROWS)]
        b_base = builder.gep(byte_gep(b.data, builder.mul(j, b_plane)), [j0], source_etype=_I64)

        def word_step(w, cnts):
            b_row = byte_gep(b_base, builder.mul(w, b_word))
            b_vecs = [builder.load(builder.gep(b_row, [_I64(LANES * v)], source_etype=_I64), typ=vty, align=8)
                      for v in range(2)]
            new = []
            for r in range(TILE_ROWS):
                a_word = builder.load(builder.gep(a_rows[r], [w], source_etype=_I64), typ=_I64, align=8)
                a_vec = _splat(builder, a_word, vty)
                new += [builder.add(cnts[2 * r + v], builder.call(ctpop, [builder.and_(a_vec, b_vecs[v])]))
                        for v in range(2)]
            return new

        cnts = accumulate_loop(builder, words, zeros, word_step, "words")
        shift_vec = _splat(builder, shift, vty)
        is_neg = builder.icmp_unsigned("!=", neg, _I64(0))
        # the shift and sign are per pair, applied once after the word loop, not per word
        return [builder.select(is_neg, builder.sub(acc, builder.shl(c, shift_vec)),
                               builder.add(acc, builder.shl(c, shift_vec))) for acc, c in zip(accs, cnts)]

    accs = accumulate_loop(builder, n_pairs, zeros, pair_step, "pairs")
    out_row0 = cgutils.unpack_tuple(builder, out.strides, 2)[0]
    col0 = builder.gep(out.data, [oj0], source_etype=_I32)
    vty32 = ir.VectorType(_I32, LANES)
    for r in range(TILE_ROWS):
        out_row = byte_gep(col0, builder.mul(builder.add(i0, _I64(r)), out_row0))
        for v in range(2):
            dst = builder.bitcast(builder.gep(out_row, [_I64(LANES * v)], source_etype=_I32), vty32.as_pointer())
            builder.store(builder.trunc(accs[2 * r + v], vty32), dst, align=4)
    return context.get_dummy_value()


def _is_array(t, ndim, dtype):
    return isinstance(t, types.Array) and t.ndim == ndim and t.dtype == dtype and t.layout == "C"


@intrinsic
def _and_popcount_tile_ir(typingctx, out, a, b_t, pairs, i0, j0, oj0):
    if not (_is_array(out, 2, types.int32) and _is_array(a, 3, types.uint64) and _is_array(b_t, 3, types.uint64)
            and _is_array(pairs, 2, types.int64) and all(isinstance(v, types.Integer) for v in (i0, j0, oj0))):
        return None
    return types.void(out, a, b_t, pairs, i0, j0, oj0), _tile_codegen


@overload(and_popcount_tile_4x8, inline="always")
def _and_popcount_tile_numba(out, a, b_t, pairs, i0, j0, oj0):
    return lambda out, a, b_t, pairs, i0, j0, oj0: _and_popcount_tile_ir(out, a, b_t, pairs, i0, j0, oj0)


# --- loops --------------------------------------------------------------------------------------
def _pack_planes_loops(out, codes):
    """out (bits, M, words) uint64 <- bit planes of codes (M, K) uint8 (two's-complement patterns)."""
    bits, M, words = out.shape
    K = codes.shape[1]
    for m in prange(M):
        for wd in range(words):
            lo = wd * 64
            hi = min(lo + 64, K)
            for b in range(bits):
                acc = np.uint64(0)
                for k in range(lo, hi):  # branch-free, so random codes do not defeat the predictor
                    acc |= ((np.uint64(codes[m, k]) >> np.uint64(b)) & np.uint64(1)) << np.uint64(k - lo)
                out[b, m, wd] = acc


def _bitserial_gemm_loops(out, a, b_t, pairs, strip_group):
    """out (G, M_pad, L) int32 <- tiles over a (ka, M_pad, words) and b_t (kb, words, N_pad = G*L).

    Column n of the product goes to out[n // L, :, n % L] (L a multiple of 8): G = 1 for a GEMM, and
    G = images, L = OH*OW for a convolution, which so writes NCHW directly. Work items are ROW_CHUNK rows x strip_group strips of 8 columns; inside one, strips are
    outermost so that a strip of b_t (kb * words cache lines) stays in L1 while every row tile of
    the chunk reads it.
    """
    M = a.shape[1]
    S = b_t.shape[2] // TILE_COLS
    L = out.shape[2]
    n_rows = (M + ROW_CHUNK - 1) // ROW_CHUNK
    n_strips = (S + strip_group - 1) // strip_group
    for item in prange(n_rows * n_strips):
        r0 = (item // n_strips) * ROW_CHUNK
        s0 = (item % n_strips) * strip_group
        r1 = min(r0 + ROW_CHUNK, M)
        for s in range(s0, min(s0 + strip_group, S)):
            j0 = s * TILE_COLS
            dst = out[j0 // L]  # (M_pad, L): the strip lies in one image, as L % 8 == 0
            for i in range(r0, r1, TILE_ROWS):
                and_popcount_tile_4x8(dst, a, b_t, pairs, i, j0, j0 % L)


pack_planes_jit = njit(parallel=True, cache=True)(_pack_planes_loops)
bitserial_gemm_jit = njit(parallel=True, cache=True)(_bitserial_gemm_loops)


# --- helpers shared with bitserial_conv -----------------------------------------------------------
def plane_pairs(a_bits, a_signed, b_bits, b_signed):
    """(ka*kb, 4) int64 table of (i, j, i + j, negative): c_i·c_j = -2^(i+j) exactly when one of the
    two planes is the top plane of a signed operand (and not both)."""
    return np.array([(i, j, i + j, (a_signed and i == a_bits - 1) != (b_signed and j == b_bits - 1))
                     for i in range(a_bits) for j in range(b_bits)], dtype=np.int64)


def max_abs_code(bits, signed):
    lo, hi = code_range(bits, signed)
    return max(-lo, hi)


def check_bits_arg(op, name, bits):
    if not is_int(bits):
        raise TypeError(f"{op}: {name} must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{op}: {name} must be in 1..{MAX_BITS}, got {bits}")
    return int(bits)


def check_flag(op, name, flag):
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {flag!r}")
    return bool(flag)


def check_codes(op, name, codes, ndim, bits, signed):
    """Integer array of ``ndim`` dimensions with every code in range -> C-contiguous uint8 patterns."""
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy array, got {type(codes).__name__}")
    if codes.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must have an integer dtype (round and cast the codes first), "
                        f"got {codes.dtype}")
    if codes.ndim != ndim or codes.size == 0:
        raise ValueError(f"{op}: {name} must be a non-empty {ndim}-D array, got shape {codes.shape}")
    lo, hi = code_range(bits, signed)
    cmin, cmax = int(codes.min()), int(codes.max())
    if cmin < lo or cmax > hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{op}: {name} has codes in [{cmin}, {cmax}], outside [{lo}, {hi}] of {bits}-bit "
                         f"{kind} codes")
    # codes fit 8 bits, so the uint8 cast keeps each two's-complement pattern (-1 -> 0xFF)
    return np.ascontiguousarray(codes.astype(np.uint8, casting="unsafe", copy=False))


def check_planes(op, name, planes, ndim):
    if not isinstance(planes, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy array, got {type(planes).__name__}")
    if planes.dtype != np.uint64:
        raise TypeError(f"{op}: {name} must have dtype uint64 (pack it with pack_planes), got {planes.dtype}")
    if planes.ndim != ndim or 0 in planes.shape:
        raise ValueError(f"{op}: {name} must be a non-empty {ndim}-D array (bits first), got shape {planes.shape}")
    if planes.shape[0] > MAX_BITS:
        raise ValueError(f"{op}: {name} has {planes.shape[0]} planes, at most {MAX_BITS} are supported")
    return np.ascontiguousarray(planes)


def check_tail(op, name, planes, k):
    r = k % WORD_BITS
    if r and (planes[..., -1] >> np.uint64(r)).any():
        raise ValueError(f"{op}: {name} has nonzero tail bits beyond bit {k} (pack it with pack_planes)")


def check_accumulator(op, k, a_bits, a_signed, b_bits, b_signed):
    bound = k * max_abs_code(a_bits, a_signed) * max_abs_code(b_bits, b_signed)
    if bound >= 2 ** 31:
        raise ValueError(f"{op}: a reduction of {k} products of {a_bits}-bit and {b_bits}-bit codes can "
                         f"reach {bound}, beyond the int32 output")


def strip_group(rows, strips):
    """Strips per work item: >= 4 items per thread when the rows alone do not give that many."""
    import numba
    row_items = -(-rows // ROW_CHUNK)
    per = -(-strips // max(1, -(-4 * numba.get_num_threads() // row_items)))
    return max(1, min(32, per))


def gemm_padded(a, b_t, pairs, groups=1):
    """(groups, M_pad, N_pad / groups) int32 from a (ka, M_pad, words) and b_t (kb, words, N_pad), both
    padded (see ``_bitserial_gemm_loops``)."""
    out = np.empty((groups, a.shape[1], b_t.shape[2] // groups), dtype=np.int32)
    bitserial_gemm_jit(out, a, b_t, pairs, strip_group(a.shape[1], b_t.shape[2] // TILE_COLS))
    return out


def round_up(n, m):
    return -(-n // m) * m


# --- wrappers -----------------------------------------------------------------------------------
def pack_planes(codes, bits, signed=False):
    """Integer codes (M, K) -> bit planes (bits, M, ceil(K/64)) uint64 (module docstring: layout).

    ``signed``: codes in [-2^(b-1), 2^(b-1) - 1] (two's complement planes), else in [0, 2^b - 1].
    """
    bits = check_bits_arg("pack_planes", "bits", bits)
    u8 = check_codes("pack_planes", "codes", codes, 2, bits, check_flag("pack_planes", "signed", signed))
    out = np.empty((bits, u8.shape[0], n_words(u8.shape[1])), dtype=np.uint64)
    pack_planes_jit(out, u8)
    return out


def unpack_planes(planes, k, signed=False):
    """Inverse of ``pack_planes``: planes (bits, M, words) -> int64 codes (M, k)."""
    planes = check_planes("unpack_planes", "planes", planes, 3)
    if not is_int(k) or not 0 < k <= planes.shape[2] * WORD_BITS or n_words(k) != planes.shape[2]:
        raise ValueError(f"unpack_planes: k={k!r} does not match the {planes.shape[2]} words per row of planes")
    bits = planes.shape[0]
    shifts = np.arange(WORD_BITS, dtype=np.uint64)  # (64,)
    bit = (planes[..., None] >> shifts) & np.uint64(1)  # (bits, M, words, 64)
    bit = bit.reshape(bits, planes.shape[1], -1)[:, :, :k].astype(np.int64)  # (bits, M, k)
    weights = np.array([1 << i for i in range(bits)], dtype=np.int64)
    if check_flag("unpack_planes", "signed", signed):
        weights[-1] = -weights[-1]
    return np.tensordot(weights, bit, axes=1)  # (M, k)


def bitserial_gemm(a_planes, b_planes, k, a_signed=False, b_signed=False):
    """int32 (M, N) = a_codes @ b_codes.T from a_planes (ka, M, words) and b_planes (kb, N, words).

    Both packed by ``pack_planes`` from codes with k columns (words = ceil(k / 64), tail bits 0);
    ``a_signed`` / ``b_signed`` say how each side's codes were packed.
    """
    op = "bitserial_gemm"
    a = check_planes(op, "a_planes", a_planes, 3)
    b = check_planes(op, "b_planes", b_planes, 3)
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"{op}: a_planes has {a.shape[2]} words per row but b_planes has {b.shape[2]}")
    if not is_int(k):
        raise TypeError(f"{op}: k must be an int, got {type(k).__name__}")
    if k <= 0 or n_words(k) != a.shape[2]:
        raise ValueError(f"{op}: k={k} needs {n_words(max(int(k), 0))} words per row, but the planes have {a.shape[2]}")
    k = int(k)
    check_tail(op, "a_planes", a, k)
    check_tail(op, "b_planes", b, k)
    a_signed, b_signed = check_flag(op, "a_signed", a_signed), check_flag(op, "b_signed", b_signed)
    (ka, M, words), (kb, N, _) = a.shape, b.shape
    check_accumulator(op, k, ka, a_signed, kb, b_signed)
    M_pad, N_pad = round_up(M, TILE_ROWS), round_up(N, TILE_COLS)
    if M_pad != M:
        a = np.concatenate([a, np.zeros((ka, M_pad - M, words), np.uint64)], axis=1)  # zero rows
    b_t = np.zeros((kb, words, N_pad), dtype=np.uint64)  # 8 consecutive columns = two 256-bit loads
    b_t[:, :, :N] = b.transpose(0, 2, 1)  # (kb, N, words) -> (kb, words, N)
    out = gemm_padded(a, b_t, plane_pairs(ka, a_signed, kb, b_signed))
    return np.ascontiguousarray(out[0, :M, :N])
