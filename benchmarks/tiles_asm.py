"""What LLVM emits for the tiles conv on a given CPU, without running anything (so an AVX-512 target can
be checked on an AVX2 host): the FMAs and the vector registers spilled to and reloaded from the stack,
for each register tile of ``fma_tile`` on its own, then for the function holding the tiles in each of
``conv_tiles``' loops (there both tile sets are compiled, ``wide`` being a run-time argument, so an
AVX2 target's counts include the 16-lane tiles it never runs).

    python benchmarks/tiles_asm.py                       # the CPU Numba compiles for here
    python benchmarks/tiles_asm.py --cpu rocketlake      # the Intel Xeon's LLVM name, AVX-512 features
    python benchmarks/tiles_asm.py --cpu znver4 --asm-dir /tmp/asm

The target is set before Numba is imported (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES) and the cache goes to a
temporary directory, so nothing compiled for another CPU reaches this machine's Numba cache.
"""
import argparse
import os
import re
import sys
import tempfile

# the AVX-512 CPUs this project has met, with the features their hosts report that the kernels use
AVX512_FEATURES = ("+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd,+avx512vpopcntdq,+avx512vnni,+avx2,+avx,+fma,"
                   "+f16c,+bmi,+bmi2,+lzcnt,+popcnt,+sse4.2,+sse4.1,+ssse3,+sse3,+sse2,+sse,+movbe")
AVX2_FEATURES = "+avx2,+avx,+fma,+f16c,+bmi,+bmi2,+lzcnt,+popcnt,+sse4.2,+sse4.1,+ssse3,+sse3,+sse2,+sse,+movbe"
KNOWN = {"znver4": AVX512_FEATURES, "rocketlake": AVX512_FEATURES, "icelake-server": AVX512_FEATURES,
         "skylake-avx512": AVX512_FEATURES, "sapphirerapids": AVX512_FEATURES, "znver3": AVX2_FEATURES,
         "haswell": AVX2_FEATURES}

