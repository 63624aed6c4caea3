"""Any OpenAI-compatible chat endpoint (a llama.cpp server, vLLM, a hosted API) through langchain-openai's ChatOpenAI.

Structured output uses ``method="function_calling"``: the JSON schema is sent as the one tool the model must call
(``"json_schema"`` response formats are not supported by every compatible server, a llama.cpp server among them).
The server is not trusted to honour the schema's enums: the chains validate every answer as they do for local models.
The rationale is not streamed token by token from this backend: it arrives with the whole answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from langchain_core.messages import BaseMessage

from copilot.config import Settings
from copilot.errors import ComponentMissing
from copilot.llm.base import ChatBackend, LLMError, LLMTimeout, StructuredResult, parse_json_object


class OpenAIBackend(ChatBackend):
    def _structured(
        self, messages: list[BaseMessage], schema: dict[str, Any], *, max_tokens: int, deadline: float,
        on_text: Callable[[str], None] | None,
    ) -> StructuredResult:
        import httpx
        import openai

        # The request's own budget, not the client's fixed settings: a repair call gets only the time the first call
        # left, so first + repair end by the chain's deadline and the fast suggestion is returned instead of a 504.
        # (Both keywords travel in the request payload; the openai client takes `timeout` per request.)
        runnable = self.chat.with_structured_output(_strip_extensions(schema), method="function_calling", include_raw=True,
                                                    timeout=max(0.05, deadline - time.monotonic()), max_tokens=max_tokens)
        try:
            out = runnable.invoke(messages)
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise LLMTimeout(f"the OpenAI-compatible endpoint did not answer in time: {exc}") from exc
        except openai.APIError as exc:
            raise LLMError(f"the OpenAI-compatible endpoint failed: {type(exc).__name__}: {exc}") from exc
        raw_msg = out["raw"]
        parsed = out.get("parsed")
        error = None
        if isinstance(parsed, dict):
            data: dict[str, Any] | None = parsed
            raw = json.dumps(parsed, ensure_ascii=False)
        else:  # no tool call: some servers answer in the content instead
            raw = str(raw_msg.content or "")
            invalid = getattr(raw_msg, "invalid_tool_calls", None) or []
            if invalid:
                raw = str(invalid[0].get("args") or raw)
            data, error = parse_json_object(raw)
        if data is not None and on_text is not None:
            on_text(raw)
        usage = getattr(raw_msg, "usage_metadata", None) or {}
        cached = (usage.get("input_token_details") or {}).get("cache_read", 0) or 0
        return StructuredResult(
            data=data, raw=raw, error=error, prompt_tokens=int(usage.get("input_tokens", 0) or 0),
            completion_tokens=int(usage.get("output_tokens", 0) or 0), cached_tokens=int(cached),
        )


def _strip_extensions(node: Any) -> Any:
    """Drop our schema extensions (``x-...`` keys, e.g. the case texts behind ``x-substring-of``) before sending."""
    if isinstance(node, dict):
        return {k: _strip_extensions(v) for k, v in node.items() if not k.startswith("x-")}
    if isinstance(node, list):
        return [_strip_extensions(v) for v in node]
    return node


def load_openai(settings: Settings) -> OpenAIBackend:
    if not settings.llm_base_url:
        raise ComponentMissing("llm: COPILOT_LLM_BACKEND=openai needs COPILOT_LLM_BASE_URL (e.g. http://127.0.0.1:8080/v1)")
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ComponentMissing(f"llm: langchain-openai is not installed ({exc}); pip install langchain-openai==1.7.4") from exc
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else "not-needed"
    chat = ChatOpenAI(
        model=settings.llm_model, base_url=settings.llm_base_url, api_key=key,  # type: ignore[arg-type]
        timeout=settings.llm_timeout_s, max_retries=0, max_tokens=settings.llm_max_tokens, temperature=0,  # type: ignore[call-arg]
    )
    host = urlparse(settings.llm_base_url).netloc or settings.llm_base_url
    return OpenAIBackend(name="openai", model_id=f"openai:{settings.llm_model}@{host}", chat=chat)
