"""Pruned ResNet-20 training step on the sparse op (functional.sparse_conv2d) against the dense masked step.

Batch 128, 3x32x32 float32: forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4),
weights re-masked after the step. Every 3x3 conv but the first is pruned to 70/80/90/95/99 % (per-layer
magnitude masks of one float model). "dense" runs each pruned conv as conv2d(x, W * mask) (what a
masked layer computes with the dense kernels); "sparse" as sparse_conv2d(x, W, mask) (CSR kernels:
forward sparse_conv2d, dx the flipped transposed CSR product, dw at the kept weights only; the
stride-2 layers over their stride phases). The two
layers are local Conv2d subclasses of this script that share the float model's Parameters.

Validation first: at each sparsity the sparse model's loss, logits and every parameter gradient equal
the dense masked model's on the same batch and weights (float tolerance; gradients by relative norm),
and so does the loss after one whole step. Then all steps are timed
round-robin in one run (``harness.interleaved``, rotated); the speed-up is the median of per-round
ratios dense / sparse (``harness.paired_ratio``). The per-op split is the mean of three profiled steps of
each (``tinycomp.autograd.profile``), taken before the timed rounds.

``--layers`` times the parts of each pruned layer shape of ResNet-20 instead (16 ch 32x32, 32 ch 16x16,
64 ch 8x8 and the two stride-2 convs, batch 128): dense conv2d_forward / conv2d_backward (dx, dw apart)
against the sparse forward, dx and dw kernels, at 10-99 % (the data behind ``sparse_training_pays``).

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_pruned_step.py [--layers] [--quick] [--repeats 10]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, compute_probe, interleaved, paired_ratio, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import Tensor, functional as F, models, nn, optim  # noqa: E402
from tinycomp.autograd import profile  # noqa: E402

SPARSITIES = (0.7, 0.8, 0.9, 0.95, 0.99)
GRAD_RTOL = 2e-2  # validation: relative norm of the gradient difference, per parameter (0.5 % seen)
LAYER_SPARSITIES = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
# (N, C, O, H = W, stride): the pruned 3x3 conv shapes of ResNet-20 at batch 128
LAYERS = ((128, 16, 16, 32, 1), (128, 32, 32, 16, 1), (128, 64, 64, 8, 1), (128, 16, 32, 32, 2), (128, 32, 64, 16, 2))


class _Pruned(nn.Conv2d):
    """A bias-free 3x3 conv of the float model with a fixed mask, sharing its weight Parameter."""

    def __init__(self, conv, mask):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        self.weight = conv.weight
        self.mask = mask  # uint8, the weight's shape
        self.mask_f = Tensor(mask.astype(np.float32))


class DenseMaskedConv2d(_Pruned):
    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask_f, None, self.stride, self.padding)


class SparseMaskedConv2d(_Pruned):
    def forward(self, x):
        return F.sparse_conv2d(x, self.weight, self.mask, self.stride, self.padding)


def magnitude_mask(w, sparsity):
    """uint8 mask keeping the round((1 - sparsity) * size) entries of largest |w| (at least one)."""
    keep = max(1, int(round((1 - sparsity) * w.size)))
    mask = np.zeros(w.size, np.uint8)
    mask[np.argsort(-np.abs(w).reshape(-1), kind="stable")[:keep]] = 1
    return mask.reshape(w.shape)


def pruned_model(state, sparsity, layer_cls):
    """ResNet-20 with ``state``'s weights, every 3x3 conv but the first replaced by ``layer_cls``."""
    model = models.get("resnet20")
    model.load_state_dict(state)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d) and name != "conv1" and m.kernel_size == (3, 3):
            mask = magnitude_mask(m.weight.data, sparsity)
            m.weight.data *= mask
            model.set_submodule(name, layer_cls(m, mask))
    return model


def make_step(model, x, y):
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    pruned = [m for m in model.modules() if isinstance(m, _Pruned)]

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), y)
        loss.backward()
        opt.step()
        for m in pruned:  # re-mask, as a pruned layer's after_step does
            m.weight.data *= m.mask
        return loss

    return step


