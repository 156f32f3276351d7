"""What a training run shows while it runs: a progress bar, or plain lines, and one line per epoch.

The bar (tqdm, on stderr) is used only where it can be drawn: stderr is a terminal that reports a
size and is not ``TERM=dumb``. Elsewhere (a pipe, a log file) the same figures come as plain lines at
each quarter of an epoch. ``--no-progress`` turns both off; the epoch lines and the end-of-run
summary (stdout) are printed in every mode.
"""
import os
import sys

LINES_PER_EPOCH = 4  # plain-line mode: a line at each quarter of an epoch


def choose_mode(enabled, stream=None):
    """"bar", "lines" or "off" for a run that shows progress when ``enabled``."""
    if not enabled:
        return "off"
    stream = stream or sys.stderr
    try:
        if not stream.isatty() or os.environ.get("TERM") == "dumb":
            return "lines"
        os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no fileno, or a terminal without a size
        return "lines"
    return "bar"


def format_stats(stats):
    """``{"loss": 2.3, "acc": 0.1, "lr": 8e-7, ...}`` as short text: losses to 4 decimals, accuracies
    in %, the learning rate to 3 significant digits (late in one-cycle it is ~1e-6, not 0.0)."""
    shown = []
    for key, value in stats.items():
        name = key.replace("_", " ")
        if key.endswith("loss"):
            shown.append(f"{name} {value:.4f}")
        elif key.endswith("acc"):
            shown.append(f"{name} {100 * value:.2f} %")
        elif key == "lr":
            shown.append(f"lr {value:.3g}")
        elif key.endswith("/s"):
            shown.append(f"{value:.0f} {name}")
        else:
            shown.append(f"{name} {value}")
    return ", ".join(shown)


def format_duration(seconds):
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_epoch(line, epochs):
    """One finished epoch (a log.jsonl entry) as a line of text."""
    stats = {k: v for k, v in line.items() if k not in ("epoch", "wall_time_s")}
    return f"epoch {line['epoch']}/{epochs}: {format_stats(stats)}, {format_duration(line['wall_time_s'])} in all"


def run_summary(history, last_path, best_path=None):
    """The end-of-run line: epochs, wall time, final test accuracy, best validation accuracy, files."""
    if not history:
        return f"no epoch finished; checkpoint {last_path}"
    parts = [f"{len(history)} epoch{'s' if len(history) > 1 else ''} in "
             f"{format_duration(history[-1]['wall_time_s'])}"]
    tested = [h for h in history if "test_acc" in h]
    if tested:
        parts.append(f"test accuracy {100 * tested[-1]['test_acc']:.2f} % (epoch {tested[-1]['epoch']})")
    validated = [h for h in history if "val_acc" in h]
    if validated and best_path is not None:
        best = max(validated, key=lambda h: h["val_acc"])
        parts.append(f"best validation accuracy {100 * best['val_acc']:.2f} % (epoch {best['epoch']}, {best_path})")
    parts.append(f"checkpoint {last_path}")
    return "; ".join(parts)


class EpochProgress:
    """The progress of one epoch in ``mode`` (see ``choose_mode``); ``update(stats)`` after each batch."""

    def __init__(self, mode, total, initial, desc, stream=None):
        self.mode, self.total, self.done, self.desc = mode, total, initial, desc
        self.stream = stream or sys.stderr
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            # no tqdm rate: it would count the first batch's kernel compilation; images/s is ours
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, file=self.stream,
                            dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                            "[{elapsed}<{remaining}{postfix}]")

    def update(self, stats):
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(format_stats(stats), refresh=False)
            self.bar.update(1)
        elif self.mode == "lines" and self.done < self.total and \
                self.done * LINES_PER_EPOCH // self.total > (self.done - 1) * LINES_PER_EPOCH // self.total:
            print(f"{self.desc}: batch {self.done}/{self.total}, {format_stats(stats)}", file=self.stream,
                  flush=True)

    def note(self, text):
        """Print ``text`` on a line of its own (above the bar, if there is one), in every mode."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        """Remove the bar (leave=False), so that what is printed next starts a line of its own."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
