"""Run every benchmark, one after another (never two at once: they share the cores), each in its own
process, then gather their Markdown tables into results/SUMMARY.md.

    python benchmarks/run_all.py [--quick] [--only xnor_gemm sparse ...]
    python benchmarks/run_all.py --gather     # only rebuild SUMMARY.md from the results/ tables
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (script, the results/<name>.md it writes)
BENCHMARKS = {
    "xnor_gemm": ("bench_xnor_gemm.py", "xnor_gemm"),
    "binary_conv": ("bench_binary_conv.py", "binary_conv"),
    "binary_weight_conv": ("bench_binary_weight_conv.py", "binary_weight_conv"),
    "sparse": ("bench_sparse.py", "sparse"),
    "sparse_conv": ("bench_sparse_conv.py", "sparse_conv"),
    "im2col": ("bench_im2col.py", "im2col"),
    "sal": ("bench_sal.py", "sal"),
    "shift": ("bench_shift.py", "shift"),
    "conv": ("bench_conv.py", "conv"),
    "augment": ("bench_augment.py", "augment"),
    "resnet20_step": ("bench_resnet20_step.py", "resnet20_step"),
    "quantize": ("bench_quantize.py", "quantize"),
    "quant_step": ("bench_quant_step.py", "quant_step"),
    "pruned_step": ("bench_pruned_step.py", "pruned_step"),
    "import_alone": ("bench_import_alone.py", "import_alone"),
    "bitserial": ("bench_bitserial.py", "bitserial"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke run)")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    ap.add_argument("--gather", action="store_true", help="run nothing; rebuild SUMMARY.md from results/")
    args = ap.parse_args()
    names = [] if args.gather else args.only or list(BENCHMARKS)
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"),
               GOMP_SPINCOUNT=os.environ.get("GOMP_SPINCOUNT", "3000"),
               OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT", "4"))
    failed = []
    for name in names:
        script, _ = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    parts = []
    for name in BENCHMARKS:
        md = HERE / "results" / f"{BENCHMARKS[name][1]}{'_quick' if args.quick else ''}.md"
        if md.exists():
            parts.append(md.read_text())
    (HERE / "results" / f"SUMMARY{'_quick' if args.quick else ''}.md").write_text("\n\n".join(parts))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
