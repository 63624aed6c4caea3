"""Policy Q&A. Without an LLM the answer is extractive: the best clauses, quoted, with their IDs.

Abstains when the best clause is a weak match for the question (the corpus does not cover it), rather than quoting an
unrelated rule with confidence.
"""

from __future__ import annotations

import numpy as np

from copilot.errors import EmptyText
from copilot.runtime import Runtime
from copilot.schema import AskAnswer, Citation

# Dense cosine similarity of the best clause below which the question is treated as not covered by the corpus.
# Chosen on our own retrieval queries (eval/retrieval), never on public benchmarks.
ASK_MIN_SIMILARITY = 0.30
MAX_QUESTION_CHARS = 2000


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
        return AskAnswer(
            answer="The policy corpus does not appear to cover this question; ask the policy team.",
            citations=[], abstained=True, corpus_version=corpus.version,
        )
    citations, parts = [], []
    for h in hits:
        clause = corpus.get(h.clause_id)
        verdict = "allowed" if clause.kind == "allowance" else f"not allowed ({clause.action.value.replace('_', ' ')})"
        quote = clause.rule.split(". ")[0].rstrip(".") + "."
        parts.append(f"[{clause.id}] {clause.title}: {clause.summary} Verdict under this clause: {verdict}. Rule: \"{quote}\"")
        citations.append(Citation(clause_id=clause.id, title=clause.title, area=clause.area, summary=clause.summary, score=h.score, quote=quote))
    answer = "Most relevant clauses (extractive answer, no LLM):\n" + "\n".join(parts)
    return AskAnswer(answer=answer, citations=citations, abstained=False, mode="extractive", corpus_version=corpus.version)
