"""Domain errors. Each carries a stable code and an HTTP status; api/errors.py maps them to RFC 9457 problem details.

`safe` says whether `detail` may be shown to an API client as is (it never contains secrets or stack traces).
"""

from __future__ import annotations

from typing import Any, ClassVar


class CopilotError(Exception):
    code: ClassVar[str] = "copilot_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    safe: ClassVar[bool] = False

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(CopilotError):
    code, status, title, safe = "invalid_input", 422, "Invalid input", True


class EmptyText(InvalidInput):
    code, title = "empty_text", "Case has no text"


class TextTooLong(CopilotError):
    code, status, title, safe = "text_too_long", 413, "Text too long", True


class BatchTooLarge(CopilotError):
    code, status, title, safe = "batch_too_large", 413, "Batch too large", True


class UnknownLabel(InvalidInput):
    code, title = "unknown_label", "Unknown label"


class UnknownArea(InvalidInput):
    code, title = "unknown_area", "Unknown policy area"


class UnknownClause(InvalidInput):
    code, title = "unknown_clause", "Unknown clause"


class NotFound(CopilotError):
    code, status, title, safe = "not_found", 404, "Not found", True


class Conflict(CopilotError):
    code, status, title, safe = "conflict", 409, "Conflict", True


class Unauthorized(CopilotError):
    code, status, title, safe = "unauthorized", 401, "Missing or invalid API key", True


class Forbidden(CopilotError):
    code, status, title, safe = "forbidden", 403, "Role not allowed", True


class ComponentMissing(CopilotError):
    """A capability that is not built or not configured: never faked, reported with what is missing."""

    code, status, title, safe = "component_missing", 503, "Component not available", True


class CorpusError(CopilotError):
    """The policy corpus is malformed; `errors` lists every problem as 'file:line: message'."""

    code, status, title, safe = "corpus_invalid", 500, "Policy corpus invalid", True

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the policy corpus:\n" + "\n".join(errors), errors=errors)
        self.errors = errors


class UnsupportedMedia(CopilotError):
    """Not audio or video we can decode: not a media file, no audio/video stream, an unknown codec, an empty file."""

    code, status, title, safe = "unsupported_media", 415, "Unsupported media", True


class CorruptMedia(InvalidInput):
    code, title = "corrupt_media", "Media could not be decoded"


class MediaTooLarge(CopilotError):
    code, status, title, safe = "media_too_large", 413, "Media too large or too long", True


class MediaTimeout(InvalidInput):
    """A decoder child ran past its time limit on this file (the file, not the service, is the problem)."""

    code, title = "media_timeout", "Media processing timed out"


class NoMediaText(InvalidInput):
    code, title = "no_media_text", "No speech or on-screen text found"
