"""Validation of the model's answers. Each problem is one sentence written for the model: the repair call sends them
back verbatim, and the fallback reason quotes them.

Suggestion answers:
- every label must be a taxonomy label, and the action one of the actions;
- every cited clause ID must have been offered in this prompt (which also makes case text unable to introduce an ID)
  and exist in the current corpus version;
- a cited prohibition clause must belong to the area of a suggested label. A real, offered clause cited outside those
  areas cannot back any suggested label: it is dropped from the citations (noted in the rationale) rather than
  costing a repair call, which small models under greedy decoding rarely use to fix it. An allowance clause may be
  cited to explain why a label does not apply, so it needs no suggested label;
- every evidence quote must occur in the case text (exactly, or up to case and whitespace, or as a run of at least
  60 % of its words: then the case's own words become the quote), and is mapped to a field and character offsets of
  that field (Case.segments order);
- the reasoning may not name a clause ID that was not offered;
- the reasoning may not repeat the prompt (an instruction line, or an example's reasoning): small models under greedy
  decoding sometimes do, and a moderator would read it as the case's rationale. It gets the one repair; when the
  answer's only fault is that (errors == [ECHO_ERROR]) and the repair does not give a clean answer, the chain keeps the
  answer's checked labels and citations with a rationale saying the model gave no case-specific reasoning, instead of
  discarding the whole answer.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from copilot.errors import UnknownClause
from copilot.policy.corpus import Corpus
from copilot.schema import Action, Case, Clause, EvidenceSpan
from copilot.timecode import with_time

# Clause IDs of this corpus look like HAT-2.3; the dotted number keeps names like COVID-19 out.
CLAUSE_ID_RE = re.compile(r"\b[A-Z]{2,5}-\d+\.\d+\b", re.I)
_ACTIONS = {a.value for a in Action}
# A paraphrased quote is snapped to the case's words when this share of its words appear there in one run.
SNAP_MIN_SHARE = 0.6
# What counts as repeating the prompt (`echoes`). Only the prompt's own instruction lines and its examples' reasoning
# are compared, never the label descriptions: reasoning in the taxonomy's words ("depicts suicide or self-injury") is
# legitimate. A reasoning repeats an instruction line when it is that line almost verbatim (difflib ratio over
# lower-cased words), or takes at least ECHO_MIN_WORDS words, nearly all from that line, covering at least
# ECHO_MIN_COVER of its distinct words. It repeats an example when it is a near-verbatim copy, or a close one
# (ECHO_EXAMPLE_CLOSE) that carries at least ECHO_ALIEN_WORDS of the example's own words (4+ letters, not in the
# instructions) that the case does not contain: "Calls a religious group rats to be driven out of our town" for a case
# about "vermin" is the example, not the case; "A gaming video with no policy issue" against the example "A cooking
# video with no policy issue" is a real answer.
ECHO_MIN_RATIO = 0.8
ECHO_EXAMPLE_RATIO = 0.95
ECHO_EXAMPLE_CLOSE = 0.75
ECHO_ALIEN_WORDS = 2
ECHO_MIN_WORDS = 5
ECHO_MIN_COVER = 0.5
ECHO_MIN_LINE_WORDS = 4
ECHO_ERROR = "the reasoning repeats the instructions or an example instead of describing this case: say in your own words what in this case decides your answer"
_EXAMPLE_REASONING = re.compile(r'"reasoning"\s*:\s*"([^"]*)"')


class LLMSuggestion(BaseModel):
    """The model's answer, parsed leniently: unknown values are reported by `check_suggestion`, not by pydantic."""

    reasoning: str = ""
    labels: list[str] = []
    clause_ids: list[str] = []
    evidence: list[str] = []
    action: str = "no_action"
    abstain: bool = False


class LLMAnswer(BaseModel):
    answer: str = ""
    clause_ids: list[str] = []
    covered: bool = True


@dataclass
class Checked:
    out: Any
    errors: list[str] = field(default_factory=list)
    clauses: list[Clause] = field(default_factory=list)
    evidence: list[EvidenceSpan] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # clause ID -> why the citation was removed without a repair


