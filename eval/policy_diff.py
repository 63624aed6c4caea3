"""Policy-change regression: the effect of a corpus edit on suggestions, before it ships.

Runs the same cases (a dataset and/or the decided cases in the database) under the old and the new corpus and lists
every case whose suggested labels or citations change, with the moderator's decision where there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from copilot.config import Settings
from copilot.runtime import Runtime
from copilot.schema import Case
from copilot.store import cases as repo
from copilot.store.models import CaseRow
from copilot.suggest import suggest_fast


def _runtime(base: Settings, corpus_dir: Path, tag: str) -> Runtime:
    # A separate index folder per corpus, so the two runs never rebuild each other's index.
    s = base.model_copy(update={"corpus_dir": corpus_dir})
    rt = Runtime(s)
    object.__setattr__(s, "data_dir", base.data_dir / "policy-diff" / tag)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    rt.settings = s
    return rt


def policy_diff(settings: Settings, old_dir: Path, new_dir: Path, texts: list[tuple[str, str]], stored: bool = True,
                limit: int | None = None) -> dict[str, Any]:
    old, new = _runtime(settings, old_dir, "old"), _runtime(settings, new_dir, "new")
    # Both runtimes share one database (the deployment's) for the stored decisions.
    items: list[tuple[str, Case, dict[str, Any] | None]] = [(i, Case.from_text(t), None) for i, t in texts]
    if stored:
        db = old.database
        new._values["database"] = db
        with db.session() as s:
            q = select(CaseRow).where(CaseRow.status == "decided").order_by(CaseRow.id)
            for row in s.scalars(q.limit(limit) if limit else q):
                ds = repo.decisions(s, row.id)
                items.append((f"case-{row.id}", repo.to_case(row), {"labels": ds[-1].labels, "action": ds[-1].action} if ds else None))
    changed = []
    for ident, case, decision in items:
        a, b = suggest_fast(old, case), suggest_fast(new, case)
        ca, cb = [c.clause_id for c in a.citations], [c.clause_id for c in b.citations]
        if sorted(a.labels) != sorted(b.labels) or ca != cb or a.abstained != b.abstained:
            changed.append({"id": ident, "text": case.text()[:160], "labels_old": a.labels, "labels_new": b.labels, "citations_old": ca,
                            "citations_new": cb, "abstained_old": a.abstained, "abstained_new": b.abstained, "decision": decision})
    return {"old_version": old.corpus.version, "new_version": new.corpus.version, "cases": len(items), "changed": changed}


def markdown(d: dict[str, Any]) -> str:
    lines = [f"# Policy change {d['old_version']} -> {d['new_version']}: {len(d['changed'])} of {d['cases']} cases change", ""]
    for c in d["changed"]:
        dec = f"; moderator decided {c['decision']['labels']} ({c['decision']['action']})" if c["decision"] else ""
        lines.append(f"- {c['id']}: labels {c['labels_old']} -> {c['labels_new']}, citations {c['citations_old']} -> {c['citations_new']}{dec}\n  > {c['text']}")
    return "\n".join(lines) + "\n"
