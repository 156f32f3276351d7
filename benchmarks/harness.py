"""Shared timing and reporting for every benchmark script.

The rules (DESIGN.md): validate every variant against the reference *before* timing it; time the
first call apart (it includes Numba's compile); then repeat and report median and min; compute
ratios from timings taken side by side in the same run; record the machine with every result.

    from harness import time_call, machine_info, write_report
    t = time_call(lambda: kernel(a, b), repeats=20)       # {'first_s', 'median_s', 'min_s', 'times_s'}
    write_report("xnor_gemm", rows, columns=[...])        # results/xnor_gemm.json + .md
"""
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def time_call(fn, repeats=10, warmup=1, min_time=0.0):
    """Time ``fn()``: the first call alone (compile + run), then ``warmup`` untimed calls, then
    ``repeats`` timed calls (more if ``min_time`` seconds have not passed). Seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times),
            "repeats": len(times), "times_s": times}


def interleaved(fns, repeats=10, warmup=1, rotate=False):
    """Time several callables round-robin (a, b, a, b, ...) so that machine noise hits all alike.
    ``fns`` maps a name to a callable; returns name -> the dict of ``time_call``. ``rotate``: each
    round starts one callable later (a b c, b c a, c a b, ...), so that each follows every other
    equally often; with a fixed order a memory-bound kernel always inherits the cache left by the
    same predecessor."""
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: {"first_s": first[name], "median_s": statistics.median(ts), "min_s": min(ts),
                   "repeats": len(ts), "times_s": ts} for name, ts in times.items()}


def bench_run(doc, repeats, quick_help, threads=2):
    """The command line of a benchmark script (--quick, --threads, --repeats, described by the
    script's docstring) parsed, and Numba's and BLAS's thread counts set to --threads (capped at
    Numba's pool). Returns (args, threads)."""
    import argparse

    import numba
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--repeats", type=int, default=repeats)
    args = ap.parse_args()
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    threadpool_limits(threads, user_api="blas")
    return args, threads


def paired_ratio(timings, num, den):
    """(median, 25th, 75th percentile) of the per-round ratios num_i / den_i of an ``interleaved``
    result: each pair was timed in the same round, seconds apart, so a slow drift of the machine
    cancels in the ratio, where a ratio of two medians mixes rounds run at different speeds."""
    ratios = np.array(timings[num]["times_s"]) / np.array(timings[den]["times_s"])
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith("avx") or f in ("popcnt", "fma"))
    except OSError:
        pass
    return []


def machine_info():
    """CPU, cores, thread counts and library versions (BLAS from threadpoolctl)."""
    import numba
    from threadpoolctl import threadpool_info

    blas = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for p in threadpool_info() if p.get("user_api") == "blas"]
    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
        "python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(), "blas": blas,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                           "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                           "NUMBA_THREADING_LAYER")
                if k in os.environ},
        "numba_threading_layer": _threading_layer(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def compute_probe(n=512, repeats=30):
    """GFLOP/s of an n x n float32 np.matmul (median of ``repeats``): run before and after a benchmark
    to record how fast the machine was meanwhile (a shared VM's speed drifts by tens of percent)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    t = time_call(lambda: a @ a, repeats=repeats)
    return 2 * n**3 / t["median_s"] / 1e9


def _threading_layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return numba.config.THREADING_LAYER


def markdown_table(rows, columns):
    """``rows``: list of dicts; ``columns``: list of (key, header, format) triples."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key, "")
            if value is None:
                cells.append("n/a")  # a measurement that could not be taken (e.g. torch not installed)
            elif fmt and isinstance(value, (int, float, np.integer, np.floating)):
                cells.append(fmt.format(value))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (with a message) when matplotlib, an
    optional extra, is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install tinycomp-engine[plots]): no plot drawn")
        return None
    return plt


def write_report(name, rows, columns, extra=None, title=None):
    """Write ``results/<name>.json`` (rows + machine + extra) and ``results/<name>.md``; print the table."""
    RESULTS.mkdir(exist_ok=True)
    machine = machine_info()
    payload = {"benchmark": name, "machine": machine, "rows": rows, **(extra or {})}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    table = markdown_table(rows, columns)
    header = f"## {title or name}\n\nMachine: {machine['cpu']}, {machine['cores']} cores, numba threads " \
             f"{machine['numba_threads']}, BLAS {machine['blas']}; numpy {machine['numpy']}, numba " \
             f"{machine['numba']}; {machine['date']}\n\n"
    (RESULTS / f"{name}.md").write_text(header + table + "\n")
    print(header + table)
    return payload