def validate(state, sparsity, x, y):
    """Raise SystemExit unless the sparse model's logits, loss and gradients equal the dense masked one's."""
    out = {}
    for kind, cls in (("dense", DenseMaskedConv2d), ("sparse", SparseMaskedConv2d)):
        model = pruned_model(state, sparsity, cls)
        logits = model(Tensor(x))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        out[kind] = (logits.data, loss.item(), {n: p.grad for n, p in model.named_parameters()})
    (ld, lossd, gd), (ls, losss, gs) = out["dense"], out["sparse"]
    problems = []
    if not np.allclose(ls, ld, rtol=1e-4, atol=1e-4):
        problems.append(f"logits differ by {np.abs(ls - ld).max():.3g}")
    if not abs(losss - lossd) <= 1e-5 * max(1.0, abs(lossd)):
        problems.append(f"loss {losss} vs {lossd}")
    worst = 0.0
    for name, g in gd.items():
        # by norm, not elementwise: float32 sums in another order move activations by ~1e-6 relative,
        # enough to flip a few ReLUs whose input is within that of 0, each changing single gradient
        # elements by O(1) (the same happens between two dense algorithms); the per-layer kernels are
        # checked elementwise by --layers and tests/kernels/test_sparse_train*.py
        err = float(np.linalg.norm(gs[name] - g) / max(np.linalg.norm(g), 1e-12)) if gs[name] is not None else np.inf
        worst = max(worst, err)
        if err > GRAD_RTOL:
            problems.append(f"gradient of {name} (relative error {err:.2g})")
    # and a whole step (SGD with momentum, re-masking): the loss at the updated weights
    after = [make_step(pruned_model(state, sparsity, cls), x, y) for cls in (DenseMaskedConv2d, SparseMaskedConv2d)]
    step_losses = [[step().item() for _ in range(2)][1] for step in after]
    if not abs(step_losses[1] - step_losses[0]) <= 1e-4 * max(1.0, abs(step_losses[0])):
        problems.append(f"loss after one step {step_losses[1]} vs {step_losses[0]}")
    if problems:
        raise SystemExit(f"validation failed at {sparsity:.0%}: " + "; ".join(problems[:5]))
    return lossd, losss, worst, step_losses


def op_split(step, steps=3):
    """{op: ms per step} over ``steps`` profiled steps, forward and backward together, largest first."""
    with profile() as prof:
        for _ in range(steps):
            step()
    split = {}
    for (op, _phase), (_calls, seconds) in prof.table().items():
        split[op] = split.get(op, 0.0) + seconds * 1e3 / steps
    return dict(sorted(split.items(), key=lambda kv: -kv[1]))


def bench_step(args, threads):
    repeats = 3 if args.quick else args.repeats
    tinycomp.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 16 if args.quick else 128
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    state = models.get("resnet20").state_dict()
    steps, losses, splits = {}, {}, {}
    for s in SPARSITIES:
        losses[s] = validate(state, s, x, y)
        print(f"validated {s:.0%}: loss dense {losses[s][0]:.6f}, sparse {losses[s][1]:.6f}, largest relative "
              f"gradient difference {losses[s][2]:.2g}; after one step: dense {losses[s][3][0]:.6f}, sparse "
              f"{losses[s][3][1]:.6f}", flush=True)
    dense_model = pruned_model(state, 0.9, DenseMaskedConv2d)  # the dense step's cost does not depend on the mask
    steps["dense"] = make_step(dense_model, x, y)
    for s in SPARSITIES:
        steps[f"sparse {s:.0%}"] = make_step(pruned_model(state, s, SparseMaskedConv2d), x, y)
    for name, step in steps.items():
        step()  # compile and warm up
        splits[name] = op_split(step)
    probe_before = compute_probe()
    t = interleaved(steps, repeats=repeats, rotate=True)
    rows = []
    for name in steps:
        med, q25, q75 = paired_ratio(t, "dense", name)
        conv_ms = sum(v for op, v in splits[name].items() if op in ("SparseConv2d", "Conv2d"))
        top = ", ".join(f"{op} {ms:.0f}" for op, ms in list(splits[name].items())[:6])
        rows.append({"step": name, "median_s": t[name]["median_s"], "min_s": t[name]["min_s"],
                     "images_per_s": n / t[name]["median_s"], "speedup": med, "speedup_iqr": f"{q25:.2f}-{q75:.2f}",
                     "conv_ms": conv_ms, "total_op_ms": sum(splits[name].values()), "ops": top})
        print(f"{name}: {t[name]['median_s'] * 1e3:.0f} ms/step, x{med:.2f} ({q25:.2f}-{q75:.2f}); ops (ms): {top}",
              flush=True)
    columns = [("step", "step", None), ("median_s", "median s/step", "{:.3f}"), ("min_s", "min s/step", "{:.3f}"),
               ("images_per_s", "images/s", "{:.0f}"), ("speedup", "dense / this (paired)", "{:.2f}x"),
               ("speedup_iqr", "middle half of rounds", None), ("conv_ms", "conv ops ms (profiled steps)", "{:.0f}"),
               ("total_op_ms", "all ops ms", "{:.0f}"), ("ops", "largest ops, ms (forward + backward)", None)]
    write_report("pruned_step" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"batch": n, "threads": threads, "rounds": repeats, "splits_ms": splits,
                        "validation_losses": {str(s): v for s, v in losses.items()},
                        "probe_gflops": {"before": probe_before, "after": compute_probe()}},
                 title=f"Pruned ResNet-20 training step (batch {n}): sparse op vs dense masked conv, {threads} threads")


