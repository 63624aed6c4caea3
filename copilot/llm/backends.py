"""Chat-model backends behind LangChain's BaseChatModel interface, chosen by configuration (COPILOT_LLM_BACKEND).

A small registry maps a backend name to a loader ``(Settings) -> ChatBackend``; an unknown name fails loudly with the
closest names. Built in:

- ``llamacpp``: a local GGUF file through llama-cpp-python (copilot/llm/llamacpp.py). COPILOT_LLM_MODEL names a known
  model (copilot/llm/models.py: ``qwen2.5-coder-1.5b-instruct``, the default, or ``smollm2-135m-instruct``) whose file
  lives under <data_dir>/models and is checked against its pinned sha256; COPILOT_LLM_MODEL_PATH points at any other
  GGUF file instead (a file with a known model's name is still checked against that model's hash).
- ``openai``: any OpenAI-compatible endpoint (COPILOT_LLM_BASE_URL, COPILOT_LLM_MODEL, COPILOT_LLM_API_KEY).

A missing piece (runtime not installed, model file absent or corrupt) raises ComponentMissing naming it and the fix;
/readyz reports it and the full path falls back to the fast path, saying why.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from copilot.config import Settings
from copilot.errors import ComponentMissing
from copilot.llm.base import ChatBackend
from copilot.llm.models import INSTALL_HINT, LOCAL_MODELS, LocalModel, file_sha256, verify

Loader = Callable[[Settings], ChatBackend]
_REGISTRY: dict[str, Loader] = {}

# Threads for llama.cpp when Settings has no `llm_threads` field. llama.cpp's threads spin at barriers, and with
# spinning ONNX Runtime pools beside them (session 3) 2 threads on 2 cores collapsed to 1.6 tok/s, so 1 was the default
# there. With ORT's spinning off (copilot/onnx_graph.py) that no longer happens: benchmarks/llm_contention.py measured
# 2 threads faster than 1 alone (5.1 vs 8.2 s a case), beside a saturating fast path (10.3 vs 11.4 s) and beside batch
# scoring (10.1 vs 15.5 s), at a cost of ~1.4 ms to the fast path's p50. Another process pinning a core still hurts
# (SmolLM2: 19 ms a token with 1 thread, 2.6 s with 2): set COPILOT_LLM_THREADS=1 on a machine shared that way.
DEFAULT_LLM_THREADS = min(2, os.cpu_count() or 1)


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn

    return deco


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_loader(name: str) -> Loader:
    if name == "none":
        raise ComponentMissing("llm: not configured (COPILOT_LLM_BACKEND=none)")
    loader = _REGISTRY.get(name)
    if loader is None:
        close = difflib.get_close_matches(name, [*_REGISTRY, "none"], n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ComponentMissing(f"llm: unknown backend {name!r}{hint} (known: {', '.join(['none', *backend_names()])})")
    return loader


def load_chat_model(settings: Settings) -> ChatBackend:
    return get_loader(settings.llm_backend)(settings)


def resolve_local_model(settings: Settings) -> tuple[Path, LocalModel | None]:
    """The GGUF file to load and the known model it must match (None for an arbitrary COPILOT_LLM_MODEL_PATH)."""
    if settings.llm_model_path is not None:
        path = Path(settings.llm_model_path)
        known = next((m for m in LOCAL_MODELS.values() if m.file_name == path.name), None)
        return path, known
    model = LOCAL_MODELS.get(settings.llm_model)
    if model is None:
        close = difflib.get_close_matches(settings.llm_model, list(LOCAL_MODELS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ComponentMissing(
            f"llm: unknown local model {settings.llm_model!r}{hint} (known: {', '.join(LOCAL_MODELS)}; "
            "or set COPILOT_LLM_MODEL_PATH to a GGUF file)"
        )
    return model.default_path(settings.data_dir), model


@register("llamacpp")
def load_llamacpp(settings: Settings) -> ChatBackend:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise ComponentMissing(f"llm: llama-cpp-python is not installed ({exc}; {INSTALL_HINT})") from exc
    from copilot.llm.llamacpp import LlamaCppBackend, LlamaCppChat

    path, model = resolve_local_model(settings)
    if model is not None:
        digest = verify(model, path)
        name = model.name
        n_ctx = model.n_ctx
    else:
        if not path.is_file():
            raise ComponentMissing(f"llm: COPILOT_LLM_MODEL_PATH {path} does not exist")
        digest = file_sha256(path)
        name = path.stem
        n_ctx = 4096
    model_id = f"llamacpp:{name}@{digest[:12]}"
    chat = LlamaCppChat(
        model_path=str(path), model_name=model_id, n_ctx=n_ctx,
        n_threads=int(getattr(settings, "llm_threads", DEFAULT_LLM_THREADS)),
        max_tokens=settings.llm_max_tokens, prefix_cache_dir=str(settings.data_dir / "cache" / "llm-prefix"),
        speculative=bool(getattr(settings, "llm_speculative", False)),
    )
    return LlamaCppBackend(name="llamacpp", model_id=model_id, chat=chat, extra={"path": str(path), "sha256": digest})


@register("openai")
def _load_openai(settings: Settings) -> ChatBackend:
    from copilot.llm.openai_compat import load_openai

    return load_openai(settings)
