"""What LLVM emits for the tiles conv on a given CPU, without running anything (so an AVX-512 target can
be checked on an AVX2 host): the FMAs and the vector registers spilled to and reloaded from the stack,
for each register tile of ``fma_tile`` on its own, then for the function holding the tiles in each of
``conv_tiles``' loops (there both tile sets are compiled, ``wide`` being a run-time argument, so an
AVX2 target's counts include the 16-lane tiles it never runs). A tile compiled alone takes its row
strides as run-time arguments, where ``tile_row`` passes some as constants (8, 16): LLVM may unroll or
schedule the two differently, so both counts are shown.

    python benchmarks/tiles_asm.py                       # the CPU Numba compiles for here
    python benchmarks/tiles_asm.py --cpu rocketlake      # the Intel Xeon's LLVM name, AVX-512 features
    python benchmarks/tiles_asm.py --cpu znver4 --asm-dir /tmp/asm

The target is set before Numba is imported (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES), so the script refuses
to run where Numba is already imported, and the cache goes to a temporary directory removed at the
end, so nothing compiled for another CPU reaches this machine's Numba cache.
"""
import argparse
import os
import re
import sys
import tempfile

# The CPUs this project has met, by LLVM's name, with the features their hosts reported that matter to
# the kernels (the Intel Xeon is an Ice Lake-class core that LLVM names rocketlake). Another CPU: give
# --cpu and --features.
_BASE = "+avx2,+avx,+fma,+f16c,+bmi,+bmi2,+lzcnt,+popcnt,+sse4.2,+sse4.1,+ssse3,+sse3,+sse2,+sse,+movbe"
_AVX512 = "+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd,+avx512vpopcntdq,+avx512vnni"
CPU_FEATURES = {"znver4": f"{_AVX512},{_BASE}", "rocketlake": f"{_AVX512},{_BASE}", "znver3": _BASE}

