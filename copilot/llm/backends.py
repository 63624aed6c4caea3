"""Chat-model backends behind LangChain's BaseChatModel interface, chosen by configuration (COPILOT_LLM_BACKEND).

Not built yet: the local GGUF (llama-cpp-python) and OpenAI-compatible backends of issue 7. Until they land, asking for
one fails loudly with what is missing; nothing pretends to be an LLM.
"""

from __future__ import annotations

from typing import Any

from copilot.config import Settings
from copilot.errors import ComponentMissing

BACKENDS = ("none", "llamacpp", "openai")


def load_chat_model(settings: Settings) -> Any:
    if settings.llm_backend == "none":
        raise ComponentMissing("llm: not configured (COPILOT_LLM_BACKEND=none)")
    raise ComponentMissing(f"llm: backend {settings.llm_backend!r} is not built yet (issue 7: LLM prompt chain)")
