"""Character offsets in a media case's transcript / on-screen text back to the seconds they are heard or seen.

copilot/media/extract.py writes those fields as one line per timed segment, so an offset maps to its lines exactly.
When a field was edited afterwards (the lines no longer match), a quote is looked up in the lines instead."""

from __future__ import annotations

from copilot.schema import Case, EvidenceSpan, TimedLine

TIMED_FIELDS = {"transcript": "transcript_timing", "on_screen_text": "on_screen_timing"}


def timing_of(case: Case, field: str) -> list[TimedLine]:
    name = TIMED_FIELDS.get(field)
    return list(getattr(case, name)) if name else []


def seconds_for(case: Case, field: str, start: int, end: int) -> tuple[float, float] | None:
    lines = timing_of(case, field)
    if not lines:
        return None
    text = case.field_text(field)
    if text == "\n".join(line.text for line in lines):
        pos, hit = 0, []
        for line in lines:
            a, b = pos, pos + len(line.text)
            if a < max(end, start + 1) and start < b:
                hit.append(line)
            pos = b + 1
        if hit:
            return hit[0].start_s, hit[-1].end_s
    quote = text[start:end].lower().strip()
    for line in lines:
        low = line.text.lower()
        if quote and (quote[:40] in low or (low and low in quote)):
            return line.start_s, line.end_s
    return None


def with_time(case: Case, span: EvidenceSpan) -> EvidenceSpan:
    when = seconds_for(case, span.field, span.start, span.end)
    if when is not None:
        span.start_s, span.end_s = when
    return span
