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

    python benchmarks/torch_train_recipe.py --data-dir ../shared/data --epochs 30 --threads 2 --log run.jsonl \
        [--method bwn] [--tinycomp-init] [--lr 0.2]
"""
import argparse
import json
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
    args = ap.parse_args()
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
    start = time.perf_counter()
    with open(args.log, "w") as log:
        for epoch in range(args.epochs):
            model.train()
            seen = correct = loss_sum = 0
            for x, y in train:
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
            test_loss, test_acc = evaluate(model, test)
            line = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                    "test_loss": test_loss, "test_acc": test_acc, "wall_time_s": time.perf_counter() - start}
            log.write(json.dumps(line) + "\n")
            log.flush()
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
