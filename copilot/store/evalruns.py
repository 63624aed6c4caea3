"""Evaluation runs registered in the database with the versions they measured."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from copilot.errors import NotFound
from copilot.store import audit
from copilot.store.models import EvalRunRow


def create(s: Session, dataset: str, dataset_hash: str, mode: str, actor: str, out_dir: str) -> EvalRunRow:
    row = EvalRunRow(id=uuid.uuid4().hex[:12], dataset=dataset, dataset_hash=dataset_hash, mode=mode, status="queued",
                     model_ids={}, metrics={}, out_dir=out_dir, progress=0.0)
    s.add(row)
    s.flush()
    audit.append(s, actor, "eval.create", "eval_run", row.id, {"dataset": dataset, "dataset_hash": dataset_hash, "mode": mode})
    return row


def update(s: Session, run_id: str, **fields: Any) -> None:
    row = get(s, run_id)
    for k, v in fields.items():
        setattr(row, k, v)


def get(s: Session, run_id: str) -> EvalRunRow:
    row = s.get(EvalRunRow, run_id)
    if row is None:
        raise NotFound(f"no evaluation run {run_id!r}")
    return row


def list_runs(s: Session, limit: int = 100) -> list[EvalRunRow]:
    return list(s.scalars(select(EvalRunRow).order_by(EvalRunRow.created_at.desc()).limit(limit)))
