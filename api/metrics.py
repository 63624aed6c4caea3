"""Prometheus metrics of the service (one registry per process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

REQUEST_LATENCY = Histogram("copilot_request_seconds", "HTTP request latency", ["method", "route", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SUGGESTIONS = Counter("copilot_suggestions_total", "Suggestions by label and path", ["label", "path"])
ABSTENTIONS = Counter("copilot_abstentions_total", "Suggestions that abstained (escalated)", ["path"])
DECISIONS = Counter("copilot_decisions_total", "Moderator decisions by verdict", ["verdict"])
MICROBATCH_SIZE = Histogram("copilot_microbatch_size", "Texts per shared model pass", ["model"],
                            buckets=(1, 2, 4, 8, 16, 32, 64))
LLM_TOKENS = Counter("copilot_llm_tokens_total", "LLM tokens", ["kind"])


def record_suggestion(labels: list[str], path: str, abstained: bool, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
    for label in labels or ["none"]:
        SUGGESTIONS.labels(label=label, path=path).inc()
    if abstained:
        ABSTENTIONS.labels(path=path).inc()
    if prompt_tokens:
        LLM_TOKENS.labels(kind="prompt").inc(prompt_tokens)
    if completion_tokens:
        LLM_TOKENS.labels(kind="completion").inc(completion_tokens)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
