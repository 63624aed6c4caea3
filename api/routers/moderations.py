"""POST /v1/moderations in the OpenAI moderation API's shape, so existing clients work unchanged."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import MODERATE, RuntimeDep, require
from api.service import score_texts
from copilot.errors import BatchTooLarge, EmptyText, TextTooLong

router = APIRouter(tags=["moderations"])


class ModerationRequest(BaseModel):
    input: str | list[str]
    model: str | None = Field(None, description="Accepted for compatibility; the shipped classifier answers.")


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


@router.post("/v1/moderations", response_model=ModerationResponse, dependencies=[require(*MODERATE)])
async def moderations(body: ModerationRequest, request: Request, rt: RuntimeDep) -> ModerationResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise EmptyText("input is an empty list")
    if len(texts) > rt.settings.max_batch:
        raise BatchTooLarge(f"{len(texts)} inputs; the limit is {rt.settings.max_batch} (COPILOT_MAX_BATCH)")
    for i, t in enumerate(texts):
        if not t.strip():
            raise EmptyText(f"input[{i}] is empty or whitespace")
        if len(t) > rt.settings.max_text_chars and not rt.settings.window_long_text:
            raise TextTooLong(f"input[{i}] is {len(t)} characters; the limit is {rt.settings.max_text_chars}")
    probs = await score_texts(request, texts)
    clf = rt.classifier
    results = []
    for row in probs:
        scores = {label: 0.0 for label in rt.corpus.taxonomy.label_names}
        cats = {label: False for label in scores}
        for label, p in zip(clf.labels, row, strict=True):
            scores[label] = round(float(p), 6)
            cats[label] = bool(p >= clf.thresholds[label])
        results.append(ModerationResult(flagged=any(cats.values()), categories=cats, category_scores=scores,
                                        category_applied_input_types={k: ["text"] for k, v in cats.items() if v}))
    return ModerationResponse(id=f"modr-{uuid.uuid4().hex[:24]}", model=clf.model_id, results=results)
