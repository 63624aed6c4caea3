"""Async glue between routes and the core: shared classifier passes (micro-batcher), model work off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import numpy as np
from fastapi import Request

from api.errors import SuggestionTimeout
from api.metrics import MICROBATCH_SIZE, record_suggestion
from copilot import suggest as core
from copilot.classifier.batcher import MicroBatcher
from copilot.runtime import Runtime
from copilot.schema import Case, LLMBudget, Suggestion
from copilot.validate import validate_case


def batcher(request: Request) -> MicroBatcher:
    app = request.app
    if getattr(app.state, "batcher", None) is None:
        rt: Runtime = app.state.runtime
        app.state.batcher = MicroBatcher(lambda texts: rt.classifier.predict_proba(texts), rt.settings.microbatch_max, rt.settings.microbatch_wait_ms,
                                         MICROBATCH_SIZE.labels("classifier").observe)
    return app.state.batcher  # type: ignore[no-any-return]


def embed_batcher(request: Request) -> MicroBatcher:
    """Query embeddings for retrieval, shared across concurrent requests like the classifier's passes."""
    app = request.app
    if getattr(app.state, "embed_batcher", None) is None:
        rt: Runtime = app.state.runtime
        app.state.embed_batcher = MicroBatcher(lambda texts: rt.index.embedder.encode(texts), rt.settings.microbatch_max,
                                               rt.settings.microbatch_wait_ms, MICROBATCH_SIZE.labels("embedder").observe)
    return app.state.embed_batcher  # type: ignore[no-any-return]


async def score_texts(request: Request, texts: list[str]) -> np.ndarray:
    rt: Runtime = request.app.state.runtime
    await asyncio.to_thread(lambda: rt.classifier)  # load (or raise ComponentMissing) outside the loop
    return await batcher(request).score(texts)


async def embed_texts(request: Request, texts: list[str]) -> np.ndarray:
    rt: Runtime = request.app.state.runtime
    await asyncio.to_thread(lambda: rt.index)  # load (or raise ComponentMissing) outside the loop
    return await embed_batcher(request).score(texts)


async def fast_suggestion(request: Request, case: Case) -> Suggestion:
    rt: Runtime = request.app.state.runtime
    validate_case(case, rt.settings)
    text = case.text()
    probs, vecs = await asyncio.gather(score_texts(request, [text]), embed_texts(request, [text]))
    scored = core._scored(rt, probs[0])
    return await asyncio.to_thread(core.suggest_fast, rt, case, scored, vecs[0])


async def suggest_case(request: Request, case: Case, mode: str, budget: LLMBudget | None = None) -> Suggestion:
    rt: Runtime = request.app.state.runtime
    fast = await fast_suggestion(request, case)
    # The LLM chain enforces its own budget and falls back; this outer bound only guards against a hung backend.
    try:
        sug = await asyncio.wait_for(asyncio.to_thread(core.route, rt, case, fast, mode, budget), rt.settings.request_timeout_s)
    except TimeoutError:
        raise SuggestionTimeout(f"no suggestion within {rt.settings.request_timeout_s:g}s (COPILOT_REQUEST_TIMEOUT_S)") from None
    record_suggestion(sug.labels, sug.path, sug.abstained, sug.prompt_tokens, sug.completion_tokens)
    return sug


async def stream_full(request: Request, case: Case, fast: Suggestion, budget: LLMBudget | None = None) -> AsyncIterator[tuple[str, Any]]:
    """The full path as events: ("rationale", text chunk)* then ("suggestion", Suggestion); errors raise.

    The chain runs in its own worker thread (copilot.llm.chain.stream_suggestion); each wait for its next event is a
    worker-pool call abandoned on cancellation, so the event loop never blocks. When the consumer stops early (client
    gone, or past COPILOT_REQUEST_TIMEOUT_S: SuggestionTimeout), the chain is cancelled and stops at its next token.
    """
    from copilot.llm.chain import stream_suggestion  # the LLM stack loads only when streaming is used

    rt: Runtime = request.app.state.runtime
    cancel = threading.Event()
    events = stream_suggestion(rt, case, fast, cancel=cancel, budget=budget)
    deadline = time.monotonic() + rt.settings.request_timeout_s
    try:
        while True:
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    item = await anyio.to_thread.run_sync(next, events, None, abandon_on_cancel=True)
            except TimeoutError:
                raise SuggestionTimeout(f"no suggestion within {rt.settings.request_timeout_s:g}s (COPILOT_REQUEST_TIMEOUT_S)") from None
            if item is None:  # pragma: no cover - the chain's stream always ends with a suggestion or raises
                raise RuntimeError("the LLM stream ended without a suggestion")
            kind, value = item
            if kind == "suggestion":
                record_suggestion(value.labels, value.path, value.abstained, value.prompt_tokens, value.completion_tokens)
            yield kind, value
            if kind == "suggestion":
                return
    finally:
        cancel.set()
