from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field, ValidationError

from api.deps import AUDIT, MODERATE, READ_CASES, Caller, RuntimeDep, require
from api.errors import LLMNotConfigured, problem_of
from api.metrics import DECISIONS
from api.service import fast_suggestion, stream_full, suggest_case
from copilot.errors import BatchTooLarge
from copilot.schema import Case, Decision, DecisionCreate, LLMBudget, MediaReport, Suggestion, SuggestMode
from copilot.store import audit
from copilot.store import cases as repo
from copilot.validate import validate_case

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["cases"])
# Ids are 64-bit in every database we support; a larger number is a client error, not a driver overflow.
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Case id")]


class CaseBatch(BaseModel):
    cases: list[Case] = Field(min_length=1)


class CaseSummary(BaseModel):
    id: int
    external_id: str | None
    content_type: str
    status: str
    status_detail: str | None = Field(None, description="Why a case failed, or what a processing one waits for.")
    top_label: str | None
    top_score: float | None
    created_at: datetime
    preview: str


class CaseCreated(BaseModel):
    id: int
    created: bool
    status: str
    suggestion: Suggestion | None = None


class IngestResponse(BaseModel):
    cases: list[CaseCreated]


class QueuePage(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None


class StoredSuggestion(BaseModel):
    id: int
    created_at: datetime
    suggestion: Suggestion


class CaseDetail(BaseModel):
    id: int
    status: str
    status_detail: str | None = None
    case: Case
    media: MediaReport | None = Field(None, description="Media cases: what was heard and seen, with times (None until extracted).")
    suggestions: list[StoredSuggestion]
    decisions: list[Decision]
    claims: list[dict[str, Any]]


class AdHocRequest(BaseModel):
    case: Case
    mode: SuggestMode = SuggestMode.fast
    store: bool = Field(False, description="Also ingest the case and store the suggestion.")
    budget: LLMBudget | None = Field(None, description="What the LLM chain may spend on this request (full and auto modes).")


def llm_budget(timeout_s: Annotated[float | None, Query(description=LLMBudget.model_fields["timeout_s"].description)] = None,
               max_tokens: Annotated[int | None, Query(description=LLMBudget.model_fields["max_tokens"].description)] = None,
               ) -> LLMBudget | None:
    """The request's LLM budget from query parameters (the endpoints whose body is not ours to extend). LLMBudget holds
    the bounds, for the body and the query alike; a value out of them is a 422 like any other invalid parameter."""
    if timeout_s is None and max_tokens is None:
        return None
    try:
        return LLMBudget(timeout_s=timeout_s, max_tokens=max_tokens)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]) from None


def _summary(row: Any) -> CaseSummary:
    case = repo.to_case(row)
    return CaseSummary(id=row.id, external_id=row.external_id, content_type=row.content_type, status=row.status, status_detail=row.status_detail,
                       top_label=row.top_label, top_score=row.top_score, created_at=row.created_at, preview=case.text()[:200])


