"""Evidence for the fast path of media cases: which transcript segment or on-screen line shows each suggested label.

Each timed line is scored on its own by the classifier (one batch: a short clip has a few dozen lines at most) and the
line scoring highest for a label becomes that label's evidence, with the seconds it is heard or seen, so a moderator
jumps to the moment instead of scrubbing. A line is offered only when it carries a real share of the case's score
(MIN_SHARE): otherwise the label comes from context spread over the clip, and pointing at one line would mislead.
Text cases get their evidence from the LLM chain (copilot/llm/checks.py); scoring every sentence of every text case
would double the fast path's model time for a benefit media cases need most.
"""

from __future__ import annotations

from copilot.schema import Case, EvidenceSpan, LabelScore
from copilot.timecode import TIMED_FIELDS, timing_of

MIN_SHARE = 0.5
MAX_LINES = 256


def timed_lines(case: Case) -> list[tuple[str, int, int, str, float, float]]:
    """(field, start, end, text, start_s, end_s) of every timed line whose text is where the timing says it is."""
    out = []
    for field in TIMED_FIELDS:
        lines = timing_of(case, field)
        text = case.field_text(field)
        if not lines or text != "\n".join(line.text for line in lines):
            continue
        pos = 0
        for line in lines:
            if line.text.strip():
                out.append((field, pos, pos + len(line.text), line.text, line.start_s, line.end_s))
            pos += len(line.text) + 1
    return out[:MAX_LINES]


def locate(classifier, case: Case, labels: list[str], scores: list[LabelScore]) -> list[EvidenceSpan]:  # type: ignore[no-untyped-def]
    lines = timed_lines(case)
    supported = [lab for lab in labels if lab in classifier.labels]
    if not lines or not supported:
        return []
    probs = classifier.predict_proba([line[3] for line in lines])
    case_score = {s.label: s.score for s in scores}
    spans: list[EvidenceSpan] = []
    for label in supported:
        col = classifier.labels.index(label)
        best = int(probs[:, col].argmax())
        if float(probs[best, col]) < MIN_SHARE * case_score.get(label, 1.0):
            continue
        field, start, end, text, t0, t1 = lines[best]
        spans.append(EvidenceSpan(field=field, start=start, end=end, quote=text, label=label, start_s=t0, end_s=t1))
    return spans
