"""Policy Q&A: question -> retrieved clauses -> a short answer citing clause IDs.

With an LLM configured (COPILOT_LLM_BACKEND) the answer is written by the model from the retrieved clauses (ID, title,
summary, rule; prompt copilot/llm/prompts/ask_v1.txt), decoded against a schema whose clause-ID enum holds only the
offered clauses; the citations are checked against the offered clauses (one repair call names any problem), and the
answer abstains (with the fixed NOT_COVERED text, never the model's own unchecked words) when the model says the clauses
do not cover the question. On any LLM error, timeout or still-invalid answer, the extractive answer below is returned
instead (mode "extractive", with `fallback_reason` saying what went wrong).

Without an LLM the answer is extractive: the best clauses, quoted, with their IDs.

Both paths abstain, without calling a model, when the best clause is a weak match for the question (the corpus does
not cover it), rather than quoting an unrelated rule with confidence.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from copilot.errors import CopilotError, EmptyText
from copilot.runtime import Runtime
from copilot.schema import AskAnswer, Citation, Clause, SearchHit

log = logging.getLogger(__name__)

# Dense cosine similarity of the best clause below which the question is treated as not covered by the corpus.
# Chosen on our own retrieval queries (eval/retrieval), never on public benchmarks.
ASK_MIN_SIMILARITY = 0.30
MAX_QUESTION_CHARS = 2000
NOT_COVERED = "The policy corpus does not appear to cover this question; ask the policy team."


def ask(rt: Runtime, question: str, k: int = 3) -> AskAnswer:
    question = question.strip()
    if not question:
        raise EmptyText("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        from copilot.errors import TextTooLong

        raise TextTooLong(f"question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    corpus = rt.corpus
    hits = rt.index.search(question, k=k)
    qv = rt.embedder.encode([question])[0]
    best_sim = max((float(np.dot(qv, v)) for v in rt.embedder.encode([corpus.get(h.clause_id).index_text() for h in hits[:1]])), default=0.0)
    if not hits or best_sim < ASK_MIN_SIMILARITY:
        return AskAnswer(answer=NOT_COVERED, citations=[], abstained=True, corpus_version=corpus.version)
    if rt.settings.llm_backend == "none":
        return ask_extractive(rt, hits)
    try:
        return ask_llm(rt, question, hits)
    except CopilotError as exc:  # endpoint down, timeout, model missing: its detail says which
        reason = f"LLM call failed: {exc.detail}"
    except Exception as exc:  # a backend bug must not take the answer down: the extractive answer still serves it
        log.exception("LLM answer error")
        reason = f"LLM call failed: {type(exc).__name__}: {exc}"
    log.warning("LLM answer failed, extractive answer instead: %s", reason)
    return ask_extractive(rt, hits, fallback_reason=reason)


def ask_extractive(rt: Runtime, hits: list[SearchHit], fallback_reason: str | None = None) -> AskAnswer:
    """The best clauses quoted. `fallback_reason` is why a configured LLM did not answer: the header then says the LLM
    failed rather than that there is none, but does not quote the reason (it may repeat the model's invalid output)."""
    corpus = rt.corpus
    citations, parts = [], []
    for h in hits:
        clause = corpus.get(h.clause_id)
        verdict = "allowed" if clause.kind == "allowance" else f"not allowed ({clause.action.value.replace('_', ' ')})"
        quote = clause.rule.split(". ")[0].rstrip(".") + "."
        parts.append(f"[{clause.id}] {clause.title}: {clause.summary} Verdict under this clause: {verdict}. Rule: \"{quote}\"")
        citations.append(Citation(clause_id=clause.id, title=clause.title, area=clause.area, summary=clause.summary, score=h.score, quote=quote))
    header = "extractive answer, the LLM answer failed: see fallback_reason" if fallback_reason else "extractive answer, no LLM"
    answer = f"Most relevant clauses ({header}):\n" + "\n".join(parts)
    return AskAnswer(answer=answer, citations=citations, abstained=False, mode="extractive", fallback_reason=fallback_reason,
                     corpus_version=corpus.version)


def ask_llm(rt: Runtime, question: str, hits: list[SearchHit]) -> AskAnswer:
    """The LLM answer; the extractive one (with the reason) when the answer is still invalid after one repair. Raises
    (CopilotError or a backend error) when the call itself fails."""
    from copilot.llm.checks import check_answer
    from copilot.llm.prompts import ASK_PROMPT
    from copilot.llm.render import ask_messages, ask_schema, with_repair

    corpus = rt.corpus
    llm = rt.llm
    clauses = [corpus.get(h.clause_id) for h in hits]
    offered = {c.id: c for c in clauses}
    scores = {h.clause_id: h.score for h in hits}
    messages = ask_messages(question, clauses)
    llm.warm_prefix(str(messages[0].content))
    schema = ask_schema(list(offered))
    deadline = time.monotonic() + rt.settings.llm_timeout_s
    max_tokens = rt.settings.llm_max_tokens
    res = llm.structured(messages, schema, max_tokens=max_tokens, deadline=deadline, purpose="ask")
    checked = check_answer(res.data, res.error, offered, corpus)
    if checked.errors:
        res = llm.structured(with_repair(messages, ASK_PROMPT, checked.errors), schema, max_tokens=max_tokens, deadline=deadline, purpose="ask-repair")
        checked = check_answer(res.data, res.error, offered, corpus)
        if checked.errors:
            reason = "LLM answer invalid after one repair: " + "; ".join(checked.errors[:3])
            log.warning("LLM answer failed, extractive answer instead: %s", reason)
            return ask_extractive(rt, hits, fallback_reason=reason)
    out = checked.out
    if not out.covered:  # the model's own words are unchecked when it cites nothing: say only that the corpus is silent
        return AskAnswer(answer=NOT_COVERED, citations=[], abstained=True, mode="llm", corpus_version=corpus.version)
    citations = [
        Citation(clause_id=c.id, title=c.title, area=c.area, summary=c.summary, score=scores.get(c.id)) for c in checked.clauses
    ]
    return AskAnswer(answer=with_basis(out.answer.strip(), checked.clauses), citations=citations, abstained=False, mode="llm",
                     corpus_version=corpus.version)


BARE_ANSWER_WORDS = 6  # "Yes", "No, it is not allowed.": a verdict without its reason


def with_basis(answer: str, clauses: list[Clause]) -> str:
    """A bare verdict (the default model answered "Yes" to "is quoting a slur to report it allowed?" on `make run`)
    gets the first cited clause's own summary after it: the policy's words, not the model's, so nothing is invented."""
    if not clauses or len(answer.split()) >= BARE_ANSWER_WORDS:
        return answer
    first = clauses[0]
    verdict = answer if answer.endswith((".", "!", "?")) else answer + "."
    return f"{verdict} Under {first.id} ({first.title}): {first.summary}"

