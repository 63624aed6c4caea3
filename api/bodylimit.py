"""Request-body limits enforced on the bytes as they arrive, not only on Content-Length: a chunked upload has no length
header, and Starlette would otherwise spool all of it to disk before any handler could refuse it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from api.errors import PROBLEM_BASE
from copilot.logging_setup import request_id_var

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MEDIA_PATHS = ("/v1/cases", "/v1/cases/media")


class BodyLimit:
    def __init__(self, app: Any, text_limit: int, media_limit: int) -> None:
        self.app, self.text_limit, self.media_limit = app, text_limit, media_limit

    def limit_for(self, scope: Scope) -> int:
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        return self.media_limit if multipart and scope["path"] in MEDIA_PATHS else self.text_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await _problem(send, scope, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the 413 has gone out; whatever the app answers after the disconnect is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _problem(send: Send, scope: Scope, limit: int) -> None:
    body = json.dumps({"type": PROBLEM_BASE + "payload_too_large", "title": "Payload too large", "status": 413,
                       "detail": f"the request body passed the limit of {limit} bytes while it was being received",
                       "instance": scope["path"], "code": "payload_too_large", "request_id": request_id_var.get()}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
