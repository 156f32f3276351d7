"""PyTorch side of bench_runtime.py, run in its own process (PyTorch is optional and never a
dependency of tinycomp): float inference of a CIFAR ResNet with tinycomp's layer names, so that
tinycomp's float state dict loads by name. Eval mode, no_grad, eager. Prints one JSON line: the
logits of the validation batch and the median time per batch size.

    python benchmarks/torch_infer.py --model resnet20 --threads 2 --weights w.npz --input x.npz \
        --batch-sizes 1,64 --repeats 20
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch_models import SHAPES, resnet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SHAPES), required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--weights", required=True, help=".npz float state dict written by tinycomp")
    ap.add_argument("--input", required=True, help=".npz with x (N, 3, 32, 32): the validation batch")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = resnet(args.model)
    with np.load(args.weights, allow_pickle=False) as w:
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files}, strict=True)
    with np.load(args.input, allow_pickle=False) as d:
        x = torch.from_numpy(d["x"])
    model.eval()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "times": {}}
    with torch.no_grad():
        out["logits"] = model(x).numpy().tolist()
        for n in (int(b) for b in args.batch_sizes.split(",")):
            xb = torch.from_numpy(np.ascontiguousarray(np.resize(x.numpy(), (n,) + tuple(x.shape[1:]))))
            model(xb)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(xb)
                times.append(time.perf_counter() - t0)
            out["times"][str(n)] = {"median_s": statistics.median(times), "min_s": min(times)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
