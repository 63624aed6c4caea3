"""Cases outside the languages the models were trained on are escalated, never given a confident-looking suggestion."""

from __future__ import annotations

from copilot.runtime import Runtime
from copilot.schema import Case
from copilot.suggest import suggest_fast


def test_non_english_case_is_escalated_and_says_why(runtime: Runtime) -> None:
    text = "Have a lovely day at the beach with your family"
    english = suggest_fast(runtime, Case(caption=text, language="en-GB"))
    assert "English-only" not in (english.abstain_reason or "")
    french = suggest_fast(runtime, Case(caption="Passez une belle journée à la plage en famille", language="fr"))
    assert french.abstained and french.action.value == "escalate"
    assert "'fr'" in (french.abstain_reason or "") and "English-only" in french.rationale
    unknown = suggest_fast(runtime, Case(caption=text))  # no language given: judged as it is
    assert "English-only" not in (unknown.abstain_reason or "")
