"""The evaluation harness end to end: CLI run with reports, the leak guard, and background runs through the API."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import Server
from test_cli import copilot  # the same subprocess helper

from copilot.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow
GOLD = PROJECT_ROOT / "eval" / "cases" / "gold"


def test_cli_eval_run_writes_predictions_metrics_and_reports(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = copilot("eval", "run", "--dataset", str(GOLD / "spam.jsonl"), "--out", str(out), "--limit", "12", "--slice", "hard_kind", settings=settings)
    assert r.returncode == 0, r.stderr
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and set(preds[0]) >= {"id", "scores", "labels", "citations", "latency_ms"}
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["rows"] == 12 and m["run"]["corpus_version"] and m["invented_clause_ids"] == 0
    assert "spam" in m["labels"] and "hard_kind" in m["slices"]
    spam = m["labels"]["spam"]
    assert spam["support"] >= 5 and spam["ece"] is not None and sum(b["n"] for b in spam["reliability"]) == spam["n"]
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3 and "Label confusion" in html
    # per-label reliability small multiples: spam has 5 positives in these 12 rows, the other labels none
    assert "Reliability per label" in html and f"spam (ECE {spam['ece']:.3f})" in html and "hate (ECE" not in html
    assert "| label | support |" in (out / "report.md").read_text()


def test_leak_guard_refuses_training_texts(settings: Settings, tmp_path: Path) -> None:
    hashes = PROJECT_ROOT / "models" / "classifier" / "train_hashes.txt.gz"
    if not hashes.exists():
        pytest.skip("the shipped classifier has no training manifest")
    # A training row of our own written data is, by construction, in the training manifest or the dev split.
    from copilot.classifier.data import text_key

    with gzip.open(hashes, "rt") as f:
        train = set(f.read().split())
    rows = [json.loads(l) for p in sorted((PROJECT_ROOT / "data" / "written").glob("*.jsonl")) for l in p.read_text().splitlines()]
    leaked = [r for r in rows if text_key(r["text"]) in train][:3]
    assert leaked
    ds = tmp_path / "leaky.jsonl"
    ds.write_text("\n".join(json.dumps({**r, "split": "test"}) for r in leaked) + "\n")
    r = copilot("eval", "run", "--dataset", str(ds), "--out", str(tmp_path / "o"), settings=settings)
    assert r.returncode != 0 and "3 of 3 dataset texts are in the classifier's training data" in r.stderr
    ok = copilot("eval", "run", "--dataset", str(ds), "--out", str(tmp_path / "o"), "--allow-overlap", settings=settings)
    assert ok.returncode == 0, ok.stderr


def test_malformed_dataset_names_the_line(settings: Settings, tmp_path: Path) -> None:
    ds = tmp_path / "bad.jsonl"
    ds.write_text('{"id": "a", "text": "hi", "labels": [], "source": "x"}\n{"id": "b", "text": "x", "labels": ["hateful"], "source": "x"}\n')
    r = copilot("eval", "run", "--dataset", str(ds), "--out", str(tmp_path / "o"), settings=settings)
    assert r.returncode != 0 and "unknown label 'hateful'" in r.stderr


def test_api_background_run_and_report(server: Server) -> None:
    with server.client("auditor") as c:
        r = c.post("/v1/eval/runs", json={"dataset": "eval/cases/gold/privacy.jsonl", "limit": 8})
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        deadline = time.time() + 180
        while time.time() < deadline:
            run = c.get(f"/v1/eval/runs/{run_id}").json()
            if run["status"] in ("done", "failed"):
                break
            time.sleep(1)
        assert run["status"] == "done", run
        assert run["progress"] == 1.0 and run["corpus_version"] and "macro" in run["metrics"]
        rep = c.get(f"/v1/eval/runs/{run_id}/report")
        assert rep.status_code == 200 and "<svg" in rep.text
        assert any(x["id"] == run_id for x in c.get("/v1/eval/runs").json())
        outside = c.post("/v1/eval/runs", json={"dataset": "/etc/passwd"})
        assert outside.status_code == 403
    with server.client("moderator") as c:
        assert c.get("/v1/eval/runs").status_code == 403
    assert httpx.get(server.url + "/v1/eval/runs").status_code == 401


def test_tune_thresholds_then_compare_runs(settings: Settings, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ds = str(GOLD / "hate.jsonl")
    assert copilot("eval", "run", "--dataset", ds, "--out", str(a), settings=settings).returncode == 0
    thr = tmp_path / "thr.json"
    t = copilot("eval", "tune-thresholds", str(a), "--out", str(thr), "--target-recall", "0.99", settings=settings)
    assert t.returncode == 0, t.stderr
    tuned = json.loads(thr.read_text())
    assert "recall >= 0.99" in tuned["operating_point"] and len(tuned["thresholds"]) == 17
    r = copilot("eval", "run", "--dataset", ds, "--out", str(b), settings=settings, env={"COPILOT_THRESHOLDS_FILE": str(thr)})
    assert r.returncode == 0, r.stderr
    c = copilot("eval", "compare", str(a), str(b), "--json", settings=settings)
    assert c.returncode == 0, c.stderr
    cmp = json.loads(c.stdout)
    assert cmp["rows"] == len((GOLD / "hate.jsonl").read_text().splitlines())
    hate = cmp["labels"]["hate"]
    # recall-oriented thresholds can only add positive predictions: B's hate recall is at least A's
    mb = json.loads((b / "metrics.json").read_text())["labels"]["hate"]
    ma = json.loads((a / "metrics.json").read_text())["labels"]["hate"]
    assert mb["recall"] >= ma["recall"] and 0 <= hate["p_value"] <= 1
    assert isinstance(cmp["changed"], list)
    # best F1 per label: on the tuning run itself, no label's F1 can be below what the shipped thresholds gave
    best = tmp_path / "best.json"
    assert copilot("eval", "tune-thresholds", str(a), "--out", str(best), "--best-f1", settings=settings).returncode == 0
    assert json.loads(best.read_text())["operating_point"].startswith("best F1")
    c2 = tmp_path / "c"
    assert copilot("eval", "run", "--dataset", ds, "--out", str(c2), settings=settings, env={"COPILOT_THRESHOLDS_FILE": str(best)}).returncode == 0
    mc = json.loads((c2 / "metrics.json").read_text())["labels"]
    for label, v in json.loads((a / "metrics.json").read_text())["labels"].items():
        if v.get("f1") is not None and mc[label].get("f1") is not None:
            assert mc[label]["f1"] >= v["f1"] - 1e-3, label
    both = copilot("eval", "tune-thresholds", str(a), "--out", str(best), "--best-f1", "--target-recall", "0.9", settings=settings)
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_policy_diff_lists_cases_a_clause_edit_changes(settings: Settings, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    new = tmp_path / "new"
    shutil.copytree(PROJECT_ROOT / "policy_corpus", old)
    shutil.copytree(PROJECT_ROOT / "policy_corpus", new)
    # Retire every spam clause but one: spam suggestions must now cite that one or change.
    text = (new / "spam.md").read_text()
    import re

    ids = re.findall(r"^## (SPM-\d+\.\d+) ", text, flags=re.M)
    keep = next(i for i in ids if "9." not in i)
    text = re.sub(r"(## (?!" + re.escape(keep) + r")SPM-[1-8]\.\d+ [^\n]*\n)", r"\1**Status:** retired\n", text)
    (new / "spam.md").write_text(text)
    ds = tmp_path / "cases.jsonl"
    rows = [json.loads(l) for l in (GOLD / "spam.jsonl").read_text().splitlines()][:10]
    ds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = copilot("eval", "policy-diff", "--old", str(old), "--new", str(new), "--dataset", str(ds), "--no-stored", "--json", settings=settings)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["old_version"] != d["new_version"] and d["cases"] == 10
    retired = set(ids) - {keep} - {i for i in ids if i.startswith("SPM-9")}
    for c in d["changed"]:
        assert not set(c["citations_new"]) & retired
    assert any(set(c["citations_old"]) & retired for c in d["changed"])


def test_suite_runs_each_entry(settings: Settings, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: t\nruns:\n  - name: a\n    dataset: {GOLD / 'spam.jsonl'}\n    limit: 5\n    slices: [hard_kind]\n"
                     f"  - name: b\n    dataset: {GOLD / 'privacy.jsonl'}\n    labels: [privacy]\n    limit: 4\n")
    r = copilot("eval", "suite", str(suite), "--out", str(tmp_path / "o"), settings=settings)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("a: macro_f1") and "\nb: macro_f1" in r.stdout
    assert json.loads((tmp_path / "o" / "b" / "metrics.json").read_text())["run"]["rows"] == 4
    assert list(json.loads((tmp_path / "o" / "b" / "metrics.json").read_text())["labels"]) == ["privacy"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nruns: []\n")
    r2 = copilot("eval", "suite", str(bad), "--out", str(tmp_path / "o2"), settings=settings)
    assert r2.returncode != 0 and "not a valid suite" in r2.stderr
