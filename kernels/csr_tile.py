"""The register micro-kernel of the sparse (CSR) matmul: one output row segment of 64 columns.

What: ``csr_row_tile(out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate)`` computes, for
c < ncols (ncols <= TILE = 64),

    out[i, j0 + c] = (out[i, j0 + c] if accumulate else 0) + sum over p in [p0, p1) of
                     values[p] * bflat[indices[p] * N_b + bj0 + c]

with ``out`` (M, N) and ``b`` (K, N_b) C-contiguous float32 (bflat = b.reshape(-1): with bj0 + ncols <= N_b
this is b[indices[p], bj0 + c]; a larger bj0 = k0 * N_b + c0 shifts the rows by k0), ``indices`` int32 and
``values`` float32. ``csr_row_tile_full`` is the same with ncols fixed at 64 (ncols is ignored). No
bounds are checked: the caller guarantees j0 + ncols <= N, 0 <= p0 <= p1 <= len(indices) and every
flat index in range.

``prefetch(a, k)`` / ``prefetch_l2(a, k)`` ask the CPU to bring the cache line holding
a.reshape(-1)[k] into L1 (prefetcht0) / L2 (prefetcht1, Zen 4 and later), and ``prefetch_w(a, k)``
into L1 for writing (prefetchw: the line arrives owned, so a store to it need not wait). Hints: no
fault, no effect on results; no-ops outside Numba.

Why: an axpy formulation (out row += v * b row, one pass per kept weight) loads and stores the output
once per kept weight, and Numba's loop vectoriser keeps accumulators in memory. Here the output segment
lives in four <16 x float> registers (zmm) for the whole list of kept weights: per kept weight one
index load, one broadcast of the value, four vector loads of b (folded into the FMAs) and four fused
multiply-adds; the output is loaded (when accumulating) and stored once. Two accumulator sets (kept
weight p goes to set p mod 2, summed at the end) keep eight FMA chains in flight to cover the FMA
latency. The partial-width variant uses masked vector loads/stores (llvm.masked.load/store), so any N
is handled at vector speed. The IR is emitted through ``numba.extending.intrinsic`` like
``tinycomp_kernels.popcount`` and ``tinycomp_kernels.fma_tile``.

``band_tiles(ob, r0, r1, cw, ptr, base, accumulate, indices, values, bb)`` runs the tiles over a band:
for every 64-column tile of ``cw`` columns and every row i in [r0, r1), the row's entries
ptr[base + i] : ptr[base + i + 1] into ob[i - r0] (rows with no entry skipped when accumulating). The
sparse matmul and the implicit-im2col sparse convolution share it; tiles outer, rows inner, so one
tile's column of the band stays in L1 while every row reads it.

Outside Numba (``NUMBA_DISABLE_JIT=1`` or a plain call) the tiles are ordinary Python functions with
the same result up to float rounding order.
Reference: ``csr_row_tile_ref`` (NumPy gather + dot); tests/kernels/test_sparse_matmul.py tests the products.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

LANES = 16           # float32 lanes of a 512-bit vector
TILE = 4 * LANES     # output columns per tile
_I1, _I8, _I32, _I64, _F32 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()


def csr_row_tile_ref(out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate):
    """NumPy oracle: gather the kept rows of b, one dot product with the kept values (float64)."""
    rows = b.reshape(-1)[indices[p0:p1, None].astype(np.int64) * b.shape[1] + bj0 + np.arange(ncols)]
    seg = values[p0:p1].astype(np.float64) @ rows.astype(np.float64)
    out[i, j0:j0 + ncols] = (out[i, j0:j0 + ncols] if accumulate else 0) + seg


def _is(t, ndim, dtype):
    return isinstance(t, types.Array) and t.ndim == ndim and t.dtype == dtype and t.layout == "C"


def _codegen(masked, vecs, sets):
    vty = ir.VectorType(_F32, LANES)
    mty = ir.VectorType(_I1, LANES)
    zero = ir.Constant(vty, [0.0] * LANES)

    def codegen(context, builder, signature, args):
        tys = signature.args
        out = context.make_array(tys[0])(context, builder, args[0])
        indices = context.make_array(tys[6])(context, builder, args[6])
        values = context.make_array(tys[7])(context, builder, args[7])
        b = context.make_array(tys[8])(context, builder, args[8])
        i, j0, ncols, p0, p1 = (context.cast(builder, args[a], tys[a], types.int64) for a in (1, 2, 3, 4, 5))
        bj0 = context.cast(builder, args[9], tys[9], types.int64)
        accumulate = context.cast(builder, args[10], tys[10], types.boolean)
        b_rs = cgutils.unpack_tuple(builder, b.shape, 2)[1]
        out_rs = cgutils.unpack_tuple(builder, out.shape, 2)[1]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                             "llvm.fma.v16f32")
        pty = vty.as_pointer()
        if masked:
            mload = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [pty, _I32, mty, vty]), "llvm.masked.load.v16f32.p0v16f32")
            mstore = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [vty, pty, _I32, mty]),
                "llvm.masked.store.v16f32.p0v16f32")
            nsplat = builder.shuffle_vector(builder.insert_element(ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined),
                                                                   ncols, _I32(0)),
                                            ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined),
                                            ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
            masks = [builder.icmp_signed("<", ir.Constant(ir.VectorType(_I64, LANES),
                                                          [LANES * v + l for l in range(LANES)]), nsplat)
                     for v in range(vecs)]

        def vload(ptr, v):
            p = builder.bitcast(builder.gep(ptr, [_I64(LANES * v)], source_etype=_F32), pty)
            if masked:
                return builder.call(mload, [p, _I32(4), masks[v], zero])
            return builder.load(p, typ=vty, align=4)

        def vstore(val, ptr, v):
            p = builder.bitcast(builder.gep(ptr, [_I64(LANES * v)], source_etype=_F32), pty)
            if masked:
                builder.call(mstore, [val, p, _I32(4), masks[v]])
            else:
                builder.store(val, p, align=4)

        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
        b_col0 = builder.gep(b.data, [bj0], source_etype=_F32)
        out_seg = builder.gep(out.data, [builder.add(builder.mul(i, out_rs), j0)], source_etype=_F32)

        # initial accumulators of set 0: the output segment (accumulate) or zeros
        entry = builder.block
        load_blk = builder.append_basic_block("csrtile.load")
        start = builder.append_basic_block("csrtile.start")
        builder.cbranch(accumulate, load_blk, start)
        builder.position_at_end(load_blk)
        loaded = [vload(out_seg, v) for v in range(vecs)]
        builder.branch(start)
        builder.position_at_end(start)
        init = []
        for v in range(vecs):
            phi = builder.phi(vty)
            phi.add_incoming(zero, entry)
            phi.add_incoming(loaded[v], load_blk)
            init.append(phi)

        def step(p, accs):
            k = builder.sext(builder.load(builder.gep(indices.data, [p], source_etype=_I32), typ=_I32, align=4), _I64)
            val = builder.load(builder.gep(values.data, [p], source_etype=_F32), typ=_F32, align=4)
            vs = builder.shuffle_vector(builder.insert_element(undef, val, _I32(0)), undef, splat)
            row = builder.gep(b_col0, [builder.mul(k, b_rs)], source_etype=_F32)
            return [builder.call(fma, [vs, vload(row, v), accs[v]]) for v in range(vecs)]

        # main loop: SETS kept weights per iteration, weight p + s into accumulator set s
        head = builder.append_basic_block("csrtile.head")
        body = builder.append_basic_block("csrtile.body")
        tail = builder.append_basic_block("csrtile.tail")
        builder.branch(head)
        builder.position_at_end(head)
        p = builder.phi(_I64)
        acc = [[builder.phi(vty) for _ in range(vecs)] for _ in range(sets)]
        p.add_incoming(p0, start)
        for s in range(sets):
            for v in range(vecs):
                acc[s][v].add_incoming(init[v] if s == 0 else zero, start)
        builder.cbranch(builder.icmp_signed("<=", builder.add(p, _I64(sets)), p1), body, tail)
        builder.position_at_end(body)
        new = [step(builder.add(p, _I64(s)), acc[s]) for s in range(sets)]
        p.add_incoming(builder.add(p, _I64(sets)), body)
        for s in range(sets):
            for v in range(vecs):
                acc[s][v].add_incoming(new[s][v], body)
        builder.branch(head)

        # tail: fewer than SETS weights left; weight p + s (if any) still goes to set s
        builder.position_at_end(tail)
        cur = [list(a) for a in acc]
        for s in range(sets - 1):
            before = builder.block
            do = builder.append_basic_block(f"csrtile.rest{s}")
            join = builder.append_basic_block(f"csrtile.join{s}")
            q = builder.add(p, _I64(s))
            builder.cbranch(builder.icmp_signed("<", q, p1), do, join)
            builder.position_at_end(do)
            stepped = step(q, cur[s])
            builder.branch(join)
            builder.position_at_end(join)
            merged = []
            for v in range(vecs):
                phi = builder.phi(vty)
                phi.add_incoming(cur[s][v], before)
                phi.add_incoming(stepped[v], do)
                merged.append(phi)
            cur[s] = merged
        while len(cur) > 1:  # pairwise sum of the sets
            cur = [[builder.fadd(x, y) for x, y in zip(cur[s], cur[s + 1])] for s in range(0, len(cur), 2)]
        for v in range(vecs):
            vstore(cur[0][v], out_seg, v)
        return context.get_dummy_value()

    return codegen


def _make(masked):
    vecs, sets = TILE // LANES, 2  # 4 vectors x 2 accumulator sets: eight independent FMA chains

    def tile(out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate):
        w = ncols if masked else TILE
        acc = out[i, j0:j0 + w].copy() if accumulate else np.zeros(w, np.float32)
        flat = b.reshape(-1)
        for p in range(p0, p1):
            start = indices[p] * b.shape[1] + bj0
            acc += values[p] * flat[start:start + w]
        out[i, j0:j0 + w] = acc

    codegen = _codegen(masked, vecs, sets)

    def typer(typingctx, out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate):
        if not (_is(out, 2, types.float32) and _is(b, 2, types.float32) and _is(indices, 1, types.int32)
                and _is(values, 1, types.float32) and isinstance(accumulate, types.Boolean)
                and all(isinstance(v, types.Integer) for v in (i, j0, ncols, p0, p1, bj0))):
            return None
        return types.void(out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate), codegen

    name = "csr_row_tile" + ("" if masked else "_full")
    typer.__name__ = f"_{name}_ir"
    tile_ir = intrinsic(typer)

    @overload(tile, inline="always")
    def _tile_numba(out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate):
        return lambda out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate: tile_ir(
            out, i, j0, ncols, p0, p1, indices, values, b, bj0, accumulate)

    tile.__name__ = tile.__qualname__ = name
    tile.__doc__ = (f"out[i, j0:j0+{'ncols' if masked else TILE}] (+)= sum_p values[p] * b[indices[p], ...] "
                    "(module doc).")
    return tile


csr_row_tile = _make(True)
csr_row_tile_full = _make(False)


def _band_tiles(ob, r0, r1, cw, ptr, base, accumulate, indices, values, bb):
    for jt in range(0, cw, TILE):
        w = min(TILE, cw - jt)
        for i in range(r0, r1):
            p0 = ptr[base + i]
            p1 = ptr[base + i + 1]
            if accumulate and p1 == p0:
                continue
            if w == TILE:
                csr_row_tile_full(ob, i - r0, jt, TILE, p0, p1, indices, values, bb, jt, accumulate)
            else:
                csr_row_tile(ob, i - r0, jt, w, p0, p1, indices, values, bb, jt, accumulate)


# inlined into the cached kernels of sparse_matmul and sparse_implicit: after editing this module, clear their
# __pycache__ (Numba's cache does not follow functions it inlined from another module)
band_tiles = njit(inline="always")(_band_tiles)


def prefetch(a, k):
    """Hint: fetch the cache line of a.reshape(-1)[k] into L1 (a no-op outside Numba)."""


def prefetch_l2(a, k):
    """Hint: fetch the cache line of a.reshape(-1)[k] into L2 (a no-op outside Numba)."""


def prefetch_w(a, k):
    """Hint: fetch the cache line of a.reshape(-1)[k] into L1 to be written (a no-op outside Numba)."""


def _prefetch_intrinsic(locality, write=False):
    def typer(typingctx, a, k):
        if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(k, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            idx = context.cast(builder, args[1], signature.args[1], types.int64)
            addr = builder.gep(arr.data, [idx], source_etype=context.get_data_type(signature.args[0].dtype))
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]),
                "llvm.prefetch.p0i8")
            # read (0) or write (1), temporal locality 3 = prefetcht0 / 2 = prefetcht1, data cache (1)
            builder.call(fn, [builder.bitcast(addr, _I8.as_pointer()), _I32(int(write)), _I32(locality), _I32(1)])
            return context.get_dummy_value()

        return types.void(a, k), codegen

    typer.__name__ = f"_prefetch{'w' if write else ''}{locality}_ir"
    return intrinsic(typer)


_prefetch_l1_ir = _prefetch_intrinsic(3)
_prefetch_l2_ir = _prefetch_intrinsic(2)
_prefetch_w_ir = _prefetch_intrinsic(3, write=True)


@overload(prefetch, inline="always")
def _prefetch_numba(a, k):
    return lambda a, k: _prefetch_l1_ir(a, k)


@overload(prefetch_l2, inline="always")
def _prefetch_l2_numba(a, k):
    return lambda a, k: _prefetch_l2_ir(a, k)


@overload(prefetch_w, inline="always")
def _prefetch_w_numba(a, k):
    return lambda a, k: _prefetch_w_ir(a, k)
