"""Domain models shared by the API, the CLI and the evaluation harness.

API request/response bodies are these models (or thin Create/Public variants of them), so a field means the same thing
everywhere: a stored suggestion, a `copilot suggest --json` line and an eval prediction all come from `Suggestion`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Fields of a case that hold text a reviewer reads, in the order they are shown and concatenated for the models.
TEXT_FIELDS: tuple[str, ...] = ("title", "caption", "transcript", "on_screen_text", "comments")


class ContentType(StrEnum):
    video = "video"
    audio = "audio"
    comment = "comment"
    profile = "profile"
    live = "live"
    message = "message"
    post = "post"


class ReporterType(StrEnum):
    user = "user"
    trusted_flagger = "trusted_flagger"
    automated = "automated"
    moderator = "moderator"
    law_enforcement = "law_enforcement"


class Action(StrEnum):
    remove = "remove"
    remove_and_report = "remove_and_report"
    remove_and_strike = "remove_and_strike"
    age_restrict = "age_restrict"
    limit_reach = "limit_reach"
    warning_label = "warning_label"
    escalate = "escalate"
    no_action = "no_action"


# Strictest first: when several clauses apply, the suggestion recommends the first action in this order.
ACTION_SEVERITY: tuple[Action, ...] = (
    Action.remove_and_report, Action.escalate, Action.remove_and_strike, Action.remove,
    Action.age_restrict, Action.limit_reach, Action.warning_label, Action.no_action,
)


class TimedLine(BaseModel):
    """A line of transcript or on-screen text with the seconds at which it is heard or seen."""

    text: str
    start_s: float
    end_s: float


class MediaReport(BaseModel):
    """What was extracted from a video or audio file, with times, and what it cost (shared by the API, CLI and eval)."""

    kind: Literal["video", "audio"]
    sha256: str
    duration_s: float
    format_name: str
    audio_codec: str | None = None
    video_codec: str | None = None
    language: str | None = Field(None, description="Spoken language detected by Whisper (None when nobody speaks).")
    language_probability: float | None = None
    transcript: list[TimedLine] = Field(default_factory=list)
    on_screen: list[TimedLine] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per stage: probe, audio, asr, ocr, total.")
    frames: int = 0
    frames_read: int = Field(0, description="Frames Tesseract read (the others matched the previous picture).")
    notes: list[str] = Field(default_factory=list)
    model_ids: dict[str, str] = Field(default_factory=dict)


def primary_language(tag: str | None) -> str:
    """A BCP-47 tag's primary language ('en-US', 'pt_BR' -> 'en', 'pt'); '' when none is given."""
    return (tag or "").replace("_", "-").split("-")[0].lower()


