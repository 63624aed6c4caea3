"""One case in, one Suggestion out: the data flow of DESIGN.md.

Fast path: calibrated classifier scores + retrieved clauses, no LLM. Every suggested label is backed by a clause of
that label retrieved for this case; a label the classifier flags but no clause supports is not suggested, and the
suggestion abstains. Full path (LLM chain) lives in copilot/llm/chain.py and falls back to this one.

Abstention rule (fast path), in order:
1. a flagged label with no supporting prohibition clause among the area-restricted retrieval hits -> abstain;
2. any supported label whose score lies within `fast_path_margin` of its threshold -> uncertain -> abstain
   (the router sends such cases to the full path when an LLM is configured);
3. retrieval ranks a prohibition clause of a label the classifier does not support first, with a strong dense
   match -> abstain, so a human (or the LLM) judges that label;
4. the case's language (given, or detected from media speech) is not English -> abstain (the router then keeps the
   fast suggestion in auto mode: the full path would escalate it too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from copilot.errors import ComponentMissing
from copilot.evidence import locate as locate_evidence
from copilot.runtime import Runtime
from copilot.schema import ACTION_SEVERITY, Action, Case, Citation, LabelScore, LLMBudget, SearchHit, Suggestion, primary_language
from copilot.validate import validate_case

log = logging.getLogger(__name__)

# Languages the classifier and the retrieval model were trained on. A case declared (or, for media, heard) in another
# language is escalated: the scores on it mean little, and a confident-looking fast suggestion would mislead.
SUPPORTED_LANGUAGES = {"en"}
# Dense cosine similarity above which a retrieved clause of an unsupported label is a strong enough signal to escalate.
UNSUPPORTED_ESCALATE_SIM = 0.55


def language_reason(case: Case) -> str | None:
    """Why a case must go to a human on language grounds (both paths use it), or None."""
    lang = primary_language(case.language)
    if lang and lang not in SUPPORTED_LANGUAGES:
        return f"the case is in '{case.language}' and the classifier and policy index are English-only: a human should review it"
    return None


@dataclass
class Scored:
    scores: list[LabelScore]
    flagged: list[str]
    uncertain: list[str]


def score_case(rt: Runtime, texts: list[str]) -> list[Scored]:
    clf = rt.classifier
    probs = clf.predict_proba(texts)
    return [_scored(rt, row) for row in probs]


def _scored(rt: Runtime, row: np.ndarray) -> Scored:
    clf = rt.classifier
    margin = rt.settings.fast_path_margin
    scores, flagged, uncertain = [], [], []
    by_label = dict(zip(clf.labels, row, strict=True))
    for label in rt.corpus.taxonomy.label_names:
        if label in by_label:
            p, thr = float(by_label[label]), clf.thresholds[label]
            is_flagged = p >= thr
            scores.append(LabelScore(label=label, score=round(p, 4), threshold=round(thr, 4), flagged=is_flagged))
            if is_flagged:
                flagged.append(label)
            if abs(p - thr) < margin and max(p, thr) > 0.05:
                uncertain.append(label)
        else:
            scores.append(LabelScore(label=label, score=0.0, threshold=None, flagged=False, supported=False))
    return Scored(scores, flagged, uncertain)


def _cite(hit: SearchHit, rt: Runtime) -> Citation:
    clause = rt.corpus.get(hit.clause_id)
    return Citation(clause_id=clause.id, title=clause.title, area=clause.area, summary=clause.summary, score=hit.score)


def suggest_fast(rt: Runtime, case: Case, scored: Scored | None = None, query_vec: np.ndarray | None = None) -> Suggestion:
    """The fast path. `scored` and `query_vec` may come precomputed (the service batches both across requests)."""
    t0 = time.perf_counter()
    validate_case(case, rt.settings)
    text = case.text()
    if scored is None:
        scored = score_case(rt, [text])[0]
    index = rt.index
    taxonomy = rt.corpus.taxonomy
    qv = query_vec if query_vec is not None else index.embedder.encode([text])[0]  # embedded once, used by every search below
    hits = index.search(text, k=rt.settings.retrieval_k, query_vec=qv)
    labels: list[str] = []
    citations: dict[str, Citation] = {}
    reasons: list[str] = []
    abstain: list[str] = []
    for label in scored.flagged:
        area = taxonomy.labels[label].area
        candidates = [h for h in hits if label in h.labels and h.kind == "prohibition"]
        if not candidates:
            candidates = [h for h in index.search(text, k=10, areas={area}, query_vec=qv) if label in h.labels and h.kind == "prohibition"]
        if not candidates:
            abstain.append(f"{label} scored above threshold but no clause of that label matches this case")
            continue
        best = candidates[0]
        labels.append(label)
        citations.setdefault(best.clause_id, _cite(best, rt))
        score = next(s for s in scored.scores if s.label == label)
        reasons.append(f"{label} {score.score:.2f} (threshold {score.threshold:.2f}) -> {best.clause_id} {best.title}")
        allowance = next((h for h in hits if h.kind == "allowance" and h.area == area), None)
        if allowance is not None and (best not in hits or hits.index(allowance) < hits.index(best)):
            abstain.append(f"allowance clause {allowance.clause_id} ({allowance.title}) ranks above {best.clause_id}: a human should check the exception")
    if scored.uncertain:
        abstain.append("score close to threshold for " + ", ".join(scored.uncertain))
    if (reason := language_reason(case)) is not None:
        abstain.append(reason)
    supported = {s.label for s in scored.scores if s.supported}
    if hits:
        top = hits[0]
        unsupported = [l for l in top.labels if l not in supported]
        if top.kind == "prohibition" and unsupported:
            sim = float(np.dot(qv, index.clause_vectors[top.clause_id]))
            if sim >= UNSUPPORTED_ESCALATE_SIM:
                abstain.append(f"retrieval matches {top.clause_id} ({', '.join(unsupported)}), a label the classifier does not cover (similarity {sim:.2f})")
                citations.setdefault(top.clause_id, _cite(top, rt))
    action = _strictest([rt.corpus.get(c).action for c in citations if rt.corpus.get(c).kind == "prohibition" and set(rt.corpus.get(c).labels) & set(labels)])
    if abstain:
        action = Action.escalate
    evidence = locate_evidence(rt.classifier, case, labels, scored.scores) if labels and (case.transcript_timing or case.on_screen_timing) else []
    for span in evidence:
        reasons.append(f"{span.label} shown at {span.start_s:.1f}-{span.end_s:.1f} s: \"{span.quote[:80]}\"")
    rationale = "; ".join(reasons) if reasons else "No label scored above its threshold."
    if abstain:
        rationale += ". Escalated: " + "; ".join(abstain)
    return Suggestion(
        labels=labels, scores=scored.scores, citations=list(citations.values()), rationale=rationale, action=action, evidence=evidence,
        abstained=bool(abstain), abstain_reason="; ".join(abstain) or None, path="fast",
        corpus_version=rt.corpus.version, model_ids=rt.model_ids(), latency_ms=round((time.perf_counter() - t0) * 1000, 2),
    )


def _strictest(actions: list[Action]) -> Action:
    if not actions:
        return Action.no_action
    return min(actions, key=ACTION_SEVERITY.index)


def route(rt: Runtime, case: Case, fast: Suggestion, mode: str, budget: LLMBudget | None = None) -> Suggestion:
    """Given the fast suggestion, decide the path: keep it when fast is asked for or it is confident (auto); otherwise
    run the LLM chain, or say why the fast suggestion stands when no LLM is configured."""
    if mode == "fast" or (mode == "auto" and not fast.abstained):
        return fast
    if mode == "auto" and language_reason(case) is not None:  # escalated whatever the LLM says: do not spend ~6 s on it
        return fast
    if rt.settings.llm_backend == "none":
        if mode == "full":
            fast.fallback_reason = "no LLM configured (COPILOT_LLM_BACKEND=none)"
        return fast
    try:
        from copilot.llm.chain import suggest_full
    except ImportError as exc:  # pragma: no cover - the chain module is part of the package
        raise ComponentMissing(f"llm chain: {exc}") from exc
    return suggest_full(rt, case, fast, budget)


def suggest(rt: Runtime, case: Case, mode: str = "auto", budget: LLMBudget | None = None) -> Suggestion:
    """Route a case: fast path when confident, the LLM chain when uncertain (auto) or asked for (full); ``budget``
    narrows what the LLM chain may spend on it."""
    validate_case(case, rt.settings)
    return route(rt, case, suggest_fast(rt, case), mode, budget)
