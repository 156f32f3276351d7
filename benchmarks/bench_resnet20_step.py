"""ResNet-20 training step: batch 128, 3×32×32 float32; forward, cross-entropy, backward, SGD step
(Nesterov momentum 0.9, weight decay 5e-4). Reports images/s, the time split by op, peak memory, and
— when PyTorch is installed — PyTorch's full step for the same network and weights, in a separate
process with the same thread count, and the throughput ratio. ``--model resnet18`` (CIFAR ResNet-18)
and ``--batch`` change the case (results/<model>_step[_b<batch>]). Peak memory on both sides: the
peak resident set above the process's size just before the first step (``step_memory``).

    python benchmarks/bench_resnet20_step.py [--threads 2] [--repeats 10] [--rounds 3] [--quick] [--no-torch]
        [--model resnet18] [--batch 64] [--method bwn | --method xnor | --method prune --sparsity 0.9]

Validation first: tinycomp's eval-mode logits must match PyTorch's for the same weights (when
PyTorch is there), and a step must reduce nothing to NaN.
"""
import os

# sleeping thread pools, as tinycomp sets them, before numpy and numba start (see tinycomp/__init__.py)
import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import time_call, write_report  # noqa: E402
from step_memory import StepMemory  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import Tensor, compress, functional as F, models, nn, optim  # noqa: E402
from tinycomp.autograd import profile  # noqa: E402
from tinycomp.compress.run_config import summary_model  # noqa: E402
from tinycomp_kernels import thread_pools  # noqa: E402


def make_step(model, x, y, lr=0.1, after_step=None):
    """One training step of ``model`` on (x, y) as a callable; ``after_step(model)`` runs after the
    optimizer step (a compression method's hook)."""
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), y)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(model)
        return loss

    return step