def _parse(model: type[BaseModel], data: dict[str, Any] | None, error: str | None) -> tuple[Any, list[str]]:
    if data is None:
        return None, [error or "the answer was not a JSON object"]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:4])
        return None, [f"the JSON object has the wrong shape ({problems})"]


def _dedupe(items: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _cited(clause_ids: Sequence[str], offered: Mapping[str, Clause], corpus: Corpus, errors: list[str]) -> list[Clause]:
    clauses = []
    for raw in _dedupe([c.strip().upper() for c in clause_ids]):
        if raw not in offered:
            errors.append(f"clause {raw} was not in the Clauses list; cite only {', '.join(offered) or 'nothing'}")
            continue
        try:
            clauses.append(corpus.get(raw))
        except UnknownClause as exc:  # offered from another corpus version: never cite it
            errors.append(exc.detail)
    return clauses


def _foreign_ids(text: str, offered: Mapping[str, Clause], what: str, errors: list[str]) -> None:
    for cid in _dedupe([m.group(0).upper() for m in CLAUSE_ID_RE.finditer(text)]):
        if cid not in offered:
            errors.append(f"the {what} names {cid}, which is not in the Clauses list")


def locate_quote(case: Case, quote: str) -> EvidenceSpan | None:
    """Find a quote in the case's fields: exact first, then ignoring case and runs of whitespace."""
    q = quote.strip().strip("\"“”'‘’").strip()
    if not q:
        return None
    fields = [name for name, _ in case.segments()]
    for name in fields:
        text = case.field_text(name)
        i = text.find(q)
        if i >= 0:
            return _span(case, name, i, i + len(q), text)
    pattern = re.compile(r"\s+".join(re.escape(w) for w in q.split()), re.I)
    for name in fields:
        text = case.field_text(name)
        m = pattern.search(text)
        if m:
            return _span(case, name, m.start(), m.end(), text)
    return _snap(case, fields, q)


_WORD = re.compile(r"\w+(?:['’]\w+)*")


def _snap(case: Case, fields: list[str], quote: str) -> EvidenceSpan | None:
    """Small models paraphrase ('they are vermin' for 'you people are vermin'): snap the quote to the longest run of
    case words it shares, when that run is at least SNAP_MIN_SHARE of the quote's words (and 2 words or more).
    The span's quote is then the case's own text, never the model's wording."""
    qwords = [w.lower() for w in _WORD.findall(quote)]
    if len(qwords) < 2:
        return None
    best: tuple[int, str, int, int] | None = None
    for name in fields:
        text = case.field_text(name)
        matches = list(_WORD.finditer(text))
        cwords = [m.group(0).lower() for m in matches]
        block = difflib.SequenceMatcher(None, qwords, cwords, autojunk=False).find_longest_match(0, len(qwords), 0, len(cwords))
        if block.size and (best is None or block.size > best[0]):
            best = (block.size, name, matches[block.b].start(), matches[block.b + block.size - 1].end())
    if best is None or best[0] < max(2, math.ceil(SNAP_MIN_SHARE * len(qwords))):
        return None
    _, name, start, end = best
    return _span(case, name, start, end, case.field_text(name))


def _span(case: Case, name: str, start: int, end: int, text: str) -> EvidenceSpan:
    return with_time(case, EvidenceSpan(field=name, start=start, end=end, quote=text[start:end]))


@dataclass(frozen=True)
class EchoLines:
    """What a reasoning must not repeat: the prompt template's instruction lines and its examples' reasoning."""

    instructions: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()

    @cached_property
    def normalized(self) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
        """Instructions and examples as compared (lower-cased words), and the instructions' vocabulary: computed once
        per prompt, not per answer."""
        instructions = tuple(_norm(line) for line in self.instructions)
        return instructions, tuple(_norm(e) for e in self.examples), frozenset(w for n in instructions for w in n.split())


def prompt_lines(template_text: str) -> EchoLines:
    """The echo lines of a prompt template's system section, rendered with its placeholders empty (so the corpus's
    label descriptions are not among them)."""
    lines = [line.strip() for line in template_text.splitlines() if line.strip()]
    examples = tuple(m.group(1) for m in _EXAMPLE_REASONING.finditer(template_text))
    instructions = tuple(line for line in lines if not line.startswith("Example:") and len(_norm(line).split()) >= ECHO_MIN_LINE_WORDS)
    return EchoLines(instructions, examples)


def _norm(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def text_ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def echoes(reasoning: str, lines: EchoLines, case_text: str = "") -> bool:
    r = _norm(reasoning)
    words = r.split()
    if len(words) < 3:
        return False
    instructions, examples, generic = lines.normalized
    in_case = set(_norm(case_text).split())
    for ne in examples:
        ratio = text_ratio(r, ne)
        if ratio >= ECHO_EXAMPLE_RATIO:
            return True
        # an example copied and then carried on with the case's words ("Calls a religious group rats to be driven out
        # of our town before they breed more.", seen on `make run`) is only close at its head
        ratio = max(ratio, text_ratio(" ".join(words[: len(ne.split())]), ne))
        if ratio >= ECHO_EXAMPLE_CLOSE:
            alien = {w for w in set(words) & set(ne.split()) if len(w) >= 4 and w not in generic and w not in in_case}
            if len(alien) >= ECHO_ALIEN_WORDS:
                return True
    for n in instructions:
        if text_ratio(r, n) >= ECHO_MIN_RATIO:
            return True
        line_words = set(n.split())
        if len(words) >= ECHO_MIN_WORDS and sum(w in line_words for w in words) >= 0.9 * len(words) \
                and len(set(words) & line_words) >= ECHO_MIN_COVER * len(line_words):
            return True
    return False


def check_suggestion(
    data: dict[str, Any] | None, parse_error: str | None, offered: Mapping[str, Clause], corpus: Corpus, case: Case,
    prompt: EchoLines | None = None,
) -> Checked:
    """``prompt``: what the reasoning must not repeat (`prompt_lines` of the prompt template)."""
    out, errors = _parse(LLMSuggestion, data, parse_error)
    if out is None:
        return Checked(None, errors)
    taxonomy = corpus.taxonomy
    labels = _dedupe(out.labels)
    for label in labels:
        if label not in taxonomy.labels:
            errors.append(f"{label!r} is not a label; use only: {', '.join(taxonomy.labels)}")
    if out.action not in _ACTIONS:
        errors.append(f"{out.action!r} is not an action; use one of: {', '.join(sorted(_ACTIONS))}")
    areas = {taxonomy.labels[lab].area for lab in taxonomy.close([lab for lab in labels if lab in taxonomy.labels])}
    clauses, dropped = [], {}
    for clause in _cited(out.clause_ids, offered, corpus, errors):
        if clause.kind == "prohibition" and clause.area not in areas:
            dropped[clause.id] = f"{clause.id} dropped: no suggested label of its area ({clause.area})"
        else:
            clauses.append(clause)
    spans: list[EvidenceSpan] = []
    for quote in out.evidence:
        if not quote.strip():
            continue
        span = locate_quote(case, quote)
        if span is None:
            errors.append(f"evidence {quote[:60]!r} is not an exact quote from the case; copy words from the case")
        elif all((s.field, s.start, s.end) != (span.field, span.start, span.end) for s in spans):
            spans.append(span)
    _foreign_ids(out.reasoning, offered, "reasoning", errors)
    if prompt is not None and echoes(out.reasoning, prompt, case.text()):
        errors.append(ECHO_ERROR)
    out.labels = labels
    return Checked(out, errors, clauses, spans, dropped)


def check_answer(data: dict[str, Any] | None, parse_error: str | None, offered: Mapping[str, Clause], corpus: Corpus) -> Checked:
    out, errors = _parse(LLMAnswer, data, parse_error)
    if out is None:
        return Checked(None, errors)
    clauses = _cited(out.clause_ids, offered, corpus, errors)
    _foreign_ids(out.answer, offered, "answer", errors)
    if out.covered and not clauses:
        errors.append("covered is true but no clause ID is cited: cite the clauses the answer relies on, or set covered to false")
    if not out.answer.strip():
        errors.append("the answer is empty")
    return Checked(out, errors, clauses)