def bench_layers(args, threads):
    from tinycomp_kernels.conv import conv2d_backward, conv2d_forward
    from tinycomp_kernels.csr import csr_from_dense
    from tinycomp_kernels.sparse_train import (sparse_conv2d_input_grad, sparse_conv2d_train,
                                               sparse_conv2d_weight_grad, sparse_train_algorithm)

    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for n, c, o, h, s in LAYERS:
        n = 16 if args.quick else n
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w_full = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        dout = rng.standard_normal((n, o, h // s, h // s)).astype(np.float32)
        for sp in LAYER_SPARSITIES:
            mask = magnitude_mask(w_full, sp)
            w = w_full * mask
            csr = csr_from_dense(w.reshape(o, -1), mask.reshape(o, -1).astype(bool))
            keep = mask.reshape(o, -1).astype(bool)
            y, saved = sparse_conv2d_train(x, *csr, w.shape, s, 1)
            dx_ref, dw_ref = conv2d_backward(dout, x, w, s, 1)
            dx = sparse_conv2d_input_grad(dout, *csr, x.shape, w.shape, s, 1)
            dv = sparse_conv2d_weight_grad(dout, x, csr[0], csr[1], w.shape, s, 1, saved=saved)
            assert np.allclose(y, conv2d_forward(x, w, s, 1), rtol=1e-3, atol=1e-3 * np.abs(y).max()), \
                ("y", n, c, h, s, sp)
            assert np.allclose(dx, dx_ref, rtol=1e-3, atol=1e-3 * np.abs(dx_ref).max()), ("dx", n, c, h, s, sp)
            assert np.allclose(dv, dw_ref.reshape(o, -1)[keep], rtol=1e-3, atol=1e-3 * np.abs(dw_ref).max()), \
                ("dw", n, c, h, s, sp)
            t = interleaved({
                "dense fwd": lambda: conv2d_forward(x, w, s, 1),
                "dense dx": lambda: conv2d_backward(dout, x, w, s, 1, need_weight=False),
                "dense dw": lambda: conv2d_backward(dout, x, w, s, 1, need_input=False),
                "csr": lambda: csr_from_dense(w.reshape(o, -1), keep),
                "sparse fwd": lambda: sparse_conv2d_train(x, *csr, w.shape, s, 1),
                "sparse dx": lambda: sparse_conv2d_input_grad(dout, *csr, x.shape, w.shape, s, 1),
                "sparse dw": lambda: sparse_conv2d_weight_grad(dout, x, csr[0], csr[1], w.shape, s, 1, saved=saved),
            }, repeats=repeats, rotate=True)
            ms = {k: v["median_s"] * 1e3 for k, v in t.items()}
            dense = ms["dense fwd"] + ms["dense dx"] + ms["dense dw"]
            sparse = ms["csr"] + ms["sparse fwd"] + ms["sparse dx"] + ms["sparse dw"]
            row = {"N": n, "C": c, "O": o, "H": h, "stride": s, "sparsity": sp, "nnz": int(mask.sum()),
                   "algorithm": sparse_train_algorithm(x.shape, w.shape, s, 1),
                   **{k.replace(" ", "_") + "_ms": v for k, v in ms.items()},
                   "fwd_x": paired_ratio(t, "dense fwd", "sparse fwd")[0],
                   "dx_x": paired_ratio(t, "dense dx", "sparse dx")[0],
                   "dw_x": paired_ratio(t, "dense dw", "sparse dw")[0], "layer_x": dense / sparse}
            rows.append(row)
            print(f"N{n} C{c} O{o} {h}x{h} s{s} {sp:.0%}: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
                  + f"; x fwd {row['fwd_x']:.2f} dx {row['dx_x']:.2f} dw {row['dw_x']:.2f} layer {row['layer_x']:.2f}",
                  flush=True)
    columns = [("C", "C", None), ("O", "O", None), ("H", "H = W", None), ("stride", "stride", None),
               ("algorithm", "algorithm", None), ("sparsity", "sparsity", "{:.0%}"),
               ("dense_fwd_ms", "dense fwd ms", "{:.2f}"),
               ("dense_dx_ms", "dense dx ms", "{:.2f}"), ("dense_dw_ms", "dense dw ms", "{:.2f}"),
               ("csr_ms", "CSR build ms", "{:.2f}"), ("sparse_fwd_ms", "sparse fwd ms", "{:.2f}"),
               ("sparse_dx_ms", "sparse dx ms", "{:.2f}"), ("sparse_dw_ms", "sparse dw ms", "{:.2f}"),
               ("fwd_x", "fwd x", "{:.2f}x"), ("dx_x", "dx x", "{:.2f}x"), ("dw_x", "dw x", "{:.2f}x"),
               ("layer_x", "layer (sum of medians) x", "{:.2f}x")]
    write_report("pruned_layers" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"threads": threads, "repeats": repeats},
                 title=f"Pruned ResNet-20 conv layers, training parts: sparse kernels vs dense conv, {threads} threads")


def main():
    layers = "--layers" in sys.argv
    if layers:
        sys.argv.remove("--layers")
    args, threads = bench_run(__doc__, repeats=10, quick_help="batch 16, 2-3 rounds: a smoke run")
    (bench_layers if layers else bench_step)(args, threads)


if __name__ == "__main__":
    main()
