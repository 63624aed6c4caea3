"""The FastAPI application: routers, problem-details errors, request ids, metrics, the static console."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import errors
from api.bodylimit import BodyLimit
from api.metrics import REQUEST_LATENCY
from api.routers import cases, eval_runs, health, media, moderations, policy
from copilot import __version__
from copilot.config import Settings, get_settings
from copilot.logging_setup import request_id_var, setup_logging
from copilot.runtime import Runtime

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# Request bodies above this many bytes are refused before parsing (the per-text limit is checked after parsing).
BODY_OVERHEAD = 64 * 1024


def bootstrap_admin(rt: Runtime) -> None:
    key = rt.settings.bootstrap_admin_key
    if key is None:
        return
    from copilot.store import keys

    with rt.database.session() as s:
        if keys.count_keys(s) == 0:
            keys.create_key(s, "admin", "bootstrap-admin", actor="bootstrap", key=key.get_secret_value())
            log.info("created bootstrap admin key")


def create_app(settings: Settings | None = None, runtime: Runtime | None = None, warm: bool = True) -> FastAPI:
    settings = settings or get_settings()
    rt = runtime or Runtime(settings)
    setup_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            rt.database  # noqa: B018 - migrations run here, before the first request
            bootstrap_admin(rt)
        except Exception:
            log.exception("database not ready")
        if warm:
            threading.Thread(target=rt.warm_up, name="warm-up", daemon=True).start()
        if settings.media_enabled:
            from copilot.media.jobs import MediaWorker

            app.state.media_worker = MediaWorker(rt)
            try:
                app.state.media_worker.resume()  # cases left processing by the previous run
            except Exception:
                log.exception("could not resume media cases")
        yield
        if app.state.media_worker is not None:
            app.state.media_worker.shutdown()
        for name in ("batcher", "embed_batcher"):
            if getattr(app.state, name, None) is not None:
                await getattr(app.state, name).close()

    app = FastAPI(title="Moderation Copilot", version=__version__, lifespan=lifespan,
                  description="Suggestions with cited policy clauses for moderators; policy search and Q&A; OpenAI-compatible moderation.")
    app.state.runtime = rt
    app.state.batcher = None
    app.state.embed_batcher = None
    app.state.media_worker = None
    errors.install(app)
    max_body = settings.max_text_chars * 4 * settings.max_batch + BODY_OVERHEAD
    max_media_body = settings.media_max_bytes + BODY_OVERHEAD

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # type: ignore[no-untyped-def]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        try:
            multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
            if multipart and request.method == "POST" and request.scope["path"] == "/v1/cases":
                request.scope["path"] = "/v1/cases/media"  # one ingestion URL for JSON cases and media uploads
            # the media limit only where media is uploaded; every other route keeps the text-sized one
            limit = max_media_body if multipart and request.scope["path"] == "/v1/cases/media" else max_body
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limit:
                response: Response = errors.problem(413, "payload_too_large", "Payload too large",
                                                    f"request body is {length} bytes; the limit is {limit}", request)
            else:
                response = await call_next(request)
            route = request.scope.get("route")
            REQUEST_LATENCY.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).observe(time.perf_counter() - t0)
            response.headers["X-Request-ID"] = rid
            log.info("%s %s -> %d in %.1f ms", request.method, request.url.path, response.status_code, (time.perf_counter() - t0) * 1000)
            return response
        finally:
            request_id_var.reset(token)

    # outermost: counts body bytes as they arrive (chunked uploads carry no Content-Length for the check above)
    app.add_middleware(BodyLimit, text_limit=max_body, media_limit=max_media_body)
    app.include_router(health.router)
    app.include_router(policy.router)
    app.include_router(cases.router)
    app.include_router(media.router)
    app.include_router(moderations.router)
    app.include_router(eval_runs.router)
    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def console() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    return app
