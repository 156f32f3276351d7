"""Population counts callable from Numba code and from plain Python: one word, and a register tile.

What:
- ``popcount64(x)``: the number of set bits of a 64-bit integer, as an int64.
- ``xor_popcount_tile_4x32(out, a, b_t, i0, j0, n_bits, oi0, oj0)`` and ``xor_popcount_tile_4x8(...)``:
  the micro-kernel of the XNOR GEMM. For r < 4 and c < 32 (or 8) they store into ``out[oi0 + r, oj0 + c]``
  (int32) the XNOR dot product
      n_bits - 2 * sum over w < words of popcount(a[i0 + r, w] XOR b_t[w, j0 + c])
  with ``a`` (M, words) and ``b_t`` (words, N) C-contiguous uint64 arrays. The output offsets are
  separate so that a caller can collect a block of counts in a small buffer of its own (the binary
  convolution does: its epilogue reads them from cache). No bounds are checked: the caller
  guarantees i0 + 4 <= M, j0 + 32 (or 8) <= N and that the block fits ``out``.

Why it is built this way: Numba has no popcount function. Inside jitted code ``popcount64`` resolves
(``numba.extending.overload``) to an ``@intrinsic`` emitting LLVM's ``llvm.ctpop.i64``: POPCNT, or
VPOPCNTQ when the loop vectoriser widens the loop around it. The tile functions resolve to intrinsics
that emit the whole loop over words as LLVM IR on ``<8 x i64>`` vectors: per word, load 32 columns of
``b_t`` (four vectors), broadcast one word of each of the 4 rows of ``a``, then 16 x (XOR, ctpop, add)
into 16 vector accumulators that live in registers for the whole loop. Numba's loop vectoriser does not
find this by itself: it vectorises a reduction over words (leaving a scalar tail and a horizontal sum
per output) or keeps the accumulators in memory; its negative-index wraparound selects also stop it
from seeing consecutive columns. On AVX-512 VPOPCNTDQ machines LLVM maps ``ctpop.v8i64`` to one
``vpopcntq zmm`` whatever vector width the CPU model prefers (see docs/kernels/xnor-gemm.md).

Outside Numba (``NUMBA_DISABLE_JIT=1``, or a plain call) every name is an ordinary Python function
with the same result (``int.bit_count`` and loops), so the kernels still run, slowly, for stepping.

popcount64 is typed int64 (it is at most 64) so that ``n - 2 * popcount64(a ^ b)`` stays integer in
Numba instead of promoting an int64/uint64 mixture to float64.

Reference: ``popcount64_ref`` counts bits one at a time with shifts and masks; the tiles are checked
through ``xnor_gemm`` against an unpack-and-matmul oracle.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .ir_loop import accumulate_loop

TILE_ROWS = 4
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_LANES = 8  # 512-bit vectors of uint64


def popcount64_ref(x):
    """Oracle: count the set bits of the low 64 bits of ``x`` one at a time."""
    x = int(x) & 0xFFFFFFFFFFFFFFFF
    count = 0
    for _ in range(64):
        count += x & 1
        x >>= 1
    return count


def popcount64(x):
    """Number of set bits of the 64-bit word ``x`` (two's complement for negative ints); int."""
    return (int(x) & 0xFFFFFFFFFFFFFFFF).bit_count()


@intrinsic
def _ctpop_i64(typingctx, x):
    """int64 <- llvm.ctpop.i64(x) for a 64-bit integer x (signed or not: ctpop reads the bit pattern)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(x), codegen


@overload(popcount64, inline="always")
def _popcount64_numba(x):
    if isinstance(x, types.Integer) and x.bitwidth == 64:
        return lambda x: _ctpop_i64(x)
    if isinstance(x, types.Integer):
        return lambda x: _ctpop_i64(np.uint64(x))
    return None


def _is_matrix(t, dtype):
    return isinstance(t, types.Array) and t.ndim == 2 and t.dtype == dtype and t.layout == "C"


def _tile_codegen(rows, vecs):
    """LLVM IR for a rows x (8 * vecs) tile; see the module docstring for the contract."""
    vty = ir.VectorType(_I64, _LANES)

    def codegen(context, builder, signature, args):
        out_t, a_t, b_t, i0_t, j0_t, n_t, oi0_t, oj0_t = signature.args
        out = context.make_array(out_t)(context, builder, args[0])
        a = context.make_array(a_t)(context, builder, args[1])
        b = context.make_array(b_t)(context, builder, args[2])
        i0 = context.cast(builder, args[3], i0_t, types.intp)
        j0 = context.cast(builder, args[4], j0_t, types.intp)
        n_bits = context.cast(builder, args[5], n_t, types.int64)
        oi0 = context.cast(builder, args[6], oi0_t, types.intp)
        oj0 = context.cast(builder, args[7], oj0_t, types.intp)
        words = cgutils.unpack_tuple(builder, a.shape, 2)[1]
        a_stride = cgutils.unpack_tuple(builder, a.strides, 2)[0]  # bytes
        b_stride = cgutils.unpack_tuple(builder, b.strides, 2)[0]
        out_stride = cgutils.unpack_tuple(builder, out.strides, 2)[0]
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.ctpop.v8i64")
        undef = ir.Constant(vty, ir.Undefined)
        splat_mask = ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)  # shuffle lane 0 everywhere
        a_rows = [builder.gep(a.data, [builder.mul(builder.add(i0, _I64(r)), a_stride)], source_etype=_I8)
                  for r in range(rows)]
        b_col0 = builder.gep(b.data, [j0], source_etype=_I64)

        def step(w, accs):
            b_row = builder.gep(b_col0, [builder.mul(w, b_stride)], source_etype=_I8)
            b_vecs = [builder.load(builder.gep(b_row, [_I64(_LANES * v)], source_etype=_I64), typ=vty, align=8)
                      for v in range(vecs)]
            updated = []
            for r in range(rows):
                a_word = builder.load(builder.gep(a_rows[r], [w], source_etype=_I64), typ=_I64, align=8)
                a_vec = builder.shuffle_vector(builder.insert_element(undef, a_word, _I32(0)), undef, splat_mask)
                for v in range(vecs):
                    counts = builder.call(ctpop, [builder.xor(a_vec, b_vecs[v])])
                    updated.append(builder.add(accs[r * vecs + v], counts))
            return updated

        zeros = [ir.Constant(vty, [0] * _LANES)] * (rows * vecs)
        accs = accumulate_loop(builder, words, zeros, step, "tile")
        out_col0 = builder.gep(out.data, [oj0], source_etype=_I32)
        vty32 = ir.VectorType(_I32, _LANES)
        n_vec = builder.shuffle_vector(builder.insert_element(undef, n_bits, _I32(0)), undef, splat_mask)
        for r in range(rows):
            out_row = builder.gep(out_col0, [builder.mul(builder.add(oi0, _I64(r)), out_stride)], source_etype=_I8)
            for v in range(vecs):
                dst = builder.bitcast(builder.gep(out_row, [_I64(_LANES * v)], source_etype=_I32), vty32.as_pointer())
                dot = builder.sub(n_vec, builder.shl(accs[r * vecs + v], ir.Constant(vty, [1] * _LANES)))
                builder.store(builder.trunc(dot, vty32), dst, align=4)
        return context.get_dummy_value()

    return codegen


def _make_tile(vecs):
    """Build the Python function and its Numba intrinsic for a 4 x (8 * vecs) tile."""
    cols = _LANES * vecs

    def tile(out, a, b_t, i0, j0, n_bits, oi0, oj0):
        words = a.shape[1]
        for r in range(TILE_ROWS):
            for c in range(cols):
                s = 0
                for w in range(words):
                    s += popcount64(a[i0 + r, w] ^ b_t[w, j0 + c])
                out[oi0 + r, oj0 + c] = n_bits - 2 * s

    codegen = _tile_codegen(TILE_ROWS, vecs)

    def typer(typingctx, out, a, b_t, i0, j0, n_bits, oi0, oj0):
        if not (_is_matrix(out, types.int32) and _is_matrix(a, types.uint64) and _is_matrix(b_t, types.uint64)
                and all(isinstance(v, types.Integer) for v in (i0, j0, n_bits, oi0, oj0))):
            return None
        return types.void(out, a, b_t, i0, j0, n_bits, oi0, oj0), codegen

    typer.__name__ = f"_xor_popcount_tile_4x{cols}_ir"
    tile_ir = intrinsic(typer)

    @overload(tile, inline="always")
    def _tile_numba(out, a, b_t, i0, j0, n_bits, oi0, oj0):
        return lambda out, a, b_t, i0, j0, n_bits, oi0, oj0: tile_ir(out, a, b_t, i0, j0, n_bits, oi0, oj0)

    tile.__name__ = tile.__qualname__ = f"xor_popcount_tile_4x{cols}"
    tile.__doc__ = (f"out[oi0:oi0+4, oj0:oj0+{cols}] = n_bits - 2 * popcount(a[i0:i0+4] XOR b_t[:, j0:j0+{cols}]) "
                    f"(module doc).")
    return tile


xor_popcount_tile_4x32 = _make_tile(4)
xor_popcount_tile_4x8 = _make_tile(1)
