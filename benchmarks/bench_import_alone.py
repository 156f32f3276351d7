"""The kernels imported without tinycomp: speed against float ``np.matmul`` by the order of the imports.

Issue 14's experiment, as a new user runs it: a process that imports only numpy and tinycomp_kernels,
calling each kernel alternately with the float ``np.matmul`` it is compared to (as in a network, where a
Numba kernel follows a BLAS call and the reverse):

- ``xnor_gemm`` at M x N x K = 1024 x 128 x 1152 (operands packed beforehand) vs float32 A @ B.T;
- ``csr_matmul`` at 95 % unstructured sparsity, W (64, 576) @ b (576, 16384) (ResNet-20 stage 3 as a
  matmul, batch 256; bench_sparse.py's smallest shape) vs the dense float32 W @ b.

Each import order runs in fresh processes (``--processes`` of each, round-robin), from an environment
without OMP_WAIT_POLICY, GOMP_SPINCOUNT and OPENBLAS_THREAD_TIMEOUT:

- "kernels first": ``import tinycomp_kernels`` before numpy (the package sets both variables);
- "tinycomp": ``import tinycomp`` (the reference: the speed tinycomp users get);
- "numpy first": numpy before tinycomp_kernels (too late for OpenBLAS: the import warns);
- "numpy first, variables set": the same with both variables in the environment, as the warning asks.

Every result is validated first (xnor_gemm exactly against the float product of the signs, csr_matmul
against the dense product); the first calls (compile, or cache load) are timed apart. Per process: the
median of ``--repeats`` times of each side and the median of the per-pair ratios float / kernel; per
order, the median and range of that ratio over the processes. Default thread counts, as a user's.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_import_alone.py [--quick] [--repeats 30] [--processes 5]
"""
import argparse
import json
import os
import subprocess
import sys

VARS = {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "3000", "OPENBLAS_THREAD_TIMEOUT": "4"}
ORDERS = {  # name -> (modules imported first, in order; variables added to the environment)
    "kernels first": (("tinycomp_kernels", "numpy"), {}),
    "tinycomp": (("tinycomp", "numpy"), {}),
    "numpy first": (("numpy", "tinycomp_kernels"), {}),
    "numpy first, variables set": (("numpy", "tinycomp_kernels"), VARS),
}
XNOR_SHAPE = (1024, 128, 1152)  # M, N, K
CSR_SHAPE, CSR_SPARSITY = (64, 576, 16384), 0.95  # M, K, N


def child(order, repeats):
    """One process: import in ``order``, validate, time; print one JSON line."""
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ORDERS[order][0]:
            importlib.import_module(name)
    import time

    import numba
    import numpy as np
    from threadpoolctl import threadpool_info

    from tinycomp_kernels import thread_pools
    from tinycomp_kernels.bits import pack_signs
    from tinycomp_kernels.csr import csr_from_dense
    from tinycomp_kernels.sparse_matmul import csr_matmul
    from tinycomp_kernels.xnor_gemm import xnor_gemm

    rng = np.random.default_rng(0)
    m, n, k = XNOR_SHAPE
    a = np.where(rng.random((m, k)) < 0.5, -1.0, 1.0).astype(np.float32)  # (M, K) ±1
    b_t = np.ascontiguousarray(np.where(rng.random((n, k)) < 0.5, -1.0, 1.0).astype(np.float32).T)  # (K, N)
    a_bits, b_bits = pack_signs(a), pack_signs(np.ascontiguousarray(b_t.T))  # (M, K/64), (N, K/64)
    if not np.array_equal(xnor_gemm(a_bits, b_bits, k), (a @ b_t).astype(np.int32)):
        raise SystemExit("xnor_gemm disagrees with the float product of the signs")
    cm, ck, cn = CSR_SHAPE
    w = rng.standard_normal((cm, ck)).astype(np.float32)
    w.reshape(-1)[rng.permutation(w.size)[:round(CSR_SPARSITY * w.size)]] = 0  # unstructured, exact count
    cols = rng.standard_normal((ck, cn)).astype(np.float32)
    csr = csr_from_dense(w)
    if not np.allclose(csr_matmul(*csr, cols), w @ cols, rtol=1e-4, atol=1e-4):
        raise SystemExit("csr_matmul disagrees with the dense product")

    pairs = {"xnor_gemm": (lambda: a @ b_t, lambda: xnor_gemm(a_bits, b_bits, k)),
             "csr_matmul": (lambda: w @ cols, lambda: csr_matmul(*csr, cols))}
    result = {}
    for kernel, (dense, fast) in pairs.items():
        first = []
        for fn in (dense, fast):  # first calls apart: compile (or cache load), cold caches
            t0 = time.perf_counter()
            fn()
            first.append(time.perf_counter() - t0)
        times = ([], [])
        for _ in range(repeats):  # alternating, as in a network
            for side, fn in zip(times, (dense, fast)):
                t0 = time.perf_counter()
                fn()
                side.append(time.perf_counter() - t0)
        ratios = np.array(times[0]) / np.array(times[1])
        result[kernel] = {"float_ms": 1e3 * float(np.median(times[0])), "kernel_ms": 1e3 * float(np.median(times[1])),
                          "ratio": float(np.median(ratios)), "first_ms": [1e3 * t for t in first],
                          "times_s": [times[0], times[1]]}
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    print(json.dumps({
        "order": order, "kernels": result, "late": list(thread_pools.LATE),
        "warnings": [str(c.message) for c in caught if issubclass(c.category, thread_pools.ThreadPoolWarning)],
        "env": {v: os.environ.get(v) for v in VARS}, "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "blas": [{key: lib.get(key) for key in ("internal_api", "version", "num_threads")} for lib in threadpool_info()
                 if lib.get("user_api") == "blas"]}))


