"""A float32 register-tile micro-kernel for convolutions: R rows x (lanes * vecs) columns.

What: ``fma_tile_R_LxV(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs)`` stores, for r < R,
v < V and j < L,

    out[out_off + r*out_rs + v*ovs + j] = sum over k < K of  a[r0 + r, k] * x[base + v*xvs + koff[k] + j]

(xvs = ovs = L: V*L contiguous columns; xvs = one input row, ovs = one output row: V output rows of L
columns each, which keeps enough accumulators busy when an output row is only 8 wide.)

The ``_acc`` tiles add to out instead: out[...] += the same sum (a reduction split across calls).

The "half-row" tiles ``fma_tile_R_LhxV`` fill each L-lane vector from two input rows of L/2 columns,
the first half at base + 2v*xvs and the second at base + (2v+1)*xvs, and store it whole at
out_off + r*out_rs + v*ovs: with ovs = 2*OW = L that is two consecutive output rows, which are
adjacent in an NCHW output. On AVX-512 this keeps 16-lane vectors busy on 8-wide planes (8-lane
vectors halve the FMA throughput there).

with ``a`` (M, K) C-contiguous float32 (the weights, one row per output channel), ``x`` a flat
float32 array and ``koff`` (K,) int64 the offset of "row" k of the virtual patch matrix. With
``x`` = a zero-padded NCHW input and ``koff[(c*KH + kh)*KW + kw] = (c*Hp + kh*dh)*Wp + kw*dw`` this is an
*implicit im2col* convolution at stride 1: one output row segment of R channels, no patch matrix in
memory. With ``x`` = an explicit patch matrix and ``koff[k] = k * row_length`` it is a plain GEMM tile.
No bounds are checked: the caller guarantees every index is inside its array.

Why: a convolution's GEMM with few output channels (ResNet-20 has 16, 32, 64) has M too small for
BLAS to run near peak (OpenBLAS reached ~50 GFLOP/s at M=16 on this 2-core Zen 4 against ~150 at
M=64), and im2col first writes and then re-reads a patch matrix that does not fit in cache. This tile
keeps its R*V accumulators in vector registers for the whole k loop: per k it loads V vectors of x
and R scalars of ``a`` (broadcast) and issues R*V fused multiply-adds. Numba's loop vectoriser does
not find this by itself (it keeps such accumulators in memory), so the tile is emitted as LLVM IR on
``<L x float>`` vectors through ``numba.extending.intrinsic``, like ``tinycomp_kernels.popcount``.
The accumulators and the V loaded vectors must fit in the vector registers: AVX-512 has 32 of 16
floats (the 16-lane tiles, 16 accumulators); AVX2 has 16 of 8 floats, where a 16-lane vector takes two
and those tiles spill their accumulators to the stack, so AVX2 uses the 8-lane tiles of at most 12
accumulators (``fma_tile_4_8x2``, ``dw_tile_4x3_*``). ``conv_tiles`` picks the set from the CPU.

Outside Numba (``NUMBA_DISABLE_JIT=1`` or a plain call) every tile is an ordinary Python function with
the same result (up to float rounding order), so kernels that use it still run, slowly.
Reference: ``fma_tile_ref`` (NumPy gather + matmul); ``tinycomp_kernels.conv`` tests the convolutions.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .ir_loop import accumulate_loop

_I8, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()


def fma_tile_ref(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs, rows, lanes, vecs, halves=False,
                 accumulate=False):
    """NumPy oracle: gather each vector's K x lanes patch block, multiply by the rows x K weights
    (``accumulate``: add the products to what out holds, as the ``_acc`` tiles do)."""
    for v in range(vecs):
        if halves:  # lanes j < L/2 from input row 2v, the others from row 2v + 1
            j = np.arange(lanes)
            cols = (2 * v + j // (lanes // 2)) * xvs + j % (lanes // 2)
        else:
            cols = v * xvs + np.arange(lanes)
        patch = x[base + koff[:, None] + cols[None, :]]                          # (K, lanes)
        block = a[r0:r0 + rows].astype(np.float64) @ patch.astype(np.float64)   # (rows, lanes)
        for r in range(rows):
            start = out_off + r * out_rs + v * ovs
            out[start:start + lanes] = block[r] + (out[start:start + lanes] if accumulate else 0)


def _is(t, ndim, dtype):
    return isinstance(t, types.Array) and t.ndim == ndim and t.dtype == dtype and t.layout == "C"


def _tile_codegen(rows, lanes, vecs, halves=False, accumulate=False):
    vty = ir.VectorType(_F32, lanes)
    hty = ir.VectorType(_F32, lanes // 2)

    def codegen(context, builder, signature, args):
        out_t, oo_t, ors_t, a_t, r0_t, x_t, base_t, koff_t, xvs_t, ovs_t = signature.args
        out = context.make_array(out_t)(context, builder, args[0])
        a = context.make_array(a_t)(context, builder, args[3])
        x = context.make_array(x_t)(context, builder, args[5])
        koff = context.make_array(koff_t)(context, builder, args[7])
        out_off = context.cast(builder, args[1], oo_t, types.int64)
        out_rs = context.cast(builder, args[2], ors_t, types.int64)
        r0 = context.cast(builder, args[4], r0_t, types.int64)
        base = context.cast(builder, args[6], base_t, types.int64)
        xvs = context.cast(builder, args[8], xvs_t, types.int64)
        ovs = context.cast(builder, args[9], ovs_t, types.int64)
        K = cgutils.unpack_tuple(builder, a.shape, 2)[1]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                             f"llvm.fma.v{lanes}f32")
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes)
        a_rows = [builder.gep(a.data, [builder.mul(builder.add(r0, _I64(r)), K)], source_etype=_F32)
                  for r in range(rows)]
        x_base = builder.gep(x.data, [base], source_etype=_F32)

        def step(k, accs):
            off = builder.load(builder.gep(koff.data, [k], source_etype=_I64), typ=_I64, align=8)
            x_row = builder.gep(x_base, [off], source_etype=_F32)
            if halves:  # two half-vector loads from consecutive input rows, joined (one shuffle)
                half = [builder.load(builder.bitcast(builder.gep(x_row, [builder.mul(xvs, _I64(h))], source_etype=_F32),
                                                     hty.as_pointer()), typ=hty, align=4) for h in range(2 * vecs)]
                xv = [builder.shuffle_vector(half[2 * v], half[2 * v + 1], ir.Constant(ir.VectorType(_I32, lanes),
                                                                                        list(range(lanes))))
                      for v in range(vecs)]
            else:
                xv = [builder.load(builder.bitcast(builder.gep(x_row, [builder.mul(xvs, _I64(v))], source_etype=_F32),
                                                   vty.as_pointer()), typ=vty, align=4) for v in range(vecs)]
            updated = []
            for r in range(rows):
                s = builder.load(builder.gep(a_rows[r], [k], source_etype=_F32), typ=_F32, align=4)
                sv = builder.shuffle_vector(builder.insert_element(undef, s, _I32(0)), undef, splat)
                for v in range(vecs):
                    updated.append(builder.call(fma, [sv, xv[v], accs[r * vecs + v]]))
            return updated

        out0 = builder.gep(out.data, [out_off], source_etype=_F32)
        dsts = [builder.bitcast(builder.gep(builder.gep(out0, [builder.mul(out_rs, _I64(r))], source_etype=_F32),
                                            [builder.mul(ovs, _I64(v))], source_etype=_F32), vty.as_pointer())
                for r in range(rows) for v in range(vecs)]
        if accumulate:  # start from what out holds: the tile adds its sums to it
            inits = [builder.load(dst, typ=vty, align=4) for dst in dsts]
        else:
            inits = [ir.Constant(vty, [0.0] * lanes)] * (rows * vecs)
        accs = accumulate_loop(builder, K, inits, step, "ftile")
        for acc, dst in zip(accs, dsts):
            builder.store(acc, dst, align=4)
        return context.get_dummy_value()

    return codegen


def _make_tile(rows, lanes, vecs, halves=False, accumulate=False):
    cols = lanes * vecs
    half = lanes // 2

    def tile(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs):
        K = a.shape[1]
        for r in range(rows):
            for v in range(vecs):
                for j in range(lanes):
                    col = (2 * v + j // half) * xvs + j % half if halves else v * xvs + j
                    s = out[out_off + r * out_rs + v * ovs + j] if accumulate else np.float32(0.0)
                    for k in range(K):
                        s += a[r0 + r, k] * x[base + col + koff[k]]
                    out[out_off + r * out_rs + v * ovs + j] = s

    codegen = _tile_codegen(rows, lanes, vecs, halves, accumulate)

    def typer(typingctx, out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs):
        if not (_is(out, 1, types.float32) and _is(a, 2, types.float32) and _is(x, 1, types.float32)
                and _is(koff, 1, types.int64)
                and all(isinstance(v, types.Integer) for v in (out_off, out_rs, r0, base, xvs, ovs))):
            return None
        return types.void(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs), codegen

    name = f"fma_tile_{rows}_{lanes}{'h' if halves else ''}x{vecs}{'_acc' if accumulate else ''}"
    typer.__name__ = f"_{name}_ir"
    tile_ir = intrinsic(typer)

    @overload(tile, inline="always")
    def _tile_numba(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs):
        return lambda out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs: tile_ir(
            out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs)

    tile.__name__ = tile.__qualname__ = name
    tile.__doc__ = (f"{rows} x {cols} float32 tile: out[...] {'+' if accumulate else ''}= a-rows @ x-gathered-rows "
                    "(module doc).")
    return tile


fma_tile_8_16x2 = _make_tile(8, 16, 2)   # 32 output columns per row (OW = 32, 64, ...)
fma_tile_8_16x1 = _make_tile(8, 16, 1)   # 16 columns
fma_tile_8_8x1 = _make_tile(8, 8, 1)     # 8 columns
fma_tile_8_8x2 = _make_tile(8, 8, 2)     # two output rows of 8 columns (OW = 8)
fma_tile_16_16x1 = _make_tile(16, 16, 1)  # 16 rows x 16 columns: 16 accumulators when OW = 16
fma_tile_8_16hx2 = _make_tile(8, 16, 2, halves=True)  # four output rows of 8 columns in two 16-lane vectors
fma_tile_4_8x2 = _make_tile(4, 8, 2)     # AVX2: 4 rows x 16 columns (or two rows of 8), 8 ymm accumulators
fma_tile_1_8x8 = _make_tile(1, 8, 8)     # sparse_tiles: an 8x8 block of one output plane (xvs a row)
fma_tile_1_16x8 = _make_tile(1, 16, 8)   # sparse_tiles on AVX-512: 8 rows x 16 columns of one plane
fma_tile_8_16x3_acc = _make_tile(8, 16, 3, accumulate=True)    # conv_dw_nhwc: out += (48 columns)
fma_tile_8_16x2_acc = _make_tile(8, 16, 2, accumulate=True)    # conv_dw_nhwc: 32 columns
fma_tile_16_16x1_acc = _make_tile(16, 16, 1, accumulate=True)  # conv_dw_nhwc: 16 columns
fma_tile_4_8x3_acc = _make_tile(4, 8, 3, accumulate=True)      # conv_dw_nhwc on AVX2: 24 columns
fma_tile_4_8x2_acc = _make_tile(4, 8, 2, accumulate=True)      # 16 columns
fma_tile_8_8x1_acc = _make_tile(8, 8, 1, accumulate=True)      # 8 columns


# --- weight-gradient tile: a R x T block of dout-rows x patch-rows dot products ------------------
def dw_tile_ref(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq, rows, taps):
    """NumPy oracle of ``dw_tile``: part[o0 + r, k0 + t] += sum over output rows m in [m0, m1) and
    columns j < OW of dout[n*OP + (o0 + r)*P + oh*OW + j] * x[n*plane + oh*Wq + koff[k0 + t] + j]."""
    for m in range(m0, m1):
        n, oh = divmod(m, OH)
        d = np.stack([dout[n * OP + (o0 + r) * P + oh * OW + np.arange(OW)] for r in range(rows)])
        xs = np.stack([x[n * plane + oh * Wq + koff[k0 + t] + np.arange(OW)] for t in range(taps)])
        part[o0:o0 + rows, k0:k0 + taps] += d.astype(np.float64) @ xs.T.astype(np.float64)


def _dw_tile_codegen(rows, taps, lanes, vecs):
    vty = ir.VectorType(_F32, lanes)

    def codegen(context, builder, signature, args):
        tys = signature.args
        part = context.make_array(tys[0])(context, builder, args[0])
        dout = context.make_array(tys[3])(context, builder, args[3])
        x = context.make_array(tys[4])(context, builder, args[4])
        koff = context.make_array(tys[5])(context, builder, args[5])
        o0, k0, m0, m1, OH, OW, OP, P, plane, Wq = (context.cast(builder, args[i], tys[i], types.int64)
                                                     for i in (1, 2, 6, 7, 8, 9, 10, 11, 12, 13))
        part_rs = cgutils.unpack_tuple(builder, part.shape, 2)[1]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                             f"llvm.fma.v{lanes}f32")
        tap_off = [builder.load(builder.gep(koff.data, [builder.add(k0, _I64(t))], source_etype=_I64), typ=_I64,
                                align=8) for t in range(taps)]
        # walk the rows m0..m1 without a division per row: (oh, dout offset, x offset) step by one
        # output row and wrap to the next image when oh reaches OH
        n0, oh0 = builder.sdiv(m0, OH), builder.srem(m0, OH)
        d_start = builder.add(builder.add(builder.mul(n0, OP), builder.mul(o0, P)), builder.mul(oh0, OW))
        x_start = builder.add(builder.mul(n0, plane), builder.mul(oh0, Wq))
        d_wrap = builder.sub(OP, builder.mul(OH, OW))       # from past the last row to the next image
        x_wrap = builder.sub(plane, builder.mul(OH, Wq))
        entry = builder.block
        head = builder.append_basic_block("dwtile.head")
        body = builder.append_basic_block("dwtile.body")
        done = builder.append_basic_block("dwtile.done")
        builder.branch(head)
        builder.position_at_end(head)
        m, oh, d_off, x_off = (builder.phi(_I64) for _ in range(4))
        accs = [builder.phi(vty) for _ in range(rows * taps)]
        for phi, start in ((m, m0), (oh, oh0), (d_off, d_start), (x_off, x_start)):
            phi.add_incoming(start, entry)
        for acc in accs:
            acc.add_incoming(ir.Constant(vty, [0.0] * lanes), entry)
        builder.cbranch(builder.icmp_signed("<", m, m1), body, done)

        builder.position_at_end(body)
        d_row = builder.gep(dout.data, [d_off], source_etype=_F32)
        x_row = builder.gep(x.data, [x_off], source_etype=_F32)
        new = list(accs)
        for v in range(vecs):
            dv = [builder.load(builder.bitcast(builder.gep(d_row, [builder.add(builder.mul(P, _I64(r)),
                                                                                _I64(lanes * v))], source_etype=_F32),
                                               vty.as_pointer()), typ=vty, align=4) for r in range(rows)]
            xv = [builder.load(builder.bitcast(builder.gep(x_row, [builder.add(tap_off[t], _I64(lanes * v))],
                                                           source_etype=_F32), vty.as_pointer()), typ=vty, align=4)
                  for t in range(taps)]
            for r in range(rows):
                for t in range(taps):
                    new[r * taps + t] = builder.call(fma, [dv[r], xv[t], new[r * taps + t]])
        oh_next = builder.add(oh, _I64(1))
        wrap = builder.icmp_signed("==", oh_next, OH)
        m.add_incoming(builder.add(m, _I64(1)), builder.block)
        oh.add_incoming(builder.select(wrap, _I64(0), oh_next), builder.block)
        d_off.add_incoming(builder.add(builder.add(d_off, OW), builder.select(wrap, d_wrap, _I64(0))), builder.block)
        x_off.add_incoming(builder.add(builder.add(x_off, Wq), builder.select(wrap, x_wrap, _I64(0))), builder.block)
        for acc, upd in zip(accs, new):
            acc.add_incoming(upd, builder.block)
        builder.branch(head)

        builder.position_at_end(done)
        for r in range(rows):
            for t in range(taps):
                total = builder.extract_element(accs[r * taps + t], _I32(0))
                for lane in range(1, lanes):  # horizontal sum, once per tile: not on the hot path
                    total = builder.fadd(total, builder.extract_element(accs[r * taps + t], _I32(lane)))
                idx = builder.add(builder.mul(builder.add(o0, _I64(r)), part_rs), builder.add(k0, _I64(t)))
                ptr = builder.gep(part.data, [idx], source_etype=_F32)
                builder.store(builder.fadd(builder.load(ptr, typ=_F32, align=4), total), ptr, align=4)
        return context.get_dummy_value()

    return codegen


def _make_dw_tile(rows, taps, lanes, vecs):
    cols = lanes * vecs

    def dw_tile(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq):
        for r in range(rows):
            for t in range(taps):
                s = np.float32(0.0)
                for m in range(m0, m1):
                    n = m // OH
                    oh = m % OH
                    for j in range(cols):
                        s += dout[n * OP + (o0 + r) * P + oh * OW + j] * x[n * plane + oh * Wq + koff[k0 + t] + j]
                part[o0 + r, k0 + t] += s

    codegen = _dw_tile_codegen(rows, taps, lanes, vecs)

    def typer(typingctx, part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq):
        ints = (o0, k0, m0, m1, OH, OW, OP, P, plane, Wq)
        if not (_is(part, 2, types.float32) and _is(dout, 1, types.float32) and _is(x, 1, types.float32)
                and _is(koff, 1, types.int64) and all(isinstance(v, types.Integer) for v in ints)):
            return None
        return types.void(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq), codegen

    typer.__name__ = f"_dw_tile_{rows}x{taps}_{lanes}x{vecs}_ir"
    tile_ir = intrinsic(typer)

    @overload(dw_tile, inline="always")
    def _dw_tile_numba(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq):
        return lambda part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq: tile_ir(
            part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq)

    dw_tile.__name__ = dw_tile.__qualname__ = f"dw_tile_{rows}x{taps}_{lanes}x{vecs}"
    dw_tile.__doc__ = f"part[o0:o0+{rows}, k0:k0+{taps}] += dout-rows . patch-rows over output rows m0..m1 (row width {cols})."
    return dw_tile


dw_tile_4x4_16x2 = _make_dw_tile(4, 4, 16, 2)  # OW = 32
dw_tile_4x4_16x1 = _make_dw_tile(4, 4, 16, 1)  # OW = 16
dw_tile_4x4_8x1 = _make_dw_tile(4, 4, 8, 1)    # OW = 8
dw_tile_4x3_8x4 = _make_dw_tile(4, 3, 8, 4)    # AVX2, 12 ymm accumulators: OW = 32
dw_tile_4x3_8x2 = _make_dw_tile(4, 3, 8, 2)    # AVX2: OW = 16
dw_tile_4x3_8x1 = _make_dw_tile(4, 3, 8, 1)    # AVX2: OW = 8
