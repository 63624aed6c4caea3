"""Async glue between routes and the core: shared classifier passes (micro-batcher), model work off the event loop."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import Request

from api.metrics import record_suggestion
from copilot import suggest as core
from copilot.classifier.batcher import MicroBatcher
from copilot.runtime import Runtime
from copilot.schema import Case, Suggestion
from copilot.validate import validate_case


def batcher(request: Request) -> MicroBatcher:
    app = request.app
    if getattr(app.state, "batcher", None) is None:
        rt: Runtime = app.state.runtime
        app.state.batcher = MicroBatcher(lambda texts: rt.classifier.predict_proba(texts), rt.settings.microbatch_max, rt.settings.microbatch_wait_ms)
    return app.state.batcher  # type: ignore[no-any-return]


async def score_texts(request: Request, texts: list[str]) -> np.ndarray:
    rt: Runtime = request.app.state.runtime
    await asyncio.to_thread(lambda: rt.classifier)  # load (or raise ComponentMissing) outside the loop
    return await batcher(request).score(texts)


async def suggest_case(request: Request, case: Case, mode: str) -> Suggestion:
    rt: Runtime = request.app.state.runtime
    validate_case(case, rt.settings)
    probs = await score_texts(request, [case.text()])
    scored = core._scored(rt, probs[0])
    fast = await asyncio.to_thread(core.suggest_fast, rt, case, scored)
    # The LLM chain enforces its own budget and falls back; this outer bound only guards against a hung backend.
    sug = await asyncio.wait_for(asyncio.to_thread(core.route, rt, case, fast, mode), rt.settings.request_timeout_s)
    record_suggestion(sug.labels, sug.path, sug.abstained, sug.prompt_tokens, sug.completion_tokens)
    return sug