class Case(BaseModel):
    """What a reviewer sees of a short video or post."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(None, max_length=200, description="The platform's id; ingestion is idempotent on it.")
    content_type: ContentType = ContentType.post
    title: str | None = None
    caption: str | None = None
    transcript: str | None = None
    on_screen_text: str | None = None
    comments: list[str] = Field(default_factory=list, max_length=200)
    language: str | None = Field(None, max_length=16, description="BCP-47 tag, e.g. 'en'; detected when absent.")
    report_reason: str | None = Field(None, max_length=500)
    reporter_type: ReporterType | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    transcript_timing: list[TimedLine] = Field(default_factory=list, description="Segments of the transcript with times (media cases).")
    on_screen_timing: list[TimedLine] = Field(default_factory=list, description="On-screen lines with the time they appear.")

    def field_text(self, name: str) -> str:
        if name == "comments":
            return "\n".join(self.comments)
        value = getattr(self, name)
        return value or ""

    def segments(self) -> list[tuple[str, str]]:
        """Non-empty (field, text) pairs in display order."""
        return [(name, text) for name in TEXT_FIELDS if (text := self.field_text(name).strip())]

    def text(self) -> str:
        """The text the models read: the non-empty fields, one per paragraph."""
        return "\n".join(text for _, text in self.segments())

    @classmethod
    def from_text(cls, text: str, **kw: Any) -> Case:
        return cls(caption=text, **kw)


class EvidenceSpan(BaseModel):
    """A quote from the case that shows the violation, pointing into a named field."""

    field: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    quote: str
    label: str | None = Field(None, description="The label this quote shows, when the fast path located it.")
    start_s: float | None = Field(None, description="For transcript/on-screen evidence of media cases: when it is heard or seen.")
    end_s: float | None = None


class LabelScore(BaseModel):
    label: str
    score: float = Field(ge=0.0, le=1.0, description="Calibrated probability that the label applies.")
    threshold: float | None = Field(None, description="Decision threshold for this label; None when the classifier does not support it.")
    flagged: bool = False
    supported: bool = Field(True, description="False when the classifier has too little data for this label (left to retrieval and the LLM).")


class Citation(BaseModel):
    clause_id: str
    title: str = ""
    area: str = ""
    summary: str = ""
    score: float | None = Field(None, description="Retrieval score of the clause for this case.")
    quote: str | None = Field(None, description="A quote from the clause text, checked against the corpus.")


class Clause(BaseModel):
    """One clause of the policy corpus, addressable by its stable id."""

    id: str
    area: str
    title: str
    labels: list[str]
    kind: Literal["prohibition", "allowance"]
    severity: int = Field(ge=1, le=4)
    action: Action
    summary: str
    rule: str
    rationale: str
    exceptions: list[str] = Field(default_factory=list)
    violating: list[str] = Field(default_factory=list)
    non_violating: list[str] = Field(default_factory=list)
    # the author's "(why: ...)" note of each non-violating example, "" where there is none (parallel to non_violating)
    non_violating_why: list[str] = Field(default_factory=list)
    status: Literal["active", "retired"] = "active"
    file: str = ""
    line: int = 0

    def index_text(self) -> str:
        """The chunk embedded for retrieval: title, summary, rule and exceptions (examples are separate chunks)."""
        parts = [self.title, self.summary, self.rule, *self.exceptions]
        return "\n".join(p for p in parts if p)


class SearchHit(BaseModel):
    clause_id: str
    title: str
    labels: list[str]
    area: str
    kind: str
    score: float


class SuggestMode(StrEnum):
    fast = "fast"
    full = "full"
    auto = "auto"


class LLMBudget(BaseModel):
    """What one request lets the LLM chain spend; each is capped by the service's own limit (COPILOT_LLM_TIMEOUT_S,
    COPILOT_LLM_MAX_TOKENS per call). Past it the fast suggestion stands, with the reason."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float | None = Field(None, gt=0, le=600, description="Seconds for the LLM calls of this request (first answer and repair together).")
    max_tokens: int | None = Field(None, ge=64, le=8192, description="Completion tokens for this request (all its LLM calls together: "
                                                                    "the answer, a repair, and with a two-turn prompt the description first; "
                                                                    "an answer takes ~75, so a repair needs room for a second one).")


class Suggestion(BaseModel):
    labels: list[str] = Field(description="Labels the system suggests (each backed by at least one citation).")
    scores: list[LabelScore]
    citations: list[Citation]
    rationale: str
    action: Action
    abstained: bool = Field(description="True when the system escalates to a human instead of suggesting.")
    abstain_reason: str | None = None
    evidence: list[EvidenceSpan] = Field(default_factory=list)
    path: Literal["fast", "full"] = "fast"
    fallback_reason: str | None = Field(None, description="Why the full path fell back to the fast path, when it did.")
    repair_reasons: list[str] = Field(default_factory=list, description="The checks the LLM's first answer failed, when a repair call was made.")
    corpus_version: str
    model_ids: dict[str, str] = Field(default_factory=dict)
    prompt_version: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Verdict(StrEnum):
    accepted = "accepted"
    edited = "edited"
    overridden = "overridden"


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str]
    action: Action
    verdict: Verdict | None = Field(None, description="Derived from the latest suggestion when omitted.")
    clause_ids: list[str] = Field(default_factory=list)
    note: str | None = Field(None, max_length=4000)
    suggestion_id: int | None = Field(None, ge=1, le=2**63 - 1)

    @field_validator("labels")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class Decision(DecisionCreate):
    id: int
    case_id: int
    moderator: str
    verdict: Verdict  # type: ignore[assignment]
    created_at: datetime


class AskAnswer(BaseModel):
    answer: str
    citations: list[Citation]
    abstained: bool
    mode: Literal["extractive", "llm"] = "extractive"
    fallback_reason: str | None = Field(
        None, description="Why the extractive answer was given although an LLM is configured (the LLM call failed or its "
        "answer stayed invalid); None when the LLM answered or none is configured.")
    corpus_version: str


class EvalRun(BaseModel):
    id: str
    dataset: str
    dataset_hash: str
    mode: SuggestMode
    status: Literal["queued", "running", "done", "failed"] = "queued"
    corpus_version: str | None = None
    model_ids: dict[str, str] = Field(default_factory=dict)
    prompt_version: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class DatasetRow(BaseModel):
    """A line of a training or evaluation dataset (the JSONL contract of DESIGN.md)."""

    id: str
    text: str
    labels: list[str] | None
    source: str
    source_labels: dict[str, Any] = Field(default_factory=dict)
    split: str | None = None
