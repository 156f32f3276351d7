"""The issue-4 CIFAR-10 recipe trained with PyTorch, for comparison with ``tinycomp train``: the same
ResNet-20 (``torch_models.resnet("resnet20")``, tinycomp's layer names), the same data stream
(tinycomp's loader: same shuffling, crops, flips and normalisation for a seed), SGD + Nesterov 0.9,
weight decay 5e-4 on all parameters, OneCycleLR(max_lr=--lr, pct_start=0.25) stepped per batch, batch
128 with the last partial batch dropped. Writes one JSON line per epoch (losses, test accuracy, wall
time) like tinycomp's log.jsonl. PyTorch is optional and never a dependency of tinycomp; run this only
on a machine that has it.

``--method bwn``: every conv but the stem's fake-quantized as ``torch_resnet20.binarize_weights`` does
(α·sign(W), α per filter, the gradient through α; tinycomp's ``bwn``). ``--tinycomp-init``: the
initial weights are tinycomp's ResNet-20 at the seed (``tinycomp.manual_seed(seed)``, its Kaiming
fan-out init), so that both libraries start from the same network and only the implementation
differs; without it PyTorch's default init.

``--state DIR --stop-after K``: stop after epoch K with the run's state in DIR/state.npz (weights,
momentum, and as JSON the schedule, data position, training time, the epoch lines so far and the
run's arguments; nothing pickled, one file replaced atomically). The same command again continues from
it (refused if the arguments differ) and rewrites --log from the saved lines. That lets two runs
take turns epoch by epoch on one machine, so that the host's drift during the day falls on both alike
(``benchmarks/pair_interleaved.sh``).

    python benchmarks/torch_train_recipe.py --data-dir ../shared/data --epochs 30 --threads 2 --log run.jsonl \
        [--method bwn] [--tinycomp-init] [--lr 0.2] [--state DIR --stop-after K]
"""
import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as TF

from torch_models import resnet
from torch_resnet20 import binarize_weights

# PyTorch's side keeps its own thread settings: tinycomp is imported here for its data loader only
warnings.filterwarnings("ignore", message="tinycomp_kernels was imported after")
import tinycomp  # noqa: E402
from tinycomp import models  # noqa: E402
from tinycomp.data import BatchLoader, Normalize, load_cifar, train_val_split  # noqa: E402


def evaluate(model, loader):
    model.eval()
    correct = loss = 0.0
    with torch.no_grad():
        for b in range(len(loader)):
            x, y = loader.batch(0, b)
            out = model(torch.from_numpy(x))
            y = torch.from_numpy(y)
            loss += TF.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    return loss / loader.num_samples, correct / loader.num_samples


def train_epoch(model, opt, sched, loader):
    """The rest of the loader's current epoch, the schedule stepped per batch: (images, correct, loss sum)."""
    model.train()
    seen = correct = loss_sum = 0
    for x, y in loader:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        out = model(x)
        loss = TF.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.last_epoch < sched.total_steps - 1:
            sched.step()
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
    return seen, correct, loss_sum


def save_state(folder, model, opt, sched, loader, extra):
    """The run's state in ``folder``/state.npz: weights, momentum buffers, and as one JSON string the
    schedule, the optimizer's groups, the data position and ``extra`` (a dict: training time, epoch
    lines, arguments). Written to a temporary name and renamed: a run stopped while saving keeps its
    previous state whole."""
    os.makedirs(folder, exist_ok=True)
    arrays = {f"model/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        arrays[f"momentum/{i}"] = st["momentum_buffer"].numpy()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.state_dict()["param_groups"]]
    meta = {"scheduler": sched.state_dict(), "param_groups": groups, "position": loader.state(), **extra}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(os.path.join(folder, "state.tmp.npz"), **arrays)
    os.replace(os.path.join(folder, "state.tmp.npz"), os.path.join(folder, "state.npz"))


def load_state(folder, model, opt, sched, loader):
    """Restore what ``save_state`` wrote into the four objects; returns its ``extra`` dict."""
    with np.load(os.path.join(folder, "state.npz"), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        model.load_state_dict({k[6:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("model/")})
        for i, p in enumerate(model.parameters()):
            if f"momentum/{i}" in z.files:   # a parameter no step has reached yet has none
                opt.state[p]["momentum_buffer"] = torch.from_numpy(z[f"momentum/{i}"].copy())
    for group, saved in zip(opt.param_groups, meta.pop("param_groups")):
        group.update(saved)
    sched.load_state_dict(meta.pop("scheduler"))
    loader.load_state(meta.pop("position"))
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", required=True, help="JSON-lines output, one line per epoch")
    ap.add_argument("--method", choices=("none", "bwn"), default="none")
    ap.add_argument("--lr", type=float, default=0.2, help="one-cycle peak (default 0.2)")
    ap.add_argument("--tinycomp-init", action="store_true", help="start from tinycomp's initial ResNet-20 weights")
    ap.add_argument("--state", help="folder for the run's state: continue from it if it holds one")
    ap.add_argument("--stop-after", type=int, help="with --state: save and stop after this epoch")
    args = ap.parse_args()
    if args.stop_after is not None and not args.state:
        ap.error("--stop-after needs --state (where the run continues from)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_cifar("cifar10", root=args.data_dir, download=False, progress=False)
    train_idx, _ = train_val_split(len(data.train_labels), 0, args.seed)
    norm = Normalize.from_images(data.train_images, train_idx)
    train = BatchLoader(data.train_images, data.train_labels, 128, indices=train_idx, shuffle=True,
                        seed=args.seed, drop_last=True, augment=True, normalize=norm)
    test = BatchLoader(data.test_images, data.test_labels, 500, normalize=norm)
    model = resnet("resnet20")
    if args.tinycomp_init:
        tinycomp.manual_seed(args.seed)
        state = models.get("resnet20", num_classes=10).state_dict()
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                                    strict=False)
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise SystemExit(f"tinycomp's ResNet-20 does not load by name: missing {missing}, unexpected {unexpected}")
    if args.method == "bwn":
        binarize_weights(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(train),
                                                pct_start=0.25)
    run = {k: v for k, v in vars(args).items() if k not in ("data_dir", "threads", "log", "state", "stop_after")}
    elapsed, history = 0.0, []
    if args.state and os.path.isfile(os.path.join(args.state, "state.npz")):
        saved = load_state(args.state, model, opt, sched, train)
        if saved["run"] != run:
            ap.error(f"--state {args.state} holds another run ({saved['run']}), not this one ({run})")
        elapsed, history = saved["elapsed"], saved["history"]
    last = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
    start = time.perf_counter() - elapsed
    with open(args.log, "w") as log:
        log.writelines(json.dumps(h) + "\n" for h in history)   # the saved lines: log and state agree
        log.flush()
        for epoch in range(train.epoch, last):
            seen, correct, loss_sum = train_epoch(model, opt, sched, train)
            test_loss, test_acc = evaluate(model, test)
            line = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                    "test_loss": test_loss, "test_acc": test_acc, "wall_time_s": time.perf_counter() - start}
            history.append(line)
            if args.state:
                save_state(args.state, model, opt, sched, train,
                           {"elapsed": line["wall_time_s"], "history": history, "run": run})
            log.write(json.dumps(line) + "\n")
            log.flush()
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
