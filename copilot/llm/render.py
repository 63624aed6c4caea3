"""Rendering the suggestion and Q&A prompts, and the JSON schemas the model's answers are decoded against.

Prompt layout, for KV reuse on local models: the system message is fixed for a corpus version (instructions and the
label list, marking the labels the classifier does not score), then the user message holds what changes per case,
the case last. Clauses are given as ID, the labels they prohibit or allow and the title (about 15 tokens; the summary
would add 40, the whole clause 200): every prompt token is paid before the first word of the rationale streams.
The case is untrusted data: it is fenced in <case> ... </case>, and anything in it that looks like that fence is
defused, so a case cannot close the block and speak as the system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from copilot.llm.prompts import ASK_PROMPT, SUGGEST_PROMPT, load_prompt
from copilot.policy.corpus import Corpus
from copilot.schema import Action, Case, Clause, LabelScore
from copilot.taxonomy import Taxonomy

# Case text beyond this many characters is cut from the prompt (quotes are still checked against the whole case).
CASE_CHARS_IN_PROMPT = 3000
QUESTION_CHARS_IN_PROMPT = 2000
# Classifier scores below this are left out of the prompt unless flagged.
SCORE_FLOOR_IN_PROMPT = 0.05
# Output limits (they bound the completion tokens: about 50 to 80 per answer).
REASONING_MAX_CHARS = 120
EVIDENCE_MAX_ITEMS = 2
EVIDENCE_MAX_CHARS = 60
LABELS_MAX_ITEMS = 4
CLAUSES_MAX_ITEMS = 2
ASK_CLAUSES_MAX_ITEMS = 3
ANSWER_MAX_CHARS = 400

_FENCE = re.compile(r"<\s*/?\s*(case|question)\b[^>]*>", re.I)


def tidy_cut(text: str, limit: int = REASONING_MAX_CHARS) -> str:
    """A reasoning the grammar's maxLength cut mid-sentence ("The content is factual and", seen on `make run`) ends
    at its last full sentence when that keeps most of it, else with an ellipsis: a moderator must see it was cut."""
    text = text.strip()
    if len(text) < limit - 1 or text.endswith((".", "!", "?")):
        return text
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    if end >= 0.4 * len(text):
        return text[: end + 1]
    return text.rstrip(" ,;:-") + "…"


def defuse(text: str) -> str:
    """Neutralise anything that looks like the data fences, so untrusted text cannot close its block."""
    return _FENCE.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)


def _label_lines(taxonomy: Taxonomy, unsupported: Sequence[str]) -> str:
    lines = []
    for name, label in taxonomy.labels.items():
        note = " (no classifier score: judge it from the clauses alone)" if name in unsupported else ""
        lines.append(f"- {name}: {label.description}{note}")
    return "\n".join(lines)


@lru_cache(maxsize=8)
def _system_cached(name: str, version: str, labels_block: str) -> str:  # version: an edited prompt file misses the cache
    return load_prompt(name).render("system", labels=labels_block)


def two_turn(prompt_name: str = SUGGEST_PROMPT) -> bool:
    """A prompt with a ``decide`` section asks for a description of the case alone (turn 1), then sends the candidate
    clauses and scores (turn 2, the whole answer with its own short reasoning): the rationale starts streaming after
    ~60 per-case prompt tokens instead of ~180."""
    return "decide" in load_prompt(prompt_name).sections


def unsupported_labels(scores: Sequence[LabelScore]) -> list[str]:
    return [s.label for s in scores if not s.supported]


def suggest_system_text(corpus: Corpus, unsupported: Sequence[str] = (), prompt_name: str = SUGGEST_PROMPT) -> str:
    """The fixed system message for this corpus version and classifier (which labels it does not score): the
    KV-cached prefix of every suggestion prompt."""
    return _system_cached(prompt_name, load_prompt(prompt_name).version, _label_lines(corpus.taxonomy, unsupported))


def clause_line(clause: Clause, detail: str = "summary") -> str:
    """One offered clause: ID, what it prohibits or allows, title, then the summary (or the whole rule for Q&A)."""
    verb = "prohibits" if clause.kind == "prohibition" else "allows"
    line = f"- {clause.id} ({verb} {', '.join(clause.labels)}) {clause.title.rstrip('.')}."
    if detail in ("summary", "rule"):
        line += f" {clause.summary}"
    if detail == "rule":
        line += f" Rule: {clause.rule}"
    return line


def scores_line(scores: Sequence[LabelScore]) -> str:
    shown = [s for s in scores if s.supported and (s.score >= SCORE_FLOOR_IN_PROMPT or s.flagged)]
    shown.sort(key=lambda s: -s.score)
    return ", ".join(f"{s.label} {s.score:.2f}{'*' if s.flagged else ''}" for s in shown) or f"no label above {SCORE_FLOOR_IN_PROMPT}"


def case_block(case: Case, limit: int = CASE_CHARS_IN_PROMPT) -> str:
    parts, used = [], 0
    segments = case.segments()
    for name, text in segments:
        room = limit - used
        if room <= 0:
            parts.append("[further fields cut]")
            break
        if len(text) > room:
            text = text[:room] + " [cut]"
        used += len(text)
        parts.append(text if len(segments) == 1 else f"[{name}] {text}")
    return defuse("\n".join(parts))


def suggest_messages(
    corpus: Corpus, case: Case, scores: Sequence[LabelScore], clauses: Sequence[Clause], prompt_name: str = SUGGEST_PROMPT,
) -> list[BaseMessage]:
    """The first call's messages: for a two-turn prompt the case alone (`decide_message` brings the rest later)."""
    prompt = load_prompt(prompt_name)
    values = {"content_type": case.content_type.value, "case": case_block(case)}
    if not two_turn(prompt_name):
        values.update(clauses="\n".join(clause_line(c, "title") for c in clauses), scores=scores_line(scores))
    user = prompt.render("user", **values)
    return [SystemMessage(suggest_system_text(corpus, unsupported_labels(scores), prompt_name)), HumanMessage(user)]


