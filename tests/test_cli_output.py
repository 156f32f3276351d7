"""What the command line shows: --version, help for every option, the in-epoch lines where no bar can
be drawn, the one compile note, and errors on a line of their own under a progress bar."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from cli_helpers import SMALL, tinycomp
from data_helpers import require_data

# width 0.25: batches long enough for steady images/s figures
PROGRESS = [a for a in SMALL if a != "--no-progress"] + ["--width", "0.25"]


def test_version():
    import tinycomp as package

    r = tinycomp("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tinycomp {package.__version__}"


def test_every_option_is_explained():
    from tinycomp.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"tinycomp {name} {action.option_strings or action.dest}: no help text"


def test_piped_progress_is_plain_lines_with_one_compile_note(tmp_path):
    require_data()
    r = tinycomp("train", *PROGRESS, "--subset", "256", "--epochs", "2", "--test-every", "2",
                 "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr  # no bar drawn into a pipe
    assert r.stderr.count("compiling kernels") == 1
    lines = [line for line in r.stderr.splitlines() if ": batch " in line]
    assert [line.split(",")[0] for line in lines] == [f"epoch {e}/2: batch {b}/4" for e in (1, 2) for b in (1, 2, 3)]
    # images/s leaves out the first batch (compilation): shown from batch 2 on, and of the steady pace
    assert "images/s" not in lines[0]
    rates = [float(re.search(r"(\d+) images/s", line).group(1)) for line in lines[1:]]
    # the first rate shown (just after compilation) is of the steady pace: a rate counting the
    # compilation would sit several times under the later ones. Loose, as the later ones vary up to
    # 4x on a loaded 2-core machine (947 to 224 images/s in one run beside two training runs).
    assert rates[0] > max(rates) / 5, lines
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["epoch 1/2", "epoch 2/2", "tinycomp train"]


def _run_in_terminal(args):
    """Run ``python -m tinycomp *args`` with stdout and stderr on a 100x24 pseudo-terminal; (code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "TERM"}
    proc = subprocess.Popen([sys.executable, "-m", "tinycomp", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_an_error_under_the_progress_bar_starts_a_line_of_its_own(tmp_path):
    require_data()
    code, output = _run_in_terminal(["train", *PROGRESS, "--subset", "256", "--epochs", "1", "--lr", "1e30",
                                     "--schedule", "constant", "--out", str(tmp_path / "r")])
    assert code == 3, output
    assert "epoch 1/1:" in output and "0/4" in output  # the bar was drawn
    before = output.split("tinycomp train: error: the loss became")[0]
    assert before.endswith(("\n", "\r")), repr(before[-200:])
