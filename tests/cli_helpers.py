"""Running the command line in tests: ``tinycomp(*args)`` in a subprocess, ``cli(*args)`` in this process,
and runs small enough for a test.

``tinycomp`` is the real command in a fresh interpreter: for what only a fresh process shows (its exit
code as the shell sees it, import side effects, the one compile note, signals and kills). ``cli`` calls
``tinycomp.cli.main`` here and reports the same things (exit code, stdout, stderr) without the
interpreter's start-up and with the kernels loaded once; what a run changes in this process (thread
counts, tinycomp's random generator) is put back, so the tests after it see no difference.
"""
import contextlib
import io
import subprocess
import sys
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

# ResNet-20 at width 0.125 (2, 4 and 8 channels) on 512 images, batches of 64: 8 batches an epoch. These
# runs test the plumbing (checkpoints, resume, eval, summary), not learning: every pass over the 10,000 test
# images costs half what it does at width 0.25.
WIDTH = 0.125
SMALL = ["--model", "resnet20", "--width", str(WIDTH), "--subset", "512", "--batch-size", "64", "--threads", "1",
         "--no-progress", "--no-download"]
# The same on 256 images (4 batches an epoch) for 2 epochs, the test set evaluated once, after the last.
TINY = [a if a != "512" else "256" for a in SMALL] + ["--epochs", "2", "--test-every", "2"]


def tinycomp(*args, timeout=600, **kwargs):
    """``python -m tinycomp *args``, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "tinycomp", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start_train(*args):
    """``python -m tinycomp train *args`` started in the background (stderr piped, stdout dropped)."""
    return subprocess.Popen([sys.executable, "-m", "tinycomp", "train", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=300):
    """Poll ``predicate()`` until true; fail if ``proc`` ends first or after ``timeout`` seconds."""
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def kill_after_the_first_epoch(out, proc):
    """SIGKILL the run ``proc`` (in folder ``out``) once epoch 1 is checkpointed; check it died inside epoch 2."""
    wait_for(lambda: (out / "log.jsonl").exists(), proc)  # written after epoch 1's last.npz
    proc.kill()
    proc.wait()
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # killed inside epoch 2: a real resume


def model_arrays(path):
    """The model's arrays in checkpoint ``path`` ({"model/<key>": array})."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("model/")}


def assert_same_weights(a, b):
    """Checkpoints ``a`` and ``b`` hold the same model entries, bit for bit."""
    wa, wb = model_arrays(a), model_arrays(b)
    assert list(wa) == list(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def cli(*args):
    """``tinycomp.cli.main(args)`` in this process, reported as ``tinycomp(*args)`` reports the command:
    a CompletedProcess with the exit code (argparse's SystemExit included), stdout and stderr."""
    from tinycomp.cli import main
    from tinycomp.random import generator

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    threads, blas = numba.get_num_threads(), threadpool_limits(limits=None, user_api="blas")  # changes nothing
    rng = generator().bit_generator.state
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, --version, a bad option
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        numba.set_num_threads(threads)
        blas.restore_original_limits()
        generator().bit_generator.state = rng
    return subprocess.CompletedProcess(["tinycomp", *argv], code, out.getvalue(), err.getvalue())
