"""Evaluation runs for auditors: start in the background, watch progress, read the report."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.deps import AUDIT, Caller, RuntimeDep, require
from copilot.errors import NotFound
from copilot.schema import SuggestMode
from copilot.store import evalruns
from eval.service import execute, register, resolve_dataset

router = APIRouter(prefix="/v1/eval", tags=["evaluation"])


class EvalRunCreate(BaseModel):
    dataset: str = Field(description="Path relative to the project (e.g. eval/cases/gold) or under <data_dir>/datasets.")
    mode: SuggestMode = SuggestMode.fast
    labels: list[str] | None = None
    limit: int | None = Field(None, ge=1)
    allow_overlap: bool = False
    slice_by: list[str] = Field(default_factory=list)


class EvalRunOut(BaseModel):
    id: str
    dataset: str
    dataset_hash: str
    mode: str
    status: str
    progress: float
    corpus_version: str | None
    model_ids: dict[str, Any]
    prompt_version: str | None
    metrics: dict[str, Any]
    error: str | None
    created_at: datetime


def _out(row: Any) -> EvalRunOut:
    return EvalRunOut(id=row.id, dataset=row.dataset, dataset_hash=row.dataset_hash, mode=row.mode, status=row.status, progress=row.progress,
                      corpus_version=row.corpus_version, model_ids=row.model_ids, prompt_version=row.prompt_version, metrics=row.metrics,
                      error=row.error, created_at=row.created_at)


@router.post("/runs", response_model=EvalRunOut, status_code=202, summary="Start an evaluation run in the background")
async def start(body: EvalRunCreate, rt: RuntimeDep, caller: Caller = require(*AUDIT)) -> EvalRunOut:
    path = resolve_dataset(rt, body.dataset)
    if body.labels:
        for label in body.labels:
            rt.corpus.taxonomy.check(label)
    run_id, rows = await asyncio.to_thread(register, rt, path, body.mode.value, caller.name)

    def work() -> None:
        try:
            execute(rt, run_id, rows, body.mode.value, body.labels, body.limit, body.allow_overlap, body.slice_by)
        except Exception:
            pass

    threading.Thread(target=work, name=f"eval-{run_id}", daemon=True).start()
    with rt.database.session() as s:
        return _out(evalruns.get(s, run_id))


@router.get("/runs", response_model=list[EvalRunOut], summary="Evaluation runs, newest first")
def list_runs(rt: RuntimeDep, caller: Caller = require(*AUDIT)) -> list[EvalRunOut]:
    with rt.database.session() as s:
        return [_out(r) for r in evalruns.list_runs(s)]


@router.get("/runs/{run_id}", response_model=EvalRunOut, summary="One run with its progress and summary metrics")
def get_run(run_id: str, rt: RuntimeDep, caller: Caller = require(*AUDIT)) -> EvalRunOut:
    with rt.database.session() as s:
        return _out(evalruns.get(s, run_id))


@router.get("/runs/{run_id}/report", summary="The run's self-contained HTML report", response_class=FileResponse)
def report(run_id: str, rt: RuntimeDep, caller: Caller = require(*AUDIT)) -> FileResponse:
    with rt.database.session() as s:
        row = evalruns.get(s, run_id)
    path = Path(row.out_dir or "") / "report.html"
    if row.status != "done" or not path.exists():
        raise NotFound(f"run {run_id} has no report yet (status {row.status})")
    return FileResponse(path, media_type="text/html")
