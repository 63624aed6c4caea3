"""Append-only, hash-chained audit log.

hash = sha256(prev_hash | actor | action | entity | entity_id | canonical JSON details). Appends are serialised: on
SQLite every write transaction already holds the database lock (BEGIN IMMEDIATE); on PostgreSQL a transaction-level
advisory lock is taken before reading the chain's head, so concurrent writers queue instead of forking the chain.
`prev_hash` is unique as a last line of defence: a fork is a constraint violation, never silent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from copilot.store.models import AuditRow

GENESIS = "0" * 64
ADVISORY_LOCK_ID = 0x6D636F70  # "mcop": one lock for the audit chain


def _digest(prev: str, actor: str, action: str, entity: str, entity_id: str, details: dict[str, Any]) -> str:
    body = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256("|".join((prev, actor, action, entity, entity_id, body)).encode()).hexdigest()


def append(s: Session, actor: str, action: str, entity: str, entity_id: str | int, details: dict[str, Any] | None = None) -> AuditRow:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_ID})
    last = s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    details = details or {}
    row = AuditRow(actor=actor, action=action, entity=entity, entity_id=str(entity_id), details=details, prev_hash=prev,
                   hash=_digest(prev, actor, action, entity, str(entity_id), details))
    s.add(row)
    s.flush()
    return row


def verify(s: Session) -> tuple[bool, int, str]:
    """Walk the chain; returns (ok, rows checked, first problem)."""
    prev = GENESIS
    n = 0
    for row in s.scalars(select(AuditRow).order_by(AuditRow.id)):
        n += 1
        if row.prev_hash != prev:
            return False, n, f"audit row {row.id}: prev_hash does not match row before it (a row was removed or reordered)"
        if row.hash != _digest(row.prev_hash, row.actor, row.action, row.entity, row.entity_id, row.details):
            return False, n, f"audit row {row.id}: content does not match its hash (edited after writing)"
        prev = row.hash
    return True, n, ""