def _pooled(results):
    """Median and minimum over the step times of several ``time_call``-like results."""
    times = [v for r in results for v in r["times_s"]]
    return {"median_s": float(np.median(times)), "min_s": float(min(times)), "times_s": times}


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def run_torch(model, x, y, threads, repeats, name="resnet20", method="none"):
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "w.npz"), **model.state_dict())
        np.savez(os.path.join(tmp, "x.npz"), x=x, y=y)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_resnet20.py")
        # PyTorch in its default configuration: without tinycomp's wait-policy settings
        env = {k: v for k, v in os.environ.items() if k not in thread_pools.SETTINGS}
        env["OMP_NUM_THREADS"] = str(threads)
        out = subprocess.run([sys.executable, script, "--threads", str(threads), "--model", name, "--method", method,
                              "--batch", str(len(y)),
                              "--repeats", str(repeats), "--weights", os.path.join(tmp, "w.npz"),
                              "--input", os.path.join(tmp, "x.npz")],
                             capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def random_batchnorm(model, rng):
    """Random BatchNorm affine parameters and running statistics, for the validation only (the step's
    speed does not depend on them). With the defaults (0, 1, 1, 0) a Bi-Real block's sum of two
    BatchNorm outputs of integer-valued binary convs is often exactly 0, where the two libraries'
    last-bit differences flip sign(0) and every logit after it."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            c = m.weight.shape[0]
            m.weight.data[:] = rng.uniform(0.5, 1.5, c)
            m.bias.data[:] = rng.normal(0.0, 0.5, c)
            m.running_mean[:] = rng.normal(0.0, 0.2, c)
            m.running_var[:] = rng.uniform(0.5, 1.5, c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet20", choices=("resnet20", "resnet18"))
    ap.add_argument("--method", default="none", choices=("none", "bwn", "xnor", "prune"),
                    help="bwn: both sides binary-weight (tinycomp.compress.convert; PyTorch fake-quantized); "
                         "xnor: both sides Bi-Real blocks on sign(x) with BWN weights (PyTorch fake-quantized); "
                         "prune: every conv but the first at --sparsity, masks fixed (tinycomp's sparse "
                         "training kernels where they pay; PyTorch's dense W * mask)")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides (--quick: 1)")
    ap.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    rounds = 1 if args.quick else max(1, args.rounds)
    tinycomp.set_num_threads(args.threads)
    tinycomp.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int64)
    if args.method == "prune":
        model = summary_model({"model": args.model, "width": 1.0, "method": "prune", "sparsity": args.sparsity}, 10)
    else:
        model = models.get(args.model)
    if args.method in ("bwn", "xnor"):
        compress.convert(model, args.method)
    if args.method == "xnor":
        random_batchnorm(model, rng)
    use_torch = torch_available() and not args.no_torch

    # 1. validate (before anything is timed)
    torch_result = None
    if use_torch:
        torch_result = run_torch(model, x, y, args.threads, repeats, args.model, args.method)
        model.eval()
        with tinycomp.no_grad():
            ours = model(Tensor(x)).data
        model.train()
        per_image = np.abs(ours - np.array(torch_result["eval_logits"], np.float32)).max(axis=1)
        diff = float(per_image.max())
        if args.method == "xnor":  # a sign of a value within rounding of 0 may flip: most images, not all
            agree = float(np.mean(per_image <= 1e-3))
            if agree < 0.9:
                raise SystemExit(f"validation failed: eval logits match PyTorch's within 1e-3 on {agree:.0%} of "
                                 f"the images (largest difference {diff})")
            print(f"validated: eval-mode logits match PyTorch's within 1e-3 on {agree:.1%} of the images")
        elif diff > 1e-3:
            raise SystemExit(f"validation failed: eval logits differ from PyTorch's by {diff}")
        else:
            print(f"validated: eval-mode logits match PyTorch's within {diff:.2e}")
    step = make_step(model, x, y, after_step=compress.after_step)  # pruning: the masks re-applied

    # 2. time the full step (and the peak resident set above the size before it, as PyTorch's side does),
    # in rounds that alternate the two sides: the machine's speed drifts by up to 10-20 % within minutes,
    # so the ratio is the median of the rounds' ratios (round 1's PyTorch side is the validation run)
    memory = StepMemory().start()
    t = time_call(step, repeats=repeats, warmup=1)
    rss_above = memory.peak_above_start()
    tc_rounds, torch_rounds = [t], [torch_result] if torch_result else []
    for _ in range(1, rounds):
        tc_rounds.append(time_call(step, repeats=repeats, warmup=0))
        if use_torch:
            torch_rounds.append(run_torch(model, x, y, args.threads, repeats, args.model, args.method))
    round_ratios = [r_t["median_s"] / r_c["median_s"] for r_c, r_t in zip(tc_rounds, torch_rounds)]
    t = {"first_s": t["first_s"], **_pooled(tc_rounds)}
    if not np.isfinite(step().item()):
        raise SystemExit("validation failed: the loss is not finite")

    # 3. where the time goes: op totals over 3 profiled steps
    with profile() as prof:
        t0 = time.perf_counter()
        for _ in range(3):
            step()
        profiled = (time.perf_counter() - t0) / 3
    split = {f"{name} {phase}": seconds / 3 for (name, phase), (_, seconds) in prof.table().items()}
    split["rest (Python, optimizer, graph)"] = profiled - sum(split.values())

    # 4. memory of one step: NumPy allocations (tracemalloc) and the process's peak RSS
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    ips = args.batch / t["median_s"]
    rows = [{"side": "tinycomp", "median_s": t["median_s"], "min_s": t["min_s"], "first_s": t["first_s"],
             "images_per_s": ips, "ratio_vs_torch": None, "peak_rss_above_start_mib": rss_above / 2**20}]
    if torch_result:
        pooled = _pooled(torch_rounds)
        tips = args.batch / pooled["median_s"]
        rows[0]["ratio_vs_torch"] = float(np.median(round_ratios))
        rows.append({"side": f"PyTorch {torch_result['torch']}", "median_s": pooled["median_s"],
                     "min_s": pooled["min_s"], "first_s": torch_result["first_s"], "images_per_s": tips,
                     "ratio_vs_torch": 1.0,
                     "peak_rss_above_start_mib": torch_result["peak_rss_above_start_bytes"] / 2**20})
    columns = [("side", "side", None), ("median_s", "median s/step", "{:.4f}"), ("min_s", "min s/step", "{:.4f}"),
               ("first_s", "first step s (compile)", "{:.2f}"), ("images_per_s", "images/s", "{:.0f}"),
               ("ratio_vs_torch", "throughput vs PyTorch (median of rounds)", "{:.2f}"),
               ("peak_rss_above_start_mib", "peak RSS above start, MiB", "{:.0f}")]
    extra = {"model": args.model, "method": args.method, "batch": args.batch, "threads": args.threads,
             "repeats": repeats, "rounds": rounds,
             "round_ratios": round_ratios,
             "time_split_s": split, "peak_numpy_bytes": peak, "peak_rss_bytes": rss_peak}
    name = f"{args.model}_step" + ("" if (args.model, args.batch) == ("resnet20", 128) else f"_b{args.batch}")
    name += {"none": "", "bwn": "_bwn", "xnor": "_xnor", "prune": f"_prune{round(100 * args.sparsity)}"}[args.method]
    title = (f"{'ResNet-20' if args.model == 'resnet20' else 'ResNet-18 (CIFAR)'} training step (batch {args.batch})"
             + ("" if args.method == "none" else f", {args.method} on both sides"))
    write_report(name + ("_quick" if args.quick else ""), rows, columns, extra=extra, title=title)
    print("\ntime split per step (s), profiled:")
    for k, v in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<40} {v:.4f}  ({100 * v / profiled:.0f} %)")
    if round_ratios:
        print("throughput ratio per round: " + ", ".join(f"{r:.2f}" for r in round_ratios))
    print(f"peak NumPy memory in one step: {peak / 2**20:.0f} MiB; process peak RSS: {rss_peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
