"""The drafts behind speculative decoding: what they propose for every prefix of real answers (no model needed).

The decoder keeps a drafted token only where the model picks it too, so a wrong draft costs speed, never correctness;
these tests pin down that the drafts are the forced text of the schema, not guesses.
"""

from __future__ import annotations

import json

from copilot.llm.draft import MAX_DRAFT_CHARS, JsonDraft
from copilot.llm.render import ask_schema, suggestion_schema
from copilot.policy.corpus import Corpus
from copilot.schema import Case


def _schema(corpus: Corpus, case: Case) -> dict:  # type: ignore[type-arg]
    return suggestion_schema(corpus.taxonomy, ["HAT-1.1", "HAT-2.1", "HAT-9.1"], case)


def _proposals(draft: JsonDraft, answer: str) -> dict[int, str]:
    return {k: draft.propose(answer[:k]) for k in range(len(answer) + 1)}


def test_keys_and_punctuation_of_the_schema_are_proposed_in_order(corpus: Corpus) -> None:
    case = Case.from_text("they should be shot at the border, every migrant")
    draft = JsonDraft(_schema(corpus, case))
    answer = json.dumps({"reasoning": "Calls for \"shooting\" migrants.", "labels": ["hate", "hate/threatening"], "clause_ids": ["HAT-2.1"],
                         "evidence": ["shot at the border,"], "action": "remove_and_report", "abstain": False}, separators=(",", ":"))
    props = _proposals(draft, answer)
    assert props[0] == "{"
    assert props[1] == '"reasoning":"'
    after_reasoning = answer.index('","labels"') + 1  # just past the closing quote (the escaped quotes inside do not close it)
    assert props[after_reasoning] == ',"labels":['
    assert props[answer.index("hate/t") + len("hate/t")] == 'hreatening"'  # one enum value left: finish it and its quote
    assert props[answer.index("HAT-2") + len("HAT-2")] == '.1"'  # one of two allowed clauses: the array may go on
    assert props[answer.index('"shot') + len('"shot')] == " at the border, every migrant"  # the case's next words
    assert props[answer.index('"remove_a') + len('"remove_a')] == 'nd_'  # remove_and_report / _strike: the common part
    assert props[answer.index('"remove_and_r') + len('"remove_and_r')] == 'eport"'
    assert props[answer.index('"abstain":') + len('"abstain":') + 1] == "alse"
    assert props[len(answer) - 1] == "}"
    assert props[len(answer)] == ""  # complete: nothing more
    assert all(len(p) <= MAX_DRAFT_CHARS for p in props.values())


def test_choices_get_no_draft_and_strays_stop_drafting(corpus: Corpus) -> None:
    draft = JsonDraft(_schema(corpus, Case.from_text("hello there")))
    assert draft.propose('{"reasoning":"ok","labels":[') == ""  # a label or "]": the model's choice
    assert draft.propose('{"reasoning":"free text so f') == ""  # free text: nothing to copy
    assert draft.propose('{"reasoning":"ok","labels":["ha') == ""  # hate, hate/threatening, harassment...: no common rest
    assert draft.propose('{"reasoning":"ok","labels":["hat') == "e"  # hate and hate/...: the common part only
    assert draft.propose('{"oops":') == ""  # not this schema's text: no proposal
    assert draft.propose('{"reasoning":"a \\') == ""  # inside an escape


def test_quotes_are_drafted_from_the_case_with_its_whitespace_collapsed(corpus: Corpus) -> None:
    case = Case.from_text("first line\n\nmeet me   after school tomorrow")
    draft = JsonDraft(_schema(corpus, case))
    prefix = '{"reasoning":"r","labels":[],"clause_ids":[],"evidence":["me after'
    assert draft.propose(prefix) == " school tomorrow"


def test_the_answer_schema_of_policy_questions_is_drafted_too() -> None:
    draft = JsonDraft(ask_schema(["HAT-9.1", "HAR-9.4"]))
    assert draft.propose('{"answer":"Yes.","clause_ids":["HAT') == '-9.1"'
    assert draft.propose('{"answer":"Yes.","clause_ids":["HAT-9.1"]') == ',"covered":'
