"""Storage on a real SQLite file: migrations up and down, the audit chain detects tampering, decisions are unique."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from copilot.errors import Conflict
from copilot.schema import Action, Case, DecisionCreate
from copilot.store import audit, keys
from copilot.store import cases as repo
from copilot.store.db import Database, make_engine, migrate


def test_migrations_up_and_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    names = set(inspect(make_engine(url)).get_table_names())
    assert {"cases", "suggestions", "decisions", "claims", "audit_log", "api_keys", "eval_runs"} <= names
    migrate(url, "base", downgrade=True)
    assert set(inspect(make_engine(url)).get_table_names()) <= {"alembic_version"}
    migrate(url)
    assert "cases" in inspect(make_engine(url)).get_table_names()


def test_audit_chain_detects_edit_and_delete(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'a.db'}")
    with db.session() as s:
        row, _ = repo.ingest(s, Case(caption="hello there"), "tester")
        repo.claim(s, row.id, "mod-a")
        repo.decide(s, row.id, "mod-a", DecisionCreate(labels=[], action=Action.no_action))
    with db.session() as s:
        ok, n, _ = audit.verify(s)
        assert ok and n == 3
        s.execute(text("UPDATE audit_log SET details = '{\"labels\": [\"hate\"]}' WHERE id = 2"))
    with db.session() as s:
        ok, _, problem = audit.verify(s)
        assert not ok and "row 2" in problem and "edited" in problem


def test_duplicate_decision_is_a_conflict_and_keeps_the_first(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'd.db'}")
    with db.session() as s:
        row, _ = repo.ingest(s, Case(caption="a post"), "t")
        repo.decide(s, row.id, "mod", DecisionCreate(labels=["spam"], action=Action.remove, note="first"))
    with pytest.raises(Conflict), db.session() as s:
        repo.decide(s, row.id, "mod", DecisionCreate(labels=[], action=Action.no_action, note="second"))
    with db.session() as s:
        ds = repo.decisions(s, row.id)
        assert [d.note for d in ds] == ["first"]
        assert audit.verify(s)[0]


def test_keys_are_hashed_at_rest(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'k.db'}")
    with db.session() as s:
        key = keys.create_key(s, "auditor", "alice")
    with db.session() as s:
        stored = s.execute(text("SELECT key_hash FROM api_keys")).scalar_one()
        assert key not in stored and stored == keys.hash_key(key)
        assert keys.lookup(s, key).role == "auditor"
        assert keys.lookup(s, key + "x") is None