SPILL = re.compile(r"vmov\w*\s+%[xyz]mm\d+, -?\d*\(%rsp\)")
RELOAD = re.compile(r"-?\d*\(%rsp\)(\{1to\d+\})?, %[xyz]mm\d+")
FMA = re.compile(r"\bvfn?m(add|sub)\w+")
LABEL = re.compile(r"^([A-Za-z_$][\w.$]*):")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", help=f"LLVM CPU name (default: this host's); known: {', '.join(sorted(KNOWN))}")
    ap.add_argument("--features", help="LLVM feature string (default: the --cpu's from the list above)")
    ap.add_argument("--asm-dir", help="write each function's assembly here")
    args = ap.parse_args(argv)
    if args.cpu and not args.features and args.cpu not in KNOWN:
        ap.error(f"--cpu {args.cpu}: give --features too (known CPUs: {', '.join(sorted(KNOWN))})")
    return args


def counts(asm):
    """{function symbol: (FMAs, vector spills, vector reloads)} of each function of an assembly listing
    that has any of them."""
    out, name = {}, None
    for line in asm.splitlines():
        m = LABEL.match(line)
        if m and not m.group(1).startswith(".L"):
            name = m.group(1)
            out.setdefault(name, [0, 0, 0])
        elif name is not None:
            for i, pattern in enumerate((FMA, SPILL, RELOAD)):
                out[name][i] += bool(pattern.search(line))
    return {k: tuple(v) for k, v in out.items() if any(v)}


def _alone(njit, tile):
    return njit(lambda out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs: tile(
        out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs))


def _alone_dw(njit, tile):
    return njit(lambda part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq: tile(
        part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq))


def tile_counts(np, njit, typeof, names=None):
    """{tile name: (FMAs, spills, reloads)} of every forward and weight-gradient tile (or those ``names``),
    each compiled alone."""
    from tinycomp_kernels import fma_tile

    f1, a2 = np.zeros(64, np.float32), np.zeros((16, 9), np.float32)
    koff = np.zeros(9, np.int64)
    koff.flags.writeable = False
    forward = tuple(typeof(v) for v in (f1, 0, 0, a2, 0, f1, 0, koff, 0, 0))
    weight = tuple(typeof(v) for v in (a2, 0, 0, f1, f1, koff) + (0,) * 8)
    out = {}
    every = sorted(n for n in dir(fma_tile) if n.startswith(("fma_tile_", "dw_tile_")) and not n.endswith("_ref"))
    for name in names or every:
        tile = getattr(fma_tile, name)
        run, sig = (_alone(njit, tile), forward) if name.startswith("fma") else (_alone_dw(njit, tile), weight)
        run.compile(sig)
        found = [v for v in counts(run.inspect_asm(sig)).values() if v[0]]
        out[name] = found[0] if found else (0, 0, 0)
    return out


def signatures(ct, np, typeof):
    """The argument types of each tiles jit as the wrappers call them (ResNet-20-like shapes)."""
    x = np.zeros((4, 16, 32, 32), np.float32)
    koff = ct._tap_offsets(16, 3, 3, (1, 1), (1, 1), 34, 34)          # read-only, as the wrappers pass it
    wm = np.zeros((16, 144), np.float32)
    forward = (x, x, wm, koff, True)
    by_image = (x, x, wm, koff, 1, 1, 1, 1, 34, 34, True)
    parts = np.zeros((2, 16, 144), np.float32)
    weight = (parts, x, x, koff, 128, 1, 1, 1, 1, 34, 34, True)
    dx = np.zeros((4, 16, 32, 32), np.float32)
    dout = np.zeros((4, 32, 16, 16), np.float32)
    wms = tuple(np.zeros((16, 32 * 4), np.float32) for _ in range(4))
    koffs = tuple(koff[:128].copy() for _ in range(4))
    phases = np.zeros((4, 4), np.int64)
    backward_input = (dx, dout, wms, koffs, phases, 2, 2, 0, 0, 17, 17, True)
    args = {"conv2d_tiles_jit": forward, "conv2d_tiles_by_image_jit": by_image,
            "conv2d_tiles_backward_input_by_image_jit": backward_input,
            "conv2d_tiles_backward_weight_jit": weight}
    return {name: tuple(typeof(a) for a in values) for name, values in args.items()}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.cpu:
        os.environ["NUMBA_CPU_NAME"] = args.cpu
        os.environ["NUMBA_CPU_FEATURES"] = args.features or KNOWN[args.cpu]
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tiles_asm_")
    from tinycomp_kernels import conv_tiles as ct   # before numpy: it sets the thread pools' timeouts
    import numpy as np
    from numba import njit, typeof

    print(f"target {ct.COMPILE_CPU}, tile set {'AVX-512 (wide)' if ct.WIDE_VECTORS else 'AVX2'}")
    print("| tile | FMAs | vector spills | vector reloads |\n|---|---|---|---|")
    for name, (fma, spill, reload) in tile_counts(np, njit, typeof).items():
        print(f"| {name} | {fma} | {spill} | {reload} |")
    print("\nthe loops' functions with FMAs (the tiles; the rest is argument handling):")
    print("| jit | function | FMAs | vector spills | vector reloads |\n|---|---|---|---|---|")
    for name, sig in signatures(ct, np, typeof).items():
        jit = getattr(ct, name)
        jit.compile(sig)
        asm = jit.inspect_asm(sig)
        if args.asm_dir:
            os.makedirs(args.asm_dir, exist_ok=True)
            with open(os.path.join(args.asm_dir, f"{name}_{ct.COMPILE_CPU}.s"), "w") as f:
                f.write(asm)
        for symbol, (fma, spill, reload) in counts(asm).items():
            if not fma:
                continue
            short = re.sub(r"^_ZN(\d+\w+?)?\d+tinycomp_kernels\d+", "", symbol)[:48]
            print(f"| {name} | {short} | {fma} | {spill} | {reload} |")


if __name__ == "__main__":
    main()
