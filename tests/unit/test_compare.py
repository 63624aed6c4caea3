"""Paired bootstrap of `copilot eval compare` (eval/compare.py) on small run folders written by hand."""

from __future__ import annotations

import json
from pathlib import Path

from copilot.taxonomy import default_taxonomy
from eval.compare import compare, markdown

N = 60
SPAM = set(range(30))  # gold: rows 0-29 are spam, none is privacy


def _write(tmp: Path, rows: int = N) -> Path:
    ds = tmp / "cases.jsonl"
    ds.write_text("".join(json.dumps({"id": f"c{i}", "text": f"case {i}", "labels": ["spam"] if i in SPAM else [], "source": "t"}) + "\n"
                          for i in range(rows)))
    return ds


def _run(tmp: Path, name: str, ds: Path, spam_predicted: set[int]) -> Path:
    out = tmp / name
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"run": {"dataset": str(ds), "dataset_hash": "h"}}))
    # privacy: the same two false positives in every run, so its delta is 0 whatever the spam predictions.
    preds = [{"id": f"c{i}", "scores": {"spam": float(i in spam_predicted), "privacy": float(i in (40, 41))},
              "labels": (["spam"] if i in spam_predicted else []) + (["privacy"] if i in (40, 41) else []), "citations": []}
             for i in range(N)]
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return out


# Run A finds 20 of the 30 spam rows (misses 20-29) and flags 5 clean rows (30-34).
A_SPAM = set(range(20)) | set(range(30, 35))


def test_identical_runs_have_zero_delta_and_are_not_significant(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    a = _run(tmp_path, "a", ds, A_SPAM)
    b = _run(tmp_path, "b", ds, A_SPAM)
    c = compare(a, b, default_taxonomy(), rounds=300)
    assert c["rows"] == N and set(c["labels"]) == {"spam", "privacy"}
    for v in c["labels"].values():
        assert v["delta"] == 0 and v["p_value"] == 1.0
    assert c["changed"] == [] and " *" not in markdown(c)


def test_run_better_on_every_case_is_a_significant_gain(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    a = _run(tmp_path, "a", ds, A_SPAM)
    b = _run(tmp_path, "b", ds, SPAM)  # B fixes all 15 of A's spam errors and makes none of its own
    c = compare(a, b, default_taxonomy(), rounds=300)
    spam = c["labels"]["spam"]
    # F1 A: tp 20, fp 5, fn 10 -> 40 / (40 + 15) = 0.7273; F1 B = 1
    assert spam["f1_a"] == 0.7273 and spam["f1_b"] == 1.0 and spam["delta"] == 0.2727
    assert spam["p_value"] < 0.01
    assert c["labels"]["privacy"]["delta"] == 0 and c["labels"]["privacy"]["p_value"] == 1.0
    assert len(c["changed"]) == 15
    assert "| spam | 30 | 0.7273 | 1.0 | 0.2727 * |" in markdown(c)


def test_run_with_as_many_different_errors_is_not_significant(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    a = _run(tmp_path, "a", ds, A_SPAM)
    b = _run(tmp_path, "b", ds, set(range(10, 30)) | set(range(30, 35)))  # misses rows 0-9 instead of 20-29
    c = compare(a, b, default_taxonomy(), rounds=300)
    spam = c["labels"]["spam"]
    assert spam["delta"] == 0 and spam["p_value"] > 0.2
    assert len(c["changed"]) == 20
