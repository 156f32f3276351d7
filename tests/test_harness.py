"""benchmarks/harness.py: round-robin timing order, and the memory-floor probe of bench_sparse."""
import importlib
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # benchmark scripts import each other by plain name
    return importlib.import_module(name)


def test_interleaved_rotates_the_order_of_each_round(monkeypatch):
    harness = _load("harness", monkeypatch)
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    result = harness.interleaved(fns, repeats=3, warmup=0, rotate=True)
    assert calls[3:] == list("abc" "bca" "cab")  # after one first call each
    assert all(result[name]["repeats"] == 3 for name in "abc")
    calls.clear()
    harness.interleaved(fns, repeats=2, warmup=0)
    assert calls[3:] == list("abcabc")


def test_paired_ratio_takes_each_round_apart(monkeypatch):
    harness = _load("harness", monkeypatch)
    # the machine slows down 4x from round 3 on, for the sparse side one round before the dense
    # side: each round's ratio but that one is 2, while the ratio of the medians is 2 / 4
    timings = {"dense": {"times_s": [2.0, 2.0, 2.0, 8.0, 8.0]}, "sparse": {"times_s": [1.0, 1.0, 4.0, 4.0, 4.0]}}
    assert harness.paired_ratio(timings, "dense", "sparse") == (2.0, 2.0, 2.0)
    assert np.median(timings["dense"]["times_s"]) / np.median(timings["sparse"]["times_s"]) == 0.5
    timings = {"dense": {"times_s": [2.0, 2.0, 8.0, 8.0, 8.0]}, "sparse": {"times_s": [1.0, 2.0, 2.0, 4.0, 8.0]}}
    assert harness.paired_ratio(timings, "dense", "sparse") == (2.0, 1.0, 2.0)  # ratios 2 1 4 2 1


def test_read_all_sums_the_whole_array(monkeypatch):
    read_all = _load("stream_read", monkeypatch).read_all
    a = np.random.default_rng(0).standard_normal((37, 1001)).astype(np.float32)
    assert np.isclose(read_all(a), a.astype(np.float64).sum(), rtol=1e-4, atol=1e-2)
    assert read_all(np.zeros((0, 5), np.float32)) == 0.0


def test_markdown_table_formats_numbers_and_marks_missing_values(monkeypatch):
    harness = _load("harness", monkeypatch)
    rows = [{"name": "a", "ms": 1.234, "n": np.int64(3)}, {"name": "b", "ms": None, "n": "x"}]
    table = harness.markdown_table(rows, [("name", "name", None), ("ms", "ms", "{:.2f}"), ("n", "n", "{:d}")])
    assert table.splitlines()[2:] == ["| a | 1.23 | 3 |", "| b | n/a | x |"]
