"""Every error leaves as RFC 9457 problem details (application/problem+json) with a stable code and the request id."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from copilot.errors import Conflict, CopilotError
from copilot.logging_setup import request_id_var

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://moderation-copilot.local/problems/"


class LLMNotConfigured(Conflict):
    """The service runs without an LLM on purpose (COPILOT_LLM_BACKEND=none): an LLM-only operation conflicts with that
    configuration. 409, not 503: retrying will not help (readiness reports the LLM as not_configured, not missing)."""

    code, title = "llm_not_configured", "No LLM configured"


class SuggestionTimeout(CopilotError):
    """The suggestion (streamed or not) did not finish within COPILOT_REQUEST_TIMEOUT_S: 504, the caller may retry."""

    code, status, title, safe = "timeout", 504, "Timed out", True


def problem_body(status: int, code: str, title: str, detail: str, request: Request, **extra: Any) -> dict[str, Any]:
    return {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail, "instance": request.url.path,
            "code": code, "request_id": request_id_var.get(), **extra}


def problem(status: int, code: str, title: str, detail: str, request: Request, **extra: Any) -> JSONResponse:
    body = problem_body(status, code, title, detail, request, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def problem_of(exc: Exception, request: Request) -> dict[str, Any]:
    """The problem-details body for an error, as the handlers below would send it (for errors inside a stream, after
    the status line has gone out)."""
    if isinstance(exc, CopilotError):
        if exc.status >= 500 and not exc.safe:
            log.error("internal error: %s", exc.detail)
        detail = exc.detail if exc.safe else "internal error; see the server log with this request id"
        extra = {k: v for k, v in exc.extra.items() if isinstance(v, (str, int, float, list, dict, type(None)))} if exc.safe else {}
        return problem_body(exc.status, exc.code, exc.title, detail, request, **extra)
    log.error("unhandled error", exc_info=exc)
    return problem_body(500, "internal_error", "Internal error", "internal error; see the server log with this request id", request)


def install(app: FastAPI) -> None:
    @app.exception_handler(CopilotError)
    async def _copilot(request: Request, exc: CopilotError) -> JSONResponse:
        body = problem_of(exc, request)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body, status_code=exc.status, media_type="application/problem+json", headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "malformed_json", "Malformed JSON", "the request body is not valid JSON: " + errors[0]["msg"], request, errors=errors)
        first = errors[0] if errors else {"loc": [], "msg": ""}
        where = ".".join(str(x) for x in first["loc"])
        return problem(422, "validation_error", "Request validation failed", f"{where}: {first['msg']}", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's message for a body that is not UTF-8 (json.loads on bytes raises UnicodeDecodeError)
            return problem(400, "malformed_json", "Malformed JSON", "the request body is not valid UTF-8 JSON", request)
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        return problem(exc.status_code, code, code.replace("_", " ").capitalize(), str(exc.detail), request)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "internal_error", "Internal error", "internal error; see the server log with this request id", request)
