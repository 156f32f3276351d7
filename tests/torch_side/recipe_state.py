"""PyTorch side of tests/test_torch_recipe_state.py, in its own process: 4 + 4 steps of the recipe's
ResNet-20 straight through, and 4 steps, ``save_state`` into argv[1], a fresh model, optimizer, schedule
and loader (another seed), ``load_state``, 4 more steps. Prints the largest difference of the final
state dicts (0.0 when the resumed run is bitwise the straight one) and the restored extra dict."""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import torch_train_recipe as recipe  # noqa: E402
from tinycomp.data import BatchLoader  # noqa: E402
from torch_models import resnet  # noqa: E402

rng = np.random.default_rng(0)
IMAGES, LABELS = rng.integers(0, 255, (512, 3, 32, 32), dtype=np.uint8), np.arange(512) % 10   # 4 batches of 128


def make(seed):
    torch.manual_seed(seed)
    model = resnet("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=8, pct_start=0.25)
    loader = BatchLoader(IMAGES, LABELS, 128, shuffle=True, seed=0, drop_last=True, augment=True)
    return model, opt, sched, loader


straight = make(0)
recipe.train_epoch(*straight)
recipe.train_epoch(*straight)
first = make(0)
recipe.train_epoch(*first)
recipe.save_state(sys.argv[1], *first, {"elapsed": 12.5, "history": [{"epoch": 1}], "run": {"lr": 0.2}})
resumed = make(1)
extra = recipe.load_state(sys.argv[1], *resumed)
recipe.train_epoch(*resumed)
a, b = straight[0].state_dict(), resumed[0].state_dict()
print(max((a[k].double() - b[k].double()).abs().max().item() for k in a), json.dumps(extra))
