"""Long case text: rejected with 413 by default, scored over windows when COPILOT_WINDOW_LONG_TEXT is on.

A violating sentence at the very end of a long, harmless transcript must still be found: a model that silently kept
only the first 128 tokens would miss it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import Server, start_server

from copilot.config import Settings
from copilot.runtime import Runtime

FILLER = ("Today we are walking through the old harbour market, the fish stalls open early and the bakery on the corner "
          "sells bread still warm from the oven. The tide is low, the gulls are loud, and a busker plays the accordion. ")
THREAT = ("And to the guy who reported my stall: I know where you live. I am going to come to your house tonight and stab "
          "you. You will not see the morning, I promise.")
THREAT_LABELS = {"harassment", "harassment/threatening", "violence"}


@pytest.fixture(scope="module")
def windowed(server: Server, settings: Settings) -> Iterator[Server]:
    rt = Runtime(settings.model_copy(update={"window_long_text": True, "max_text_chars": 2000}))
    for name in ("corpus", "embedder", "index", "classifier", "database"):  # share the session's loaded components
        rt._values[name] = getattr(server.runtime, name)
    url, srv, thread = start_server(rt.settings, rt, warm=False)
    yield Server(url, rt, server.keys)
    srv.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


def _moderate(srv: Server, text: str) -> httpx.Response:
    with srv.client("admin") as c:
        return c.post("/v1/moderations", json={"input": text})


def test_long_text_is_windowed_not_truncated(windowed: Server, server: Server) -> None:
    long_text = FILLER * 30 + THREAT
    assert len(long_text) > 5000
    # the session server keeps the default (reject) and a limit of 20,000 characters: beyond it, 413
    r = _moderate(server, FILLER * 200)
    assert r.status_code == 413 and r.json()["code"] == "text_too_long"

    alone = _moderate(windowed, THREAT).json()["results"][0]
    filler = _moderate(windowed, FILLER * 30).json()["results"][0]
    r = _moderate(windowed, long_text)
    assert r.status_code == 200, r.text  # over this server's 2,000-character limit, yet scored
    both = r.json()["results"][0]
    assert alone["flagged"] and not filler["flagged"], (alone, filler)
    # The threat is found at the end of the long text. Its last window also holds market chatter, so which threat label
    # wins can shift (seen: harassment/threatening alone, violence in context), and mixed windows can raise unrelated
    # labels a little; at least one threat label must be flagged, as it is for the threat alone.
    flagged_both = {l for l, on in both["categories"].items() if on}
    assert both["flagged"] and flagged_both & THREAT_LABELS, both
    assert {l for l, on in alone["categories"].items() if on} & THREAT_LABELS, alone
    # an ASR transcript often has no punctuation: the short windows then step through it instead of starting at sentences
    bare = _moderate(windowed, long_text.replace(".", "").replace(",", "").replace(":", "")).json()["results"][0]
    assert {l for l, on in bare["categories"].items() if on} & THREAT_LABELS, bare


def test_windowed_case_is_ingested_and_suggested(windowed: Server) -> None:
    with windowed.client("admin") as c:
        created = c.post("/v1/cases", json={"transcript": FILLER * 30 + THREAT, "external_id": "long-windowed-1"})
        assert created.status_code in (200, 201), created.text
        first = created.json()["cases"][0]
        assert first["suggestion"] is not None  # ingestion scored the long text (it stores the case even if scoring fails)
        sug = c.post(f"/v1/cases/{first['id']}/suggest", params={"mode": "fast"})
        assert sug.status_code == 200, sug.text
        suggestion = sug.json()["suggestion"]
        assert suggestion["labels"] or suggestion["abstained"], suggestion
        # whatever it suggests cites clauses of the corpus that exist
        for cit in suggestion["citations"]:
            assert cit["clause_id"] in windowed.runtime.corpus.clauses
