"""What the chains need from a chat backend, whatever it is: one structured (JSON) call with a deadline and a token
budget, optional streaming of the raw output, and token counts.

Every backend wraps a LangChain ``BaseChatModel`` (``.chat``) so it can also be used in any LangChain chain; the
``structured`` method is the one place where the chains call a model, and every call is logged there with model id,
prompt and output sizes, tokens and latency (the simonw/llm idea of one logging point for every model call).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

from copilot.errors import CopilotError

log = logging.getLogger("copilot.llm.calls")


class LLMError(CopilotError):
    """The model call failed (backend error, unreadable output); the chains fall back and say so."""

    code, status, title, safe = "llm_error", 502, "LLM call failed", True


class LLMTimeout(LLMError):
    code, status, title = "llm_timeout", 504, "LLM call timed out"


@dataclass
class StructuredResult:
    """One structured call: the parsed object (None when the output was not a JSON object) and what it cost."""

    data: dict[str, Any] | None
    raw: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    first_token_s: float | None = None
    passes: int = 0  # forward passes while decoding (local speculative decoding: fewer than completion tokens)
    accepted_draft_tokens: int = 0


def parse_json_object(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a model's output as one JSON object; tolerate a code fence or text around it (remote models)."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{"):] if "{" in text else text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, "the answer was not a JSON object"
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        return None, f"the answer was not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return None, "the answer was not a JSON object"
    return value, None


@dataclass
class ChatBackend:
    """A loaded chat model. Subclasses implement ``_structured``; ``structured`` adds timing and the call log."""

    name: str
    model_id: str
    chat: Any  # langchain_core BaseChatModel
    extra: dict[str, Any] = field(default_factory=dict)
    # The last calls (purpose, result): for benchmarks and debugging, never for decisions.
    history: deque[tuple[str, StructuredResult]] = field(default_factory=lambda: deque(maxlen=64))

    def structured(
        self, messages: list[BaseMessage], schema: dict[str, Any], *, max_tokens: int, deadline: float,
        on_text: Callable[[str], None] | None = None, purpose: str = "",
    ) -> StructuredResult:
        t0 = time.perf_counter()
        if deadline - time.monotonic() <= 0:
            raise LLMTimeout("no time left for the LLM call (COPILOT_LLM_TIMEOUT_S)")
        try:
            result = self._structured(messages, schema, max_tokens=max_tokens, deadline=deadline, on_text=on_text)
        except Exception as exc:
            log.warning("llm call failed: model=%s purpose=%s error=%s: %s", self.model_id, purpose, type(exc).__name__, exc)
            raise
        result.seconds = time.perf_counter() - t0
        self.history.append((purpose, result))
        log.info(
            "llm call: model=%s purpose=%s prompt_tokens=%d cached=%d completion_tokens=%d passes=%d seconds=%.2f ttft=%s error=%s",
            self.model_id, purpose, result.prompt_tokens, result.cached_tokens, result.completion_tokens, result.passes, result.seconds,
            f"{result.first_token_s:.2f}" if result.first_token_s is not None else "-", result.error,
        )
        return result

    def _structured(
        self, messages: list[BaseMessage], schema: dict[str, Any], *, max_tokens: int, deadline: float,
        on_text: Callable[[str], None] | None,
    ) -> StructuredResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def conversation(self, deadline: float | None = None) -> Iterator[None]:
        """Hold the model for the calls of one exchange (a two-turn prompt's turns): a local backend lets no other
        request in between, so the second turn goes on from the first one's KV state. A remote endpoint keeps no state
        between calls: nothing to hold."""
        yield

    def warm_prefix(self, system_text: str) -> None:
        """Prepare the model for prompts starting with this system message (local backends cache its KV state)."""