# A vector register stored to the stack, or loaded (or broadcast, or used as an FMA operand) from it:
# the spills and reloads of a register tile. Scalar moves through xmm registers count too, so the
# columns say "stack stores / loads" rather than spills.
STACK_STORE = re.compile(r"^\s*vmov\w*\s+%[xyz]mm\d+, -?\d*\(%rsp\)")
STACK_LOAD = re.compile(r"^\s*v\w+\s+-?\d*\(%rsp\)(\{1to\d+\})?, %[xyz]mm\d+")
FMA = re.compile(r"^\s*vfn?m(add|sub)\w+")
FUNCTION = re.compile(r"^([A-Za-z_$][\w.$]*):")    # a symbol's label; local ones (.LBB0_2:) start with "."


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", help=f"LLVM CPU name (default: this host's); known: {', '.join(CPU_FEATURES)}")
    ap.add_argument("--features", help="LLVM feature string, with --cpu (default: that CPU's from the list)")
    ap.add_argument("--asm-dir", help="write each loop's assembly here")
    args = ap.parse_args(argv)
    if args.features and not args.cpu:
        ap.error("--features: give --cpu too (the host's features go with the host's CPU)")
    if args.cpu and not args.features and args.cpu not in CPU_FEATURES:
        ap.error(f"--cpu {args.cpu}: give --features too (known CPUs: {', '.join(CPU_FEATURES)})")
    return args


def counts(asm):
    """{function symbol: (FMAs, vector stack stores, vector stack loads)} of each function of an
    assembly listing that has any of them."""
    out, name = {}, None
    for line in asm.splitlines():
        m = FUNCTION.match(line)
        if m:
            name = m.group(1)
            out.setdefault(name, [0, 0, 0])
        elif name is not None:
            for i, pattern in enumerate((FMA, STACK_STORE, STACK_LOAD)):
                out[name][i] += bool(pattern.match(line))
    return {k: tuple(v) for k, v in out.items() if any(v)}


def readable(symbol):
    """A Numba symbol's dotted name, without its package prefix, argument types, unique ids and addresses:
    _ZN16tinycomp_kernels10conv_tiles9_tile_rowB2v7E... -> conv_tiles._tile_row (C++ name mangling,
    identifiers as <length><name>, "<" and ">" escaped as _3c and _3e)."""
    if not symbol.startswith("_ZN"):
        return symbol
    parts, i = [], 3
    while i < len(symbol) and symbol[i].isdigit():
        j = i
        while symbol[j].isdigit():
            j += 1
        n = int(symbol[i:j])
        parts.append(symbol[j:j + n])
        i = j + n
    name = ".".join(parts).replace("_3c", "<").replace("_3e", ">")
    name = re.sub(r"_0x[0-9a-f]+$", "", name)   # a parfor's address: another in every run
    return name.removeprefix("tinycomp_kernels.")


# The jits are made here, from the modules main() imports once the target is set (hence arguments,
# not imports at the top). A tile on its own takes every argument at run time.
def _jit_forward_tile(njit, tile):
    return njit(lambda out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs: tile(
        out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs))


def _jit_weight_tile(njit, tile):
    return njit(lambda part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq: tile(
        part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq))


def tile_counts(np, njit, typeof, names=None):
    """{tile name: (FMAs, stack stores, stack loads)} of every forward and weight-gradient tile (or
    those ``names``), each compiled alone."""
    from tinycomp_kernels import fma_tile

    f1, a2 = np.zeros(64, np.float32), np.zeros((16, 9), np.float32)
    koff = np.zeros(9, np.int64)
    koff.flags.writeable = False                 # as the forward's wrappers pass it
    forward = tuple(typeof(v) for v in (f1, 0, 0, a2, 0, f1, 0, koff, 0, 0))
    weight = tuple(typeof(v) for v in (a2, 0, 0, f1, f1, koff.copy()) + (0,) * 8)  # a padded copy: writable
    out = {}
    every = sorted(n for n in dir(fma_tile) if n.startswith(("fma_tile_", "dw_tile_")) and not n.endswith("_ref"))
    for name in names or every:
        tile = getattr(fma_tile, name)
        if name.startswith("fma"):
            run, sig = _jit_forward_tile(njit, tile), forward
        else:
            run, sig = _jit_weight_tile(njit, tile), weight
        run.compile(sig)
        found = [v for v in counts(run.inspect_asm(sig)).values() if v[0]]
        out[name] = found[0] if found else (0, 0, 0)
    return out


def signatures(conv_tiles, np, typeof):
    """The argument types of each tiles jit as its wrapper calls it (ResNet-20-like shapes), read-only
    flags included: those are part of the type, so another flag compiles another function."""
    x = np.zeros((4, 16, 32, 32), np.float32)
    koff = conv_tiles._tap_offsets(16, 3, 3, (1, 1), (1, 1), 34, 34)          # cached: read-only
    wm = np.zeros((16, 144), np.float32)
    forward = (x, x, wm, koff, True)
    by_image = (x, x, wm, koff, 1, 1, 1, 1, 34, 34, True)
    parts = np.zeros((2, 16, 144), np.float32)
    weight = (parts, x, x, koff.copy(), 128, 1, 1, 1, 1, 34, 34, True)        # padded by concatenate: writable
    dx = np.zeros((4, 16, 32, 32), np.float32)
    dout = np.zeros((4, 32, 16, 16), np.float32)
    wms = tuple(np.zeros((16, 32 * 4), np.float32) for _ in range(4))
    koffs = tuple(koff[:128] for _ in range(4))                               # _phase_layout's: read-only
    phases = np.zeros((4, 4), np.int64)
    backward_input = (dx, dout, wms, koffs, phases, 2, 2, 0, 0, 17, 17, True)
    args = {"conv2d_tiles_jit": forward, "conv2d_tiles_by_image_jit": by_image,
            "conv2d_tiles_backward_input_by_image_jit": backward_input,
            "conv2d_tiles_backward_weight_jit": weight}
    return {name: tuple(typeof(a) for a in values) for name, values in args.items()}


def main(argv=None):
    args = parse_args(argv)
    if "numba" in sys.modules:
        raise SystemExit("tiles_asm: Numba is already imported here, so its target CPU is fixed; "
                         "run this script in a process of its own")
    if args.cpu:
        os.environ["NUMBA_CPU_NAME"] = args.cpu
        os.environ["NUMBA_CPU_FEATURES"] = args.features or CPU_FEATURES[args.cpu]
    with tempfile.TemporaryDirectory(prefix="tiles_asm_") as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        report(args.asm_dir)


def report(asm_dir):
    from tinycomp_kernels import conv_tiles   # before numpy: it sets the thread pools' timeouts
    import numpy as np
    from numba import njit, typeof

    print(f"target {conv_tiles.COMPILE_CPU}, tile set {'AVX-512 (wide)' if conv_tiles.WIDE_VECTORS else 'AVX2'}")
    print("| tile | FMAs | vector stack stores | vector stack loads |\n|---|---|---|---|")
    for name, (fma, store, load) in tile_counts(np, njit, typeof).items():
        print(f"| {name} | {fma} | {store} | {load} |")
    print("\nthe loops' functions with FMAs (the tiles; the rest is argument handling):")
    print("| jit | function | FMAs | vector stack stores | vector stack loads |\n|---|---|---|---|---|")
    for name, sig in signatures(conv_tiles, np, typeof).items():
        jit = getattr(conv_tiles, name)
        jit.compile(sig)
        asm = jit.inspect_asm(sig)
        if asm_dir:
            os.makedirs(asm_dir, exist_ok=True)
            with open(os.path.join(asm_dir, f"{name}_{conv_tiles.COMPILE_CPU}.s"), "w") as f:
                f.write(asm)
        for symbol, (fma, store, load) in counts(asm).items():
            if fma:
                print(f"| {name} | {readable(symbol)} | {fma} | {store} | {load} |")


if __name__ == "__main__":
    main()
