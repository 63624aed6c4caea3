"""Checks every case passes before any model sees it; each failure is a typed error with a precise message."""

from __future__ import annotations

import unicodedata

from copilot.config import Settings
from copilot.errors import EmptyText, InvalidInput, TextTooLong
from copilot.schema import Case

# More than this share of control / unassigned characters means the "text" is binary data pasted as a string.
MAX_CONTROL_SHARE = 0.1


def validate_case(case: Case, settings: Settings) -> Case:
    text = case.text()
    if not text.strip():
        raise EmptyText("the case has no text in title, caption, transcript, on_screen_text or comments")
    if len(text) > settings.max_text_chars and not settings.window_long_text:
        raise TextTooLong(
            f"case text is {len(text)} characters; the limit is {settings.max_text_chars} (COPILOT_MAX_TEXT_CHARS)",
            length=len(text), limit=settings.max_text_chars,
        )
    bad = sum(1 for ch in text if unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs") and ch not in "\n\r\t")
    if bad > MAX_CONTROL_SHARE * len(text):
        raise InvalidInput(f"case text looks like binary data ({bad} of {len(text)} characters are control or unassigned code points)")
    return case
