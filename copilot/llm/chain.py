"""The full path: LLM chain over case, scores and clauses. Not built yet (issue 7)."""

from __future__ import annotations

from copilot.runtime import Runtime
from copilot.schema import Case, Suggestion


def suggest_full(rt: Runtime, case: Case, fast: Suggestion) -> Suggestion:
    """Until the chain lands, the LLM backend load fails and the fast suggestion is returned with the reason."""
    try:
        rt.llm  # noqa: B018 - loading is the check
    except Exception as exc:  # ComponentMissing: say why we fell back
        fast.fallback_reason = getattr(exc, "detail", str(exc))
        return fast
    fast.fallback_reason = "LLM chain not built yet"
    return fast
