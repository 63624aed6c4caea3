from __future__ import annotations

from pathlib import Path

import pytest

from copilot.schema import Action, Case, DecisionCreate, LabelScore, Suggestion
from copilot.store import cases as repo
from copilot.store.db import Database
from eval.agreement import agreement, cohen_kappa


def test_kappa_hand_computed() -> None:
    # a: T T F F, b: T F F F -> p_o = 3/4; p_a = 1/2, p_b = 1/4 -> p_e = 1/8 + 3/8 = 1/2 -> kappa = 0.5
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)
    assert cohen_kappa([], []) is None
    assert cohen_kappa([True, True], [True, True]) is None  # p_e = 1: undefined


def _sug(labels: list[str]) -> Suggestion:
    return Suggestion(labels=labels, scores=[LabelScore(label="spam", score=0.9)], citations=[], rationale="", action=Action.remove,
                      abstained=False, corpus_version="v")


def test_agreement_from_a_real_database(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'ag.db'}")
    with db.session() as s:
        for i, (sug, m1, m2) in enumerate([(["spam"], ["spam"], ["spam"]), (["spam"], [], None), ([], [], ["spam"])]):
            row, _ = repo.ingest(s, Case(caption=f"case {i}"), "t")
            repo.add_suggestion(s, row.id, _sug(sug), "t")
            repo.decide(s, row.id, "ann", DecisionCreate(labels=m1, action=Action.remove if m1 else Action.no_action))
            if m2 is not None:
                repo.decide(s, row.id, "bob", DecisionCreate(labels=m2, action=Action.remove if m2 else Action.no_action))
    a = agreement(db, ["spam", "hate"])
    assert a["decisions"] == 5
    # verdicts: ann accepted, bob accepted, ann overridden, ann accepted ([] == []), bob overridden
    assert a["overall"]["accepted"] == pytest.approx(3 / 5) and a["overall"]["overridden"] == pytest.approx(2 / 5)
    assert a["per_moderator"]["bob"]["n"] == 2
    # suggestion vs decision on spam: pairs (T,T) (T,T) (T,F) (F,F) (F,T)
    assert a["kappa_suggestion_vs_decision"]["spam"] == pytest.approx(cohen_kappa([True, True, True, False, False], [True, True, False, False, True]))
    assert a["inter_moderator"]["cases"] == 2