@router.post("/cases", response_model=IngestResponse, status_code=201, summary="Ingest one case or a batch {cases: [...]}")
async def create_cases(body: Case | CaseBatch, request: Request, response: Response, rt: RuntimeDep,
                       caller: Caller = require(*MODERATE),
                       idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> IngestResponse:
    items = body.cases if isinstance(body, CaseBatch) else [body]
    if len(items) > rt.settings.max_batch:
        raise BatchTooLarge(f"{len(items)} cases; the limit is {rt.settings.max_batch} (COPILOT_MAX_BATCH)")
    for case in items:
        validate_case(case, rt.settings)

    def write() -> list[tuple[int, bool, str]]:
        with rt.database.session() as s:  # one transaction: the whole batch lands or none of it
            out = []
            for i, case in enumerate(items):
                key = None if idempotency_key is None else (idempotency_key if len(items) == 1 else f"{idempotency_key}:{i}")
                row, created = repo.ingest(s, case, caller.name, key)
                out.append((row.id, created, row.status))
            return out

    written = await asyncio.to_thread(write)
    results = []
    for (case_id, created, status), case in zip(written, items, strict=True):
        sug = None
        if created:
            try:
                sug = await suggest_case(request, case, "fast")
                await asyncio.to_thread(_store_suggestion, rt, case_id, sug, caller.name)
            except Exception as exc:  # the case is stored; the queue shows it without a suggestion
                log.warning("case %s stored without suggestion: %s", case_id, exc)
        results.append(CaseCreated(id=case_id, created=created, status=status, suggestion=sug))
    if not any(r.created for r in results):
        response.status_code = 200
    return IngestResponse(cases=results)


def _store_suggestion(rt: Any, case_id: int, sug: Suggestion, actor: str) -> int:
    with rt.database.session() as s:
        return repo.add_suggestion(s, case_id, sug, actor).id


@router.get("/cases", response_model=QueuePage, summary="The queue, oldest first, with filters and cursor pagination")
def list_cases(rt: RuntimeDep, caller: Caller = require(*READ_CASES),
               status: Annotated[str | None, Query(pattern="^(processing|queued|claimed|decided|failed)$")] = None,
               label: str | None = None,
               min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
               max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
               cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> QueuePage:
    if label:
        rt.corpus.taxonomy.check(label)
    with rt.database.session() as s:
        page = repo.list_queue(s, status, label, min_score, max_score, cursor, limit)
        return QueuePage(items=[_summary(r) for r in page.rows], next_cursor=page.next_cursor)


@router.get("/cases/{case_id}", response_model=CaseDetail, summary="A case with its suggestions, claims and decisions")
def get_case(case_id: CaseId, rt: RuntimeDep, caller: Caller = require(*READ_CASES)) -> CaseDetail:
    from sqlalchemy import select

    from copilot.store.models import ClaimRow

    with rt.database.session() as s:
        row = repo.get(s, case_id)
        claims = [{"moderator": c.moderator, "claimed_at": c.claimed_at.isoformat()} for c in s.scalars(select(ClaimRow).where(ClaimRow.case_id == case_id))]
        return CaseDetail(
            id=row.id, status=row.status, status_detail=row.status_detail, case=repo.to_case(row),
            media=MediaReport.model_validate(row.media["report"]) if row.media and row.media.get("report") else None,
            suggestions=[StoredSuggestion(id=x.id, created_at=x.created_at, suggestion=Suggestion.model_validate(x.body)) for x in repo.suggestions(s, case_id)],
            decisions=[repo.decision_model(d) for d in repo.decisions(s, case_id)], claims=claims,
        )


@router.post("/cases/{case_id}/suggest", response_model=StoredSuggestion, summary="Compute and store a new suggestion (mode fast|full|auto)")
async def suggest_stored(case_id: CaseId, request: Request, rt: RuntimeDep, caller: Caller = require(*MODERATE),
                         mode: SuggestMode = SuggestMode.fast, budget: LLMBudget | None = Depends(llm_budget)) -> StoredSuggestion:
    def load() -> Case:
        with rt.database.session() as s:
            return repo.to_case(repo.reviewable(s, case_id))

    case = await asyncio.to_thread(load)
    sug = await suggest_case(request, case, mode.value, budget)
    sid = await asyncio.to_thread(_store_suggestion, rt, case_id, sug, caller.name)
    return StoredSuggestion(id=sid, created_at=datetime.now(), suggestion=sug)


@dataclass
class StreamStart:
    case_id: int
    case: Case
    fast: Suggestion
    caller: Caller
    budget: LLMBudget | None = None


async def _start_stream(case_id: CaseId, request: Request, rt: RuntimeDep, caller: Caller = require(*MODERATE),
                        budget: LLMBudget | None = Depends(llm_budget)) -> StreamStart:
    """Everything that can fail before the stream starts, so it fails with a status code (problem details)."""
    if rt.settings.llm_backend == "none":
        raise LLMNotConfigured("streaming runs the LLM chain and no LLM backend is configured (COPILOT_LLM_BACKEND=none); "
                               "POST /v1/cases/{id}/suggest gives the fast-path suggestion")

    def load() -> Case:
        with rt.database.session() as s:
            return repo.to_case(repo.reviewable(s, case_id))

    case = await asyncio.to_thread(load)
    fast = await fast_suggestion(request, case)
    await asyncio.to_thread(lambda: rt.llm)  # a configured model that does not load is a 503 here, not a fallback
    return StreamStart(case_id, case, fast, caller, budget)


STREAM_DOC = """Server-sent events (text/event-stream) while the LLM chain writes the suggestion:

- `event: rationale`, `data: {"text": "..."}`: the next piece of the model's reasoning, as it is generated;
- then `event: suggestion`, `data:` the stored suggestion `{id, created_at, suggestion}` (stored and audited like
  `POST /v1/cases/{id}/suggest?mode=full`; its `rationale` is the authoritative one, after checks and repair), or
  `event: error`, `data:` problem details, when the chain fails mid-stream.

Lines starting with `:` are keep-alive comments. Errors found before the stream starts are ordinary problem-details
responses: 409 `llm_not_configured` (COPILOT_LLM_BACKEND=none), 503 `component_missing` (the LLM does not load), 404,
403. A client that disconnects cancels the chain at its next token; nothing is stored then."""


@router.post("/cases/{case_id}/suggest/stream", response_class=EventSourceResponse, summary="Full (LLM) suggestion with the rationale streamed as server-sent events",
             description=STREAM_DOC, responses={409: {"description": "No LLM configured"}, 503: {"description": "The configured LLM is not available"}})
async def suggest_stream(start: Annotated[StreamStart, Depends(_start_stream)], request: Request, rt: RuntimeDep) -> AsyncIterator[ServerSentEvent]:
    try:
        async for kind, value in stream_full(request, start.case, start.fast, start.budget):
            if kind == "rationale":
                yield ServerSentEvent(event="rationale", data={"text": value})
            elif kind == "suggestion":
                sid = await asyncio.to_thread(_store_suggestion, rt, start.case_id, value, start.caller.name)
                stored = StoredSuggestion(id=sid, created_at=datetime.now(), suggestion=value)
                yield ServerSentEvent(event="suggestion", data=stored)
    except Exception as exc:  # the status line has gone out: the error becomes the stream's last event
        log.warning("suggestion stream for case %s failed: %s", start.case_id, exc)
        yield ServerSentEvent(event="error", data=problem_of(exc, request))


@router.post("/suggest", response_model=Suggestion, summary="Ad hoc suggestion; nothing stored unless store=true")
async def suggest_adhoc(body: AdHocRequest, request: Request, rt: RuntimeDep, caller: Caller = require(*MODERATE, "policy")) -> Suggestion:
    sug = await suggest_case(request, body.case, body.mode.value, body.budget)
    if body.store:
        def write() -> None:
            with rt.database.session() as s:
                row, _ = repo.ingest(s, body.case, caller.name)
                repo.add_suggestion(s, row.id, sug, caller.name)

        await asyncio.to_thread(write)
    return sug


@router.post("/cases/{case_id}/claim", summary="Claim a case for review (who and when, for SLA tracking)")
def claim(case_id: CaseId, rt: RuntimeDep, caller: Caller = require(*MODERATE)) -> dict[str, Any]:
    with rt.database.session() as s:
        row = repo.claim(s, case_id, caller.name)
        return {"case_id": case_id, "moderator": row.moderator, "claimed_at": row.claimed_at.isoformat()}


@router.post("/cases/{case_id}/decisions", response_model=Decision, status_code=201, summary="Record the moderator's final decision")
def decide(case_id: CaseId, body: DecisionCreate, rt: RuntimeDep, caller: Caller = require(*MODERATE)) -> Decision:
    for label in body.labels:
        rt.corpus.taxonomy.check(label)
    for cid in body.clause_ids:
        rt.corpus.get(cid)
    with rt.database.session() as s:
        row = repo.decide(s, case_id, caller.name, body)
        out = repo.decision_model(row)
    DECISIONS.labels(verdict=out.verdict.value).inc()
    return out


@router.get("/audit/verify", summary="Verify the hash chain of the audit log", tags=["audit"])
def verify_audit(rt: RuntimeDep, caller: Caller = require(*AUDIT)) -> dict[str, Any]:
    with rt.database.session() as s:
        ok, n, problem = audit.verify(s)
    return {"ok": ok, "rows": n, "problem": problem or None}
