"""Time to accuracy of training runs, from their per-epoch JSON-lines logs, as a Markdown table.

Reads ``log.jsonl`` files written by ``tinycomp train`` or ``torch_train_recipe.py`` (one object per
epoch with ``epoch``, ``test_acc`` and ``wall_time_s``) and prints, for each run, the final-epoch test
accuracy, the total wall time and the wall time at the end of the first epoch whose test accuracy
reached each threshold ("-" if it never did).

    python benchmarks/time_to_accuracy.py tinycomp=docs/results/resnet20_cifar10_log.jsonl \\
        pytorch=docs/results/torch_resnet20_cifar10_log.jsonl --thresholds 0.80 0.85 0.87

Exit status 2, with a message naming the file and line, on a missing or malformed log.
"""
import argparse
import json
import sys

FIELDS = ("epoch", "test_acc", "wall_time_s")


class LogError(ValueError):
    pass


def read_log(path):
    """The epochs of a JSON-lines log as dicts, checked: the fields present and numeric, epochs increasing."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LogError(f"{path}: cannot read: {e.strerror}") from None
    epochs = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LogError(f"{path}:{no}: not JSON ({e.msg})") from None
        missing = [k for k in FIELDS if not isinstance(rec.get(k) if isinstance(rec, dict) else None, (int, float))]
        if missing:
            raise LogError(f"{path}:{no}: missing or non-numeric {', '.join(missing)}")
        if epochs and rec["epoch"] <= epochs[-1]["epoch"]:
            raise LogError(f"{path}:{no}: epoch {rec['epoch']} does not follow epoch {epochs[-1]['epoch']}")
        epochs.append(rec)
    if not epochs:
        raise LogError(f"{path}: no epochs")
    return epochs


def first_reaching(epochs, threshold):
    """The first epoch record with test_acc >= threshold, else None."""
    return next((e for e in epochs if e["test_acc"] >= threshold), None)


def table(runs, thresholds):
    head = ["run", "epochs", "final test acc", "wall time"] + [f"time to {t:.0%}" for t in thresholds]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, epochs in runs.items():
        cells = [name, str(epochs[-1]["epoch"]), f"{epochs[-1]['test_acc']:.2%}",
                 f"{epochs[-1]['wall_time_s'] / 60:.1f} min"]
        for t in thresholds:
            e = first_reaching(epochs, t)
            cells.append("-" if e is None else f"{e['wall_time_s'] / 60:.1f} min (epoch {e['epoch']})")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=LOG", help="a run's name and its JSON-lines log")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.87])
    args = ap.parse_args(argv)
    runs = {}
    try:
        for spec in args.runs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise LogError(f"run {spec!r}: expected NAME=LOG")
            runs[name] = read_log(path)
    except LogError as e:
        print(f"time_to_accuracy: {e}", file=sys.stderr)
        return 2
    if not all(0 < t <= 1 for t in args.thresholds):
        print("time_to_accuracy: --thresholds are accuracies in (0, 1]", file=sys.stderr)
        return 2
    print(table(runs, args.thresholds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
