"""Agreement between suggestions and moderators' decisions, from the database, for a date range.

- verdict rates (accepted / edited / overridden) overall, per moderator and per suggested label;
- Cohen's kappa per label between the suggestion (label suggested or not) and the decision (label applied or not);
- inter-moderator Cohen's kappa per label on cases with two or more decisions (first two decisions).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from copilot.store.db import Database
from copilot.store.models import DecisionRow, SuggestionRow


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """kappa = (p_o - p_e) / (1 - p_e) for two binary raters; None when undefined (no items, or p_e = 1)."""
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe == 1:
        return None
    return round((po - pe) / (1 - pe), 4)


def agreement(db: Database, labels: list[str], since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    with db.session() as s:
        q = select(DecisionRow).order_by(DecisionRow.id)
        if since:
            q = q.where(DecisionRow.created_at >= since)
        if until:
            q = q.where(DecisionRow.created_at < until)
        decisions = list(s.scalars(q))
        sug_ids = {d.suggestion_id for d in decisions if d.suggestion_id}
        sugs = {x.id: x for x in s.scalars(select(SuggestionRow).where(SuggestionRow.id.in_(sug_ids)))} if sug_ids else {}
    verdicts: Counter[str] = Counter(d.verdict for d in decisions)
    per_mod: dict[str, Counter[str]] = defaultdict(Counter)
    per_label: dict[str, Counter[str]] = defaultdict(Counter)
    pairs: dict[str, tuple[list[bool], list[bool]]] = {l: ([], []) for l in labels}
    for d in decisions:
        per_mod[d.moderator][d.verdict] += 1
        sug = sugs.get(d.suggestion_id) if d.suggestion_id else None
        if sug is None:
            continue
        for l in sug.labels or ["(none)"]:
            per_label[l][d.verdict] += 1
        for l in labels:
            pairs[l][0].append(l in sug.labels)
            pairs[l][1].append(l in d.labels)
    by_case: dict[int, list[DecisionRow]] = defaultdict(list)
    for d in decisions:
        by_case[d.case_id].append(d)
    multi = [ds[:2] for ds in by_case.values() if len(ds) >= 2]

    def rates(c: Counter[str]) -> dict[str, Any]:
        n = sum(c.values())
        return {"n": n, **{v: round(c[v] / n, 4) if n else None for v in ("accepted", "edited", "overridden")}}

    return {
        "since": since.isoformat() if since else None, "until": until.isoformat() if until else None, "decisions": len(decisions),
        "overall": rates(verdicts), "per_moderator": {m: rates(c) for m, c in sorted(per_mod.items())},
        "per_suggested_label": {l: rates(c) for l, c in sorted(per_label.items())},
        "kappa_suggestion_vs_decision": {l: cohen_kappa(*pairs[l]) for l in labels},
        "inter_moderator": {"cases": len(multi), "kappa": {l: cohen_kappa([l in a.labels for a, _ in multi], [l in b.labels for _, b in multi]) for l in labels}},
    }
