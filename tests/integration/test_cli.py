"""The `copilot` command as a user runs it (subprocess), with real components."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from copilot.config import Settings
from copilot.schema import AskAnswer

pytestmark = pytest.mark.slow


def copilot(*args: str, settings: Settings, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "COPILOT_DATA_DIR": str(settings.data_dir), **(env or {})}
    return subprocess.run([sys.executable, "-m", "copilot_cli", *args], capture_output=True, text=True, env=e, timeout=300)


def test_help_lists_every_command(settings: Settings) -> None:
    r = copilot("--help", settings=settings)
    assert r.returncode == 0
    for cmd in ("serve", "index", "train", "suggest", "policy", "eval", "keys", "classify"):
        assert re.search(rf"\b{cmd}\b", r.stdout), cmd
    assert "--host" in copilot("serve", "--help", settings=settings).stdout


def test_policy_search_and_show_json(settings: Settings) -> None:
    r = copilot("policy", "search", "selling fake followers and likes", "--k", "3", "--json", settings=settings)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 3 and set(hits[0]) == {"clause_id", "title", "labels", "score"}
    assert any(h["clause_id"].startswith("SPM-") for h in hits)
    show = copilot("policy", "show", hits[0]["clause_id"], "--json", settings=settings)
    assert json.loads(show.stdout)["id"] == hits[0]["clause_id"]
    missing = copilot("policy", "show", "NOPE-1.1", settings=settings)
    assert missing.returncode != 0 and "NOPE-1.1" in missing.stderr


def test_suggest_json_cites_existing_clauses(settings: Settings, runtime) -> None:  # type: ignore[no-untyped-def]
    r = copilot("suggest", "I will find you after school tomorrow and break your legs, you little rat", "--mode", "fast", "--json", settings=settings)
    assert r.returncode == 0, r.stderr
    sug = json.loads(r.stdout)
    assert sug["corpus_version"] == runtime.corpus.version
    assert sug["labels"] or sug["abstained"]
    for c in sug["citations"]:
        assert c["clause_id"] in runtime.corpus.clauses
    for label in sug["labels"]:  # every suggested label is backed by a citation of that label
        assert any(label in runtime.corpus.clauses[c["clause_id"]].labels for c in sug["citations"])


def test_full_mode_without_llm_says_why(settings: Settings) -> None:
    r = copilot("suggest", "nice video, thanks for sharing", "--mode", "full", "--json", settings=settings)
    assert r.returncode == 0, r.stderr
    assert "no LLM configured" in json.loads(r.stdout)["fallback_reason"]


def test_missing_classifier_exits_nonzero_with_one_line(settings: Settings, tmp_path: Path) -> None:
    r = copilot("classify", "hello", settings=settings, env={"COPILOT_CLASSIFIER_DIR": str(tmp_path / "none")})
    assert r.returncode == 3
    assert "classifier" in r.stderr and "copilot train" in r.stderr and "score" not in r.stdout


def test_policy_ask_abstains_off_topic(settings: Settings) -> None:
    r = copilot("policy", "ask", "what is the boiling point of water at sea level in kelvin", "--json", settings=settings)
    body = json.loads(r.stdout)
    assert body["abstained"] is True and body["citations"] == []
    assert set(body) == set(AskAnswer.model_fields)  # every field of the model, not a hand-picked subset
    assert body["mode"] == "extractive" and body["fallback_reason"] is None and body["corpus_version"]


def test_policy_search_rejects_bad_method_and_k_in_one_line(settings: Settings) -> None:
    bad_method = copilot("policy", "search", "doxxing", "--method", "foo", settings=settings)
    assert bad_method.returncode == 2 and "Traceback" not in bad_method.stderr
    assert "--method must be one of dense, bm25, hybrid, rerank, auto, not 'foo'" in bad_method.stderr
    bad_k = copilot("policy", "search", "doxxing", "--k", "0", settings=settings)
    assert bad_k.returncode == 2 and "--k must be at least 1, not 0" in bad_k.stderr and "Traceback" not in bad_k.stderr


def test_suggest_rejects_an_llm_budget_out_of_range_in_one_line(settings: Settings) -> None:
    r = copilot("suggest", "hello", "--mode", "full", "--max-tokens", "4", "--timeout-s", "0", settings=settings)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "--timeout-s: Input should be greater than 0" in r.stderr and "--max-tokens: Input should be greater than or equal to 64" in r.stderr


def test_export_split_writes_the_dev_split_as_an_eval_dataset(settings: Settings, runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from eval.datasets import read_many
    from eval.runner import training_overlap

    out = tmp_path / "dev.jsonl.gz"
    r = copilot("export-split", "--out", str(out), settings=settings)
    if not (settings.training_data_dir / "davidson.jsonl.gz").exists():  # the public sets live outside the repo
        assert r.returncode == 3 and "COPILOT_TRAINING_DATA_DIR" in r.stderr, r.stderr
        pytest.skip(f"training data not at {settings.training_data_dir}: checked the error, not the export")
    assert r.returncode == 0, r.stderr
    rows = read_many([out], runtime.corpus.taxonomy)
    assert f"{len(rows)} dev rows" in r.stdout and len(rows) > 1000
    assert {row.split for row in rows} == {"dev"}
    assert training_overlap(runtime, rows) == 0  # the dev split never overlaps what the shipped model trained on
    masked = [row for row in rows if row.source_labels.get("unknown_categories")]
    assert masked and all(set(row.labels or []).isdisjoint(row.source_labels["unknown_categories"]) for row in masked)
    assert copilot("export-split", "--out", str(out), "--split", "test", settings=settings).returncode == 2


def test_keys_list_and_revoke_take_effect_on_the_running_service(server, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    import time

    import httpx

    created = copilot("keys", "create", "--role", "auditor", "--name", "revoke-me", settings=settings)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.url + "/v1/eval/runs", headers=headers).status_code == 200
    listing = copilot("keys", "list", settings=settings)
    line = next(l for l in listing.stdout.splitlines() if "revoke-me" in l)
    assert key not in listing.stdout and key[:10] in line  # only the prefix is shown
    key_id = line.split("│")[1].strip() if "│" in line else line.split()[0]
    r = copilot("keys", "revoke", key_id, settings=settings)
    assert r.returncode == 0 and "revoked key" in r.stdout, r.stderr
    time.sleep(settings.auth_cache_s + 0.5)  # the service trusts a verified key for auth_cache_s
    refused = httpx.get(server.url + "/v1/eval/runs", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    again = copilot("keys", "revoke", key_id, settings=settings)
    assert again.returncode != 0 and "already revoked" in again.stderr
    assert copilot("keys", "revoke", "999999", settings=settings).returncode != 0


def test_finetune_embedder_refuses_a_bad_training_file_before_loading_anything(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "queries.jsonl"
    bad.write_text('{"text": "can I post my ex\'s address?", "clause_id": "PRV-1.1"}\n{"text": "x", "clause_id": "ZZZ-1.1"}\n')
    out = tmp_path / "embedder"
    r = copilot("index", "finetune-embedder", "--out", str(out), "--extra", str(bad), "--seed", "7", "--linked-lookalikes", settings=settings, env={"COLUMNS": "400"})  # one line
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--extra" in r.stderr and "queries.jsonl:2" in r.stderr and "ZZZ-1.1" in r.stderr
    assert not out.exists()


def test_finetune_embedder_from_another_base_needs_its_own_output_folder(settings: Settings, tmp_path: Path) -> None:
    r = copilot("index", "finetune-embedder", "--base", str(tmp_path), settings=settings, env={"COLUMNS": "400"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--out" in r.stderr and "models/embedder is not replaced" in r.stderr
    missing = copilot("index", "finetune-embedder", "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), settings=settings, env={"COLUMNS": "400"})
    assert missing.returncode == 2 and "nowhere" in missing.stderr and not (tmp_path / "o").exists()