def run_child(order, repeats):
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(ORDERS[order][1])
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", order, "--repeats", str(repeats)],
                         env=env, check=True, capture_output=True, text=True, timeout=1800).stdout
    return json.loads(out.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 process per order, 3 repeats: a smoke run")
    ap.add_argument("--repeats", type=int, default=30, help="timed pairs per kernel and process (default 30)")
    ap.add_argument("--processes", type=int, default=5, help="fresh processes per import order (default 5)")
    ap.add_argument("--child", choices=sorted(ORDERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.repeats)
    repeats, processes = (3, 1) if args.quick else (args.repeats, args.processes)
    runs = {order: [] for order in ORDERS}
    for p in range(processes):  # round-robin, so that a drift of the machine hits every order alike
        for order in ORDERS:
            runs[order].append(run_child(order, repeats))
            print(f"process {p + 1}/{processes}, {order}: " + ", ".join(
                f"{kn} x{r['ratio']:.2f}" for kn, r in runs[order][-1]["kernels"].items()), flush=True)

    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import write_report

    rows = []
    for order, outs in runs.items():
        for kernel in ("xnor_gemm", "csr_matmul"):
            ratios = [o["kernels"][kernel]["ratio"] for o in outs]
            rows.append({"order": order, "kernel": kernel,
                         "float_ms": float(np.median([o["kernels"][kernel]["float_ms"] for o in outs])),
                         "kernel_ms": float(np.median([o["kernels"][kernel]["kernel_ms"] for o in outs])),
                         "ratio": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios),
                         "late": ", ".join(outs[0]["late"]) or "none", "warned": sum(bool(o["warnings"]) for o in outs)})
    m, n, k = XNOR_SHAPE
    cm, ck, cn = CSR_SHAPE
    write_report("import_alone" + ("_quick" if args.quick else ""), rows, [
        ("order", "imports", None), ("kernel", "kernel", None),
        ("float_ms", "float np.matmul ms", "{:.3f}"), ("kernel_ms", "kernel ms", "{:.3f}"),
        ("ratio", "speedup (median of processes)", "{:.2f}x"), ("ratio_min", "min", "{:.2f}x"),
        ("ratio_max", "max", "{:.2f}x"), ("late", "too late", None), ("warned", "processes warned", None),
    ], extra={"repeats": repeats, "processes": processes, "quick": args.quick, "runs": runs,
              "shapes": {"xnor_gemm": {"M": m, "N": n, "K": k},
                         "csr_matmul": {"M": cm, "K": ck, "N": cn, "sparsity": CSR_SPARSITY}},
              "note": "speedup = float time / kernel time, median of the per-pair ratios in a process; each "
                      "order in fresh processes from an environment without OMP_WAIT_POLICY, "
                      "GOMP_SPINCOUNT and OPENBLAS_THREAD_TIMEOUT (but for 'variables set')"},
                 title=f"Kernels imported alone: xnor_gemm {m}x{n}x{k} and csr_matmul {cm}x{ck} @ {ck}x{cn} at "
                       f"{CSR_SPARSITY:.0%} vs float np.matmul, by import order")


if __name__ == "__main__":
    main()
