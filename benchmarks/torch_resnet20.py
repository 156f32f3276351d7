"""PyTorch side of bench_resnet20_step.py, run in its own process (PyTorch is optional and never a
dependency of tinycomp). The same ResNet-20 (1×1 projection shortcuts) with the same layer names, so
tinycomp's state dict loads by name; prints one JSON line.

    python benchmarks/torch_resnet20.py --threads 2 [--model resnet18] [--method bwn|xnor|prune] --batch 128 --repeats 10 \
        --weights w.npz --input x.npz

``--method bwn``: every conv but the first fake-quantized as tinycomp's ``bwn`` computes it, α·sign(W)
with α the mean |W| per output filter and sign(0) = +1, the gradient through α as well (autograd of
that expression with an unclipped straight-through sign; tinycomp's pseudo-gradient, docs/methods.md,
costs the same elementwise passes); the classifier stays float. What a PyTorch user training a
binary-weight network writes. ``--method xnor``: tinycomp's ``xnor`` (Bi-Real blocks: no ReLU, h =
bn1(conv1(x)) + shortcut(x), out = bn2(conv2(h)) + h, no stem ReLU), every conv but the stem's on
sign(x) with a straight-through gradient clipped to |x| <= 1 and BWN weights as above, the projection
shortcuts too. ``--method prune``: the convs with a ``weight_mask`` in the weights file
run on W ⊙ mask (dense), the weights re-masked after each step.
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as TF
from step_memory import StepMemory
from torch_models import Block, CifarResNet, resnet


class BinaryWeightConv(torch.nn.Conv2d):
    """Conv2d whose weight is α·sign(W) in the forward pass (straight-through sign, α per filter)."""

    def forward(self, x):
        w = self.weight
        alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
        sign = torch.where(w >= 0, 1.0, -1.0)
        wb = alpha * (w + (sign - w).detach())  # forward α·sign(w); backward d/dw of α·w and of α
        return TF.conv2d(x, wb, None, self.stride, self.padding, self.dilation, self.groups)


class XnorConv(BinaryWeightConv):
    """BinaryWeightConv on sign(x): forward sign(x) (sign(0) = +1), backward 1{|x| <= 1} (clipped STE)."""

    def forward(self, x):
        clipped = x.clamp(-1.0, 1.0)
        return super().forward(clipped + (torch.where(x >= 0, 1.0, -1.0) - clipped).detach())


class BiRealBlock(Block):
    def forward(self, x):
        h = self.bn1(self.conv1(x)) + self.shortcut(x)
        return self.bn2(self.conv2(h)) + h


class BinaryActivationResNet(CifarResNet):
    def forward(self, x):
        out = self.bn1(self.conv1(x))  # no stem ReLU: its output feeds the first sign
        for i in range(self.stages):
            out = getattr(self, f"layer{i + 1}")(out)
        return self.linear(TF.adaptive_avg_pool2d(out, 1).flatten(1))


def binarize_weights(model, conv_class=BinaryWeightConv):
    """Every Conv2d but the stem's (``conv1``) becomes a ``conv_class`` sharing its parameters."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is torch.nn.Conv2d and full != "conv1":
                child.__class__ = conv_class
    return model


def xnor(model):
    """tinycomp's ``xnor`` network from the float one, in place (module docstring)."""
    binarize_weights(model, XnorConv)
    for module in model.modules():
        if type(module) is Block:
            module.__class__ = BiRealBlock
    model.__class__ = BinaryActivationResNet
    return model


class MaskedConv(torch.nn.Conv2d):
    """Conv2d on W ⊙ mask, the dense masked convolution a PyTorch user prunes with (torch.nn.utils.prune)."""

    def forward(self, x):
        return TF.conv2d(x, self.weight * self.weight_mask, None, self.stride, self.padding, self.dilation,
                         self.groups)


def apply_masks(model, masks):
    """The convs named in ``masks`` (state-dict name -> uint8 mask) become MaskedConvs; returns the
    (weight, mask) pairs to re-mask after each step, as tinycomp's after_step does."""
    pairs = []
    for name, module in model.named_modules():
        key = f"{name}.weight_mask"
        if key in masks:
            module.__class__ = MaskedConv
            module.register_buffer("weight_mask", torch.from_numpy(masks[key].astype(np.float32)))
            pairs.append((module.weight, module.weight_mask))
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--model", default="resnet20", help="resnet20 or resnet18 (torch_models.resnet)")
    ap.add_argument("--method", default="none", choices=("none", "bwn", "xnor", "prune"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", required=True, help=".npz state dict written by tinycomp")
    ap.add_argument("--input", required=True, help=".npz with x (N, 3, 32, 32) and y (N,)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = resnet(args.model)
    with np.load(args.weights, allow_pickle=False) as w:
        masks = {k: w[k] for k in w.files if k.endswith(".weight_mask")}
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files if k not in masks})
    remask = apply_masks(model, masks) if args.method == "prune" else []
    if args.method == "bwn":
        binarize_weights(model)
    if args.method == "xnor":
        xnor(model)
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
        with torch.no_grad():
            for weight, mask in remask:
                weight.mul_(mask)

    memory = StepMemory().start()
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
                      "peak_rss_above_start_bytes": memory.peak_above_start(),
                      "eval_logits": eval_logits.tolist()}))


if __name__ == "__main__":
    main()
