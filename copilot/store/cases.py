"""Case queue repository: ingestion (idempotent), queue listing, suggestions, claims, decisions. Every write audited."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from copilot.errors import Conflict, NotFound
from copilot.schema import Case, Decision, DecisionCreate, Suggestion, Verdict
from copilot.store import audit
from copilot.store.models import CaseRow, ClaimRow, DecisionRow, SuggestionRow

RowT = TypeVar("RowT", CaseRow, DecisionRow)
STATUSES = ("processing", "queued", "claimed", "decided", "failed")


def text_hash(case: Case) -> str:
    return hashlib.sha256(case.text().encode()).hexdigest()


def _payload(case: Case) -> dict[str, Any]:
    return case.model_dump(mode="json", exclude={"external_id"})


def _insert(s: Session, row: RowT, conflict: str) -> RowT:
    """Add a row in a savepoint; a unique-constraint violation (a concurrent writer won) is a 409 saying `conflict`."""
    s.add(row)
    try:
        with s.begin_nested():
            s.flush()
    except IntegrityError:
        raise Conflict(conflict) from None
    return row


def _concurrent(case: Case) -> str:
    # A concurrent request inserted the same external id between our check and our insert.
    return f"case with external_id {case.external_id!r} is being ingested concurrently; retry"


def ingest(s: Session, case: Case, actor: str, idempotency_key: str | None = None, status: str = "queued") -> tuple[CaseRow, bool]:
    """Insert a case, or return the existing one for the same external id / idempotency key (created=False).

    The same id with different content is a conflict, not a silent overwrite.
    """
    for column, value in ((CaseRow.external_id, case.external_id), (CaseRow.idempotency_key, idempotency_key)):
        if value is None:
            continue
        existing = s.scalars(select(CaseRow).where(column == value)).first()
        if existing is not None:
            if existing.payload != _payload(case):
                raise Conflict(f"a different case was already ingested with {column.key} {value!r} (case {existing.id})", case_id=existing.id)
            return existing, False
    row = _insert(s, CaseRow(external_id=case.external_id, idempotency_key=idempotency_key, content_type=case.content_type.value,
                             payload=_payload(case), text_hash=text_hash(case), status=status, created_by=actor),
                  _concurrent(case))
    audit.append(s, actor, "case.create", "case", row.id, {"external_id": case.external_id, "text_hash": row.text_hash})
    return row, True


def ingest_media(s: Session, case: Case, media: dict[str, Any], actor: str, idempotency_key: str | None = None) -> tuple[CaseRow, bool]:
    """A video/audio case: stored as `processing` with its file; the media worker fills in its text. A retry with the
    same external id / idempotency key and the same file and fields returns the existing case; anything else conflicts."""
    submitted = _payload(case)
    for column, value in ((CaseRow.external_id, case.external_id), (CaseRow.idempotency_key, idempotency_key)):
        if value is None:
            continue
        existing = s.scalars(select(CaseRow).where(column == value)).first()
        if existing is not None:
            same = existing.media is not None and existing.media.get("sha256") == media["sha256"] and existing.media.get("submitted") == submitted
            if not same:
                raise Conflict(f"a different case was already ingested with {column.key} {value!r} (case {existing.id})", case_id=existing.id)
            return existing, False
    row = _insert(s, CaseRow(external_id=case.external_id, idempotency_key=idempotency_key, content_type=case.content_type.value,
                             payload=submitted, text_hash=text_hash(case), status="processing", status_detail="waiting for the media worker",
                             media={**media, "submitted": submitted, "report": None}, created_by=actor),
                  _concurrent(case))
    audit.append(s, actor, "case.create", "case", row.id, {"external_id": case.external_id, "media_sha256": media["sha256"],
                                                           "filename": media.get("filename")})
    return row, True


def media_in_use(s: Session, file_name: str) -> bool:
    """Whether any case keeps this stored media file (uploads are stored by content hash, so cases can share one)."""
    return any((m or {}).get("file") == file_name for m in s.scalars(select(CaseRow.media).where(CaseRow.media.is_not(None))))


def to_case(row: CaseRow) -> Case:
    return Case(external_id=row.external_id, **row.payload)


def get(s: Session, case_id: int, for_update: bool = False) -> CaseRow:
    row = s.get(CaseRow, case_id, with_for_update=for_update)
    if row is None:
        raise NotFound(f"no case {case_id}")
    return row


def reviewable(s: Session, case_id: int) -> CaseRow:
    """A case whose text is ready: a media case still processing (or failed) has nothing to suggest on yet."""
    row = get(s, case_id)
    if row.status in ("processing", "failed"):
        raise Conflict(f"case {case_id} is {row.status}" + (f" ({row.status_detail})" if row.status_detail else "") + "; it has no text to suggest on yet"
                       if row.status == "processing" else f"case {case_id} failed ({row.status_detail}); it cannot be suggested on")
    return row


@dataclass
class Page:
    rows: list[CaseRow]
    next_cursor: str | None


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    from copilot.errors import InvalidInput

    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"invalid cursor {cursor!r}; pass back the next_cursor of a previous page") from None


def list_queue(s: Session, status: str | None = None, label: str | None = None, min_score: float | None = None,
               max_score: float | None = None, cursor: str | None = None, limit: int = 50) -> Page:
    q = select(CaseRow).order_by(CaseRow.id)
    if status:
        q = q.where(CaseRow.status == status)
    if label:
        q = q.where(CaseRow.top_label == label)
    if min_score is not None:
        q = q.where(CaseRow.top_score >= min_score)
    if max_score is not None:
        q = q.where(CaseRow.top_score <= max_score)
    if cursor:
        q = q.where(CaseRow.id > decode_cursor(cursor))
    rows = list(s.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1].id) if more and rows else None)


def add_suggestion(s: Session, case_id: int, sug: Suggestion, actor: str) -> SuggestionRow:
    case = get(s, case_id)
    row = SuggestionRow(case_id=case_id, path=sug.path, labels=sug.labels, abstained=sug.abstained,
                        body=sug.model_dump(mode="json"), corpus_version=sug.corpus_version, model_ids=sug.model_ids,
                        prompt_version=sug.prompt_version, latency_ms=sug.latency_ms)
    s.add(row)
    s.flush()
    flagged = [x for x in sug.scores if x.supported]
    if flagged:
        top = max(flagged, key=lambda x: x.score)
        case.top_label, case.top_score = (top.label if top.flagged else None), top.score
    audit.append(s, actor, "suggestion.create", "case", case_id, {"suggestion_id": row.id, "labels": sug.labels, "abstained": sug.abstained,
                                                                   "corpus_version": sug.corpus_version, "model_ids": sug.model_ids})
    return row


def suggestions(s: Session, case_id: int) -> list[SuggestionRow]:
    return list(s.scalars(select(SuggestionRow).where(SuggestionRow.case_id == case_id).order_by(SuggestionRow.id)))


def claim(s: Session, case_id: int, moderator: str) -> ClaimRow:
    case = get(s, case_id)
    if case.status == "decided":
        raise Conflict(f"case {case_id} is already decided")
    if case.status in ("processing", "failed"):
        raise Conflict(f"case {case_id} is {case.status}; it cannot be claimed")
    row = ClaimRow(case_id=case_id, moderator=moderator)
    s.add(row)
    case.status = "claimed"
    s.flush()
    audit.append(s, moderator, "case.claim", "case", case_id, {"claim_id": row.id})
    return row


def derive_verdict(suggested: list[str], decided: list[str]) -> Verdict:
    if set(suggested) == set(decided):
        return Verdict.accepted
    if set(suggested) & set(decided):
        return Verdict.edited
    return Verdict.overridden


def decide(s: Session, case_id: int, moderator: str, body: DecisionCreate) -> DecisionRow:
    case = get(s, case_id)
    if case.status in ("processing", "failed"):
        raise Conflict(f"case {case_id} is {case.status}; it cannot be decided")
    sugs = suggestions(s, case_id)
    sug = next((x for x in sugs if x.id == body.suggestion_id), None) if body.suggestion_id else (sugs[-1] if sugs else None)
    if body.suggestion_id and sug is None:
        raise NotFound(f"suggestion {body.suggestion_id} does not belong to case {case_id}")
    verdict = body.verdict or derive_verdict(sug.labels if sug else [], body.labels)
    row = DecisionRow(case_id=case_id, suggestion_id=sug.id if sug else None, moderator=moderator, labels=body.labels,
                      action=body.action.value, verdict=verdict.value, clause_ids=body.clause_ids, note=body.note)
    _insert(s, row, f"moderator {moderator!r} already decided case {case_id}; decisions are immutable (file a new one under another review)")
    case.status = "decided"
    audit.append(s, moderator, "decision.create", "case", case_id, {"decision_id": row.id, "labels": body.labels, "action": body.action.value, "verdict": verdict.value})
    return row


def decision_model(row: DecisionRow) -> Decision:
    return Decision(id=row.id, case_id=row.case_id, moderator=row.moderator, labels=row.labels, action=row.action,  # type: ignore[arg-type]
                    verdict=row.verdict, clause_ids=row.clause_ids, note=row.note, suggestion_id=row.suggestion_id,  # type: ignore[arg-type]
                    created_at=row.created_at)


def decisions(s: Session, case_id: int) -> list[DecisionRow]:
    return list(s.scalars(select(DecisionRow).where(DecisionRow.case_id == case_id).order_by(DecisionRow.id)))
