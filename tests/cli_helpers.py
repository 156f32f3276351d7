"""Running the command line in tests: ``tinycomp(*args)`` in a subprocess, and a run small enough for a test."""
import subprocess
import sys

# ResNet-20 at width 0.25 on 512 images, batches of 64: 8 batches an epoch.
SMALL = ["--model", "resnet20", "--width", "0.25", "--subset", "512", "--batch-size", "64", "--threads", "1",
         "--no-progress", "--no-download"]


def tinycomp(*args, timeout=600, **kwargs):
    """``python -m tinycomp *args``, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "tinycomp", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
