"""Backend registry, model files and their hashes, the streamed-reasoning parser, the suggestion cache and the
ensemble rule: no model needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.config import Settings
from copilot.errors import ComponentMissing
from copilot.llm import backends, models
from copilot.llm.base import parse_json_object
from copilot.llm.chain import LLM_SUPPORT_FLOOR, SuggestionCache, _ReasoningStream, ensemble
from copilot.llm.checks import LLMSuggestion
from copilot.runtime import Runtime
from copilot.schema import Action, Citation, LabelScore, Suggestion


def test_unknown_backend_fails_with_close_matches() -> None:
    with pytest.raises(ComponentMissing, match=r"unknown backend 'llamacp'.*did you mean llamacpp"):
        backends.get_loader("llamacp")
    with pytest.raises(ComponentMissing, match="not configured"):
        backends.get_loader("none")
    assert {"llamacpp", "openai"} <= set(backends.backend_names())


def test_unknown_local_model_names_known_ones(tmp_path: Path) -> None:
    s = Settings(env="test", data_dir=tmp_path, llm_backend="llamacpp", llm_model="qwen2.5-coder-1.5b")
    with pytest.raises(ComponentMissing, match=r"did you mean qwen2.5-coder-1.5b-instruct"):
        backends.resolve_local_model(s)


def test_openai_backend_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(ComponentMissing, match="COPILOT_LLM_BASE_URL"):
        backends.load_chat_model(Settings(env="test", data_dir=tmp_path, llm_backend="openai"))


def test_model_file_missing_or_corrupt_is_named(tmp_path: Path) -> None:
    path = models.QWEN.default_path(tmp_path)
    with pytest.raises(ComponentMissing, match=r"missing \(run scripts/install-llm.sh\)"):
        models.verify(models.QWEN, path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a model")
    with pytest.raises(ComponentMissing, match=r"has sha256 .* expected cc324af070c2ecbf"):
        models.verify(models.QWEN, path)
    s = Settings(env="test", data_dir=tmp_path, llm_backend="llamacpp")
    with pytest.raises(ComponentMissing, match="sha256"):
        backends.load_chat_model(s) if _has_llama() else models.verify(models.QWEN, path)


def test_hash_sidecar_is_refreshed_when_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"one")
    first = models.file_sha256(f)
    assert (tmp_path / "m.gguf.sha256").exists() and models.file_sha256(f) == first
    f.write_bytes(b"two, longer")
    assert models.file_sha256(f) != first


def _has_llama() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def test_parse_json_object_tolerates_fences() -> None:
    assert parse_json_object('```json\n{"a": 1}\n```') == ({"a": 1}, None)
    assert parse_json_object("no json")[0] is None
    assert "not valid JSON" in (parse_json_object('{"a": }')[1] or "")


def test_reasoning_stream_decodes_escapes_across_chunks() -> None:
    out: list[str] = []
    s = _ReasoningStream(out.append)
    for piece in ['{"reas', 'oning":"Says \\"ver', 'min\\" \\u00e9', 't\\n"', ',"labels":["hate"]}']:
        s.feed(piece)
    assert "".join(out) == 'Says "vermin" ét\n'


def test_case_hash_keys_on_media_timings() -> None:
    # an evidence span's start_s/end_s come from the timings: the same words timed differently are another case
    from copilot.llm.chain import case_hash
    from copilot.schema import Case, TimedLine

    a = Case(transcript="you people are vermin", transcript_timing=[TimedLine(start_s=1.0, end_s=2.5, text="you people are vermin")])
    b = a.model_copy(update={"transcript_timing": [TimedLine(start_s=40.0, end_s=41.5, text="you people are vermin")]})
    assert case_hash(a) != case_hash(b) and case_hash(a) == case_hash(a.model_copy(deep=True))


def test_cache_is_lru_and_returns_copies() -> None:
    cache = SuggestionCache(size=2)
    sug = Suggestion(labels=[], scores=[], citations=[], rationale="r", action=Action.no_action, abstained=False, corpus_version="v")
    cache.put(("a",), sug)
    got = cache.get(("a",))
    assert got is not None and got is not sug
    got.rationale = "changed"
    assert cache.get(("a",)).rationale == "r"  # type: ignore[union-attr]
    cache.put(("b",), sug)
    cache.put(("c",), sug)
    assert cache.get(("a",)) is None and cache.get(("c",)) is not None


# ---- the ensemble rule (chain.py docstring) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    return Runtime(Settings(env="test", data_dir=tmp_path_factory.mktemp("ens")))


def _fast(*scores: LabelScore) -> Suggestion:
    return Suggestion(labels=[], scores=list(scores), citations=[], rationale="", action=Action.no_action, abstained=False, corpus_version="v")


def _ens(rt: Runtime, fast: Suggestion, labels: list[str], cited: list[str], **kw):  # type: ignore[no-untyped-def]
    out = LLMSuggestion(reasoning="r", labels=labels, clause_ids=cited, action=kw.pop("action", "remove_and_strike"), abstain=kw.pop("abstain", False))
    return ensemble(rt, fast, out, [rt.corpus.get(c) for c in cited])


def test_llm_confirms_a_supported_label_with_a_citation(rt: Runtime) -> None:
    d = _ens(rt, _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True)), ["hate"], ["HAT-1.1"])
    assert (d.labels, d.abstain_reasons, d.action) == (["hate"], [], Action.remove_and_strike)


def test_confident_classifier_overruled_abstains(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True))
    fast.citations = [Citation(clause_id="HAT-1.1", title="t", area="hate", summary="s")]
    d = _ens(rt, fast, [], ["HAT-9.1"], action="no_action")
    # the label stays (a human decides between the classifier and the exception), the exception is cited for them
    assert d.labels == ["hate"] and d.action == Action.escalate
    assert "confident in hate" in d.abstain_reasons[0]
    assert [c.id for c in d.cited] == ["HAT-1.1", "HAT-9.1"] and not any("HAT-9.1 not cited" in n for n in d.notes)
    # an LLM that names a hate label next to the exception is not excepting the area
    d = _ens(rt, fast, ["hate"], ["HAT-9.1", "HAT-1.1"])
    assert d.labels == ["hate"] and not d.abstain_reasons


def test_a_flagged_label_the_llm_is_silent_on_stays_even_in_the_band(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.45, threshold=0.4, flagged=True))
    fast.citations = [Citation(clause_id="HAT-1.1", title="t", area="hate", summary="s")]
    d = _ens(rt, fast, [], [], action="no_action")
    assert (d.labels, d.abstain_reasons, [c.id for c in d.cited]) == (["hate"], [], ["HAT-1.1"])


def test_llm_cannot_add_a_sub_label_the_classifier_does_not_flag(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True),
                 LabelScore(label="hate/threatening", score=0.3, threshold=0.5))
    d = _ens(rt, fast, ["hate/threatening"], ["HAT-2.1"])
    assert d.labels == ["hate"] and any("hate/threatening not suggested" in n for n in d.notes)


def test_llm_cannot_add_a_label_the_classifier_scores_near_zero(rt: Runtime) -> None:
    d = _ens(rt, _fast(LabelScore(label="hate", score=LLM_SUPPORT_FLOOR * 0.7, threshold=0.4)), ["hate"], ["HAT-1.1", "HAT-9.1"])
    assert d.labels == [] and any("classifier scores it" in n for n in d.notes)
    assert [c.id for c in d.cited] == ["HAT-9.1"]  # the prohibition clause of the dropped label is not cited


def test_llm_adds_a_weakly_scored_label_only_with_its_own_citation(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.3, threshold=0.4))
    fast.citations = [Citation(clause_id="HAT-1.1", title="t", area="hate", summary="s")]
    d = _ens(rt, fast, ["hate"], ["HAT-1.1"])
    assert d.labels == ["hate"] and [c.id for c in d.cited] == ["HAT-1.1"]
    d = _ens(rt, fast, ["hate"], [])  # the fast path's clause does not back a label the classifier did not flag
    assert d.labels == [] and any("no valid citation for hate" in r for r in d.abstain_reasons)


def test_unsupported_labels_come_from_retrieval_and_llm_alone(rt: Runtime) -> None:
    ext = next(c for c in rt.corpus.clauses.values() if c.area == "extremism" and c.kind == "prohibition")
    d = _ens(rt, _fast(LabelScore(label="extremism", score=0.0, threshold=None, supported=False)), ["extremism"], [ext.id], action=ext.action.value)
    assert d.labels == ["extremism"] and not d.abstain_reasons and d.action == ext.action


def test_label_without_valid_citation_or_llm_abstain_escalates(rt: Runtime) -> None:
    d = _ens(rt, _fast(LabelScore(label="hate", score=0.5, threshold=0.4, flagged=True)), ["hate"], [])
    assert d.labels == [] and any("no valid citation for hate" in r for r in d.abstain_reasons)
    # an extra uncited label next to a cited one is dropped with a note, not escalated
    d = _ens(rt, _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True)), ["hate", "spam"], ["HAT-1.1"])
    assert d.labels == ["hate"] and not d.abstain_reasons and "spam not suggested: no valid citation" in d.notes
    d = _ens(rt, _fast(), [], [], abstain=True, action="no_action")
    assert d.action == Action.escalate and d.abstain_reasons == ["the LLM abstained"]


def test_action_falls_back_to_the_cited_clauses_strictest(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True),
                 LabelScore(label="hate/threatening", score=0.8, threshold=0.5, flagged=True))
    d = _ens(rt, fast, ["hate/threatening"], ["HAT-2.1"], action="warning_label")
    assert d.labels == ["hate", "hate/threatening"]  # sub-labels imply their base label
    assert d.action == rt.corpus.get("HAT-2.1").action


def test_an_allowance_overrules_a_label_near_its_threshold_without_escalating(rt: Runtime) -> None:
    # flagged, but inside the uncertain band: the LLM's exception decides, and the exception is what gets cited
    d = _ens(rt, _fast(LabelScore(label="hate", score=0.45, threshold=0.4, flagged=True)), [], ["HAT-9.1"], action="no_action")
    assert (d.labels, d.abstain_reasons, d.action) == ([], [], Action.no_action)
    assert [c.id for c in d.cited] == ["HAT-9.1"] and any("exception HAT-9.1" in n for n in d.notes)


def test_a_confident_label_the_llm_only_leaves_out_stays_with_the_fast_paths_clause(rt: Runtime) -> None:
    # no exception cited: silence is not disagreement; the classifier's label keeps the clause the fast path cited
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True))
    fast.labels = ["hate"]
    fast.citations = [Citation(clause_id="HAT-1.1", title="t", area="hate", summary="s")]
    d = _ens(rt, fast, [], [], action="no_action")
    assert d.labels == ["hate"] and [c.id for c in d.cited] == ["HAT-1.1"] and not d.abstain_reasons
    assert d.action == rt.corpus.get("HAT-1.1").action


def test_one_clause_per_area_is_cited_and_a_sub_label_lends_its_clause(rt: Runtime) -> None:
    d = _ens(rt, _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True)), ["hate", "hate/threatening"], ["HAT-2.1", "HAT-1.1"])
    assert d.labels == ["hate", "hate/threatening"]
    assert [c.id for c in d.cited] == ["HAT-2.1"]  # HAT-2.1 prohibits both: HAT-1.1 adds nothing and is noted, not cited
    assert any("HAT-1.1 not cited" in n for n in d.notes)


def test_an_excepted_base_label_stays_when_a_kept_sub_label_implies_it(rt: Runtime) -> None:
    fast = _fast(LabelScore(label="hate", score=0.45, threshold=0.4, flagged=True),
                 LabelScore(label="hate/threatening", score=0.9, threshold=0.4, flagged=True))
    fast.citations = [Citation(clause_id="HAT-2.1", title="t", area="hate", summary="s")]
    d = _ens(rt, fast, [], ["HAT-9.1"], action="no_action")
    # hate is in its band and excepted, but the confident hate/threatening (escalated) implies it: no contradicting note
    assert d.labels == ["hate", "hate/threatening"] and d.action == Action.escalate
    assert not any(n.startswith("hate not suggested") for n in d.notes)


def test_an_allowance_is_cited_only_where_it_decides(rt: Runtime) -> None:
    # beside a real violation of another area, an exception that removed nothing is noted, not cited
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True),
                 LabelScore(label="self-harm", score=0.02, threshold=0.4))
    d = _ens(rt, fast, ["hate"], ["HAT-1.1", "SH-9.3"])
    assert d.labels == ["hate"] and [c.id for c in d.cited] == ["HAT-1.1"] and any("SH-9.3 not cited" in n for n in d.notes)
    # the same exception explains an answer with no label at all
    d = _ens(rt, _fast(LabelScore(label="self-harm", score=0.02, threshold=0.4)), [], ["SH-9.3"], action="no_action")
    assert (d.labels, [c.id for c in d.cited]) == ([], ["SH-9.3"])
    # and one that removed a flagged label of its area is cited next to another area's violation
    fast = _fast(LabelScore(label="hate", score=0.9, threshold=0.4, flagged=True),
                 LabelScore(label="self-harm", score=0.45, threshold=0.4, flagged=True))
    d = _ens(rt, fast, ["hate"], ["HAT-1.1", "SH-9.3"])
    assert d.labels == ["hate"] and [c.id for c in d.cited] == ["HAT-1.1", "SH-9.3"] and not d.abstain_reasons
    assert any("self-harm not suggested: exception SH-9.3" in n for n in d.notes)
    # so is one that settled a label scored just under its threshold (the uncertainty that called the LLM)
    fast = _fast(LabelScore(label="harassment", score=0.9, threshold=0.4, flagged=True),
                 LabelScore(label="hate", score=0.4 - rt.settings.fast_path_margin / 2, threshold=0.4))
    d = _ens(rt, fast, ["harassment"], ["HAR-2.1", "HAT-9.1"])
    assert d.labels == ["harassment"] and [c.id for c in d.cited] == ["HAR-2.1", "HAT-9.1"] and not d.abstain_reasons