def decide_message(scores: Sequence[LabelScore], clauses: Sequence[Clause], prompt_name: str) -> HumanMessage:
    """Turn 2 of a two-turn prompt: the candidate clauses and the classifier's scores."""
    return HumanMessage(load_prompt(prompt_name).render(
        "decide", clauses="\n".join(clause_line(c, "title") for c in clauses), scores=scores_line(scores)))


def with_repair(messages: Sequence[BaseMessage], prompt_name: str, errors: Sequence[str]) -> list[BaseMessage]:
    """The repair call: the same prompt with the errors appended to the user message. The first answer is not shown
    again: under greedy decoding a small model shown its own answer tends to copy it. The system prefix (and its KV
    state) is unchanged."""
    note = load_prompt(prompt_name).render("repair", errors="\n".join(f"- {e}" for e in errors))
    *head, last = messages
    return [*head, HumanMessage(f"{last.content}\n\n{note}")]


def reasoning_schema() -> dict[str, Any]:
    """Turn 1 of a two-turn prompt: the description of the case alone."""
    return {
        "title": "case_description", "description": "Who says what to whom and how it is meant, from the case alone.", "type": "object",
        "properties": {"reasoning": {"type": "string", "maxLength": REASONING_MAX_CHARS}},
        "required": ["reasoning"], "additionalProperties": False,
    }


def suggestion_schema(taxonomy: Taxonomy, clause_ids: Sequence[str], case: Case | None = None) -> dict[str, Any]:
    """The answer's shape. Enums hold the labels, the actions and only the clause IDs offered in this prompt, so a
    constrained local model cannot even write another ID; with ``case``, evidence items carry ``x-substring-of`` (the
    case's field texts as shown in the prompt) so a local model can only quote the case. Remote models are checked
    after the fact."""
    clause_items: dict[str, Any] = {"type": "string", "enum": list(clause_ids)} if clause_ids else {"type": "string"}
    evidence_items: dict[str, Any] = {"type": "string", "maxLength": EVIDENCE_MAX_CHARS}
    if case is not None:
        evidence_items = {**evidence_items, "x-substring-of": [text[:CASE_CHARS_IN_PROMPT] for _, text in case.segments()]}
    return {
        "title": "moderation_suggestion",
        "description": "The suggestion for one case: reasoning first, then labels, cited clause IDs, evidence quotes, action, abstain.",
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": REASONING_MAX_CHARS},
            "labels": {"type": "array", "items": {"type": "string", "enum": list(taxonomy.labels)}, "maxItems": LABELS_MAX_ITEMS},
            "clause_ids": {"type": "array", "items": clause_items, "maxItems": CLAUSES_MAX_ITEMS if clause_ids else 0},
            "evidence": {"type": "array", "items": evidence_items, "maxItems": EVIDENCE_MAX_ITEMS},
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "abstain": {"type": "boolean"},
        },
        "required": ["reasoning", "labels", "clause_ids", "evidence", "action", "abstain"],
        "additionalProperties": False,
    }


def ask_messages(question: str, clauses: Sequence[Clause]) -> list[BaseMessage]:
    prompt = load_prompt(ASK_PROMPT)
    user = prompt.render(
        "user", clauses="\n".join(clause_line(c, "rule") for c in clauses),
        question=defuse(question[:QUESTION_CHARS_IN_PROMPT]),
    )
    return [SystemMessage(prompt.render("system")), HumanMessage(user)]


def ask_schema(clause_ids: Sequence[str]) -> dict[str, Any]:
    clause_items: dict[str, Any] = {"type": "string", "enum": list(clause_ids)} if clause_ids else {"type": "string"}
    return {
        "title": "policy_answer",
        "description": "A short answer to a policy question, the clause IDs it relies on, and whether the clauses cover it.",
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": ANSWER_MAX_CHARS},
            "clause_ids": {"type": "array", "items": clause_items, "maxItems": ASK_CLAUSES_MAX_ITEMS if clause_ids else 0},
            "covered": {"type": "boolean"},
        },
        "required": ["answer", "clause_ids", "covered"],
        "additionalProperties": False,
    }
