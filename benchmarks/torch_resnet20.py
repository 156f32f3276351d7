"""PyTorch side of bench_resnet20_step.py, run in its own process (PyTorch is optional and never a
dependency of tinycomp). The same ResNet-20 (1×1 projection shortcuts) with the same layer names, so
tinycomp's state dict loads by name; prints one JSON line.

    python benchmarks/torch_resnet20.py --threads 2 --batch 128 --repeats 10 --weights w.npz --input x.npz
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF


class Block(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.shortcut = tnn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        return TF.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(tnn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(16)
        cin, layers = 16, []
        for i, c in enumerate((16, 32, 64)):
            blocks = []
            for j in range(3):
                blocks.append(Block(cin, c, 2 if i and not j else 1))
                cin = c
            layers.append(tnn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = tnn.Linear(64, num_classes)

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(TF.adaptive_avg_pool2d(out, 1).flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", required=True, help=".npz state dict written by tinycomp")
    ap.add_argument("--input", required=True, help=".npz with x (N, 3, 32, 32) and y (N,)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ResNet20()
    with np.load(args.weights, allow_pickle=False) as w:
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    with np.load(args.input, allow_pickle=False) as d:
        x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"]).long()
    model.eval()
    with torch.no_grad():
        eval_logits = model(x).numpy()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad()
        loss = TF.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "first_s": first,
                      "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
                      "eval_logits": eval_logits.tolist()}))


if __name__ == "__main__":
    main()
