"""The streamed full path over real HTTP: POST /v1/cases/{id}/suggest/stream (server-sent events) and the LLM prefix
warm-up at service start, against the real llama.cpp backend with the small SmolLM2-135M GGUF (scripts/install-llm.sh).

The LLM server shares the session's loaded corpus, index, classifier and database (so the `server` fixture's keys
work on it); its LLM loads and its prompt prefix warms in the service's own warm-up thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import Server, assert_final_rationale_matches_stream, require_llama_cpp, start_server

from copilot.config import Settings
from copilot.llm.models import SMOLLM
from copilot.runtime import Runtime
from copilot.schema import Suggestion

pytestmark = pytest.mark.slow

HATE = "You people are vermin and should be driven out of this town, every last one of you."
SPAM = "Buy followers now!!! 10k for $5, DM me, limited offer"
LLM_THREADS = 1  # the test machine's cores are shared; llama.cpp's spinning threads must not outnumber the free ones


@dataclass
class Event:
    name: str
    data: Any
    at: float  # seconds since the request was sent


def read_events(client: httpx.Client, path: str, stop_after: str | None = None) -> tuple[httpx.Response, list[Event]]:
    """POST and parse a text/event-stream answer (comments skipped); stop early after the first `stop_after` event."""
    events: list[Event] = []
    t0 = time.perf_counter()
    with client.stream("POST", path, headers={"Accept": "text/event-stream"}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, events
        name, data = "message", []
        for line in resp.iter_lines():
            if line == "":
                if data:
                    events.append(Event(name, json.loads("\n".join(data)), time.perf_counter() - t0))
                    if name == stop_after:
                        break
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    return resp, events


def problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["code"] == code and body["detail"] and body["request_id"]
    return body


def create_case(server: Server, text: str) -> int:
    with server.client("moderator") as c:
        r = c.post("/v1/cases", json={"caption": text})
        assert r.status_code in (200, 201), r.text
        return int(r.json()["cases"][0]["id"])


@pytest.fixture(scope="module")
def llm_server(server: Server, settings: Settings) -> Iterator[Server]:
    require_llama_cpp()
    path = SMOLLM.default_path(Settings().data_dir)
    assert path.is_file(), f"{path} is missing: run scripts/install-llm.sh"
    update = {"llm_backend": "llamacpp", "llm_model_path": path, "llm_timeout_s": 120.0, "llm_max_tokens": 160,
              "llm_threads": LLM_THREADS, "request_timeout_s": 180.0}
    rt = Runtime(settings.model_copy(update=update))
    for name in ("corpus", "embedder", "index", "classifier", "database"):  # share the session's loaded components
        rt._values[name] = getattr(server.runtime, name)
    url, srv, thread = start_server(rt.settings, rt, warm=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # the LLM and its prefix warm up in the background: wait for the prefix
        comps = {c["name"]: c for c in httpx.get(url + "/readyz", timeout=5).json()["components"]}
        if comps["llm_prefix"]["status"] in ("ready", "missing"):
            break
        time.sleep(0.5)
    yield Server(url, rt, server.keys)
    srv.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


def test_prefix_warm_up_is_an_optional_readiness_entry(llm_server: Server, server: Server) -> None:
    r = httpx.get(llm_server.url + "/readyz")
    assert r.status_code == 200, r.text
    comps = {c["name"]: c for c in r.json()["components"]}
    assert comps["llm"]["status"] == "ready" and comps["llm"]["version"].startswith("llamacpp:")
    prefix = comps["llm_prefix"]
    assert prefix["status"] == "ready" and not prefix["required"] and prefix["detail"].startswith("warmed in "), prefix
    print(f"\nllm_prefix: {prefix['detail']}")
    # without an LLM the entry says so and readiness does not wait for it
    comps = {c["name"]: c for c in httpx.get(server.url + "/readyz").json()["components"]}
    assert comps["llm_prefix"]["status"] == "not_configured" and not comps["llm_prefix"]["required"]


def test_stream_rationale_then_stored_suggestion(llm_server: Server) -> None:
    rt = llm_server.runtime
    case_id = create_case(llm_server, HATE)
    n_calls = len(rt.llm.history)
    with llm_server.client("moderator") as c:
        resp, events = read_events(c, f"/v1/cases/{case_id}/suggest/stream")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    names = [e.name for e in events]
    assert names[-1] == "suggestion", [(e.name, e.data) for e in events if e.name != "rationale"]
    assert names.count("suggestion") == 1 and set(names[:-1]) == {"rationale"}, names
    chunks = [e.data["text"] for e in events[:-1]]
    assert chunks and all(isinstance(t, str) for t in chunks)
    stored = events[-1].data
    sug = Suggestion.model_validate(stored["suggestion"])
    print(f"\nfirst rationale event after {events[0].at:.2f}s, {len(chunks)} chunks, suggestion after {events[-1].at:.2f}s "
          f"(path {sug.path}{', fell back: ' + sug.fallback_reason if sug.fallback_reason else ''})")
    assert sug.corpus_version == rt.corpus.version and sug.prompt_version
    assert sug.model_ids["llm"].startswith("llamacpp:smollm2-135m-instruct@")
    assert all(c.clause_id in rt.corpus.clauses for c in sug.citations)
    if sug.path == "full":
        assert sug.fallback_reason is None
        assert_final_rationale_matches_stream(rt, "".join(chunks), sug.rationale, HATE)
    else:  # SmolLM's answer may fail the checks: then the fast path stands, and says why
        assert sug.fallback_reason, "a fast-path result from the full path must say why"
    # the warm-up evaluated the same prefix the request uses: the first call reused it
    purpose, first = rt.llm.history[n_calls]
    assert purpose == "suggest" and first.cached_tokens > 200, (purpose, first.cached_tokens)

    # stored like the non-streamed path, with its audit entry
    with llm_server.client("moderator") as c:
        detail = c.get(f"/v1/cases/{case_id}").json()
    last = detail["suggestions"][-1]
    assert last["id"] == stored["id"] and Suggestion.model_validate(last["suggestion"]) == sug
    from sqlalchemy import select

    from copilot.store.models import AuditRow

    with rt.database.session() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.action == "suggestion.create", AuditRow.entity_id == str(case_id))).all()
        assert any(r.details.get("suggestion_id") == stored["id"] and r.actor.startswith("test-moderator") for r in rows)


def test_stream_refusals_are_problem_details(llm_server: Server, server: Server) -> None:
    case_id = create_case(server, SPAM)
    # no LLM configured: 409 before any stream starts
    with server.client("moderator") as c:
        resp, events = read_events(c, f"/v1/cases/{case_id}/suggest/stream")
    body = problem(resp, 409, "llm_not_configured")
    assert "COPILOT_LLM_BACKEND=none" in body["detail"] and not events
    # roles: only moderators (and admins) may stream, on either server
    for srv in (server, llm_server):
        for role in ("policy", "auditor"):
            with srv.client(role) as c:
                problem(read_events(c, f"/v1/cases/{case_id}/suggest/stream")[0], 403, "forbidden")
        with srv.client(None) as c:
            problem(read_events(c, f"/v1/cases/{case_id}/suggest/stream")[0], 401, "unauthorized")
    with llm_server.client("moderator") as c:
        problem(read_events(c, "/v1/cases/999999/suggest/stream")[0], 404, "not_found")
        # the request's LLM budget: refused when out of range, and when given it reaches the chain
        problem(read_events(c, f"/v1/cases/{case_id}/suggest/stream?max_tokens=4")[0], 422, "validation_error")
        resp, events = read_events(c, f"/v1/cases/{case_id}/suggest/stream?timeout_s=0.001")
    assert resp.status_code == 200 and events[-1].name == "suggestion"
    sug = Suggestion.model_validate(events[-1].data["suggestion"])
    assert sug.path == "fast" and "no time left for the LLM call" in (sug.fallback_reason or "")


def test_client_disconnect_cancels_the_chain(llm_server: Server) -> None:
    rt = llm_server.runtime
    case_id = create_case(llm_server, SPAM + " (disconnect)")
    with llm_server.client("moderator") as c:
        before = len(c.get(f"/v1/cases/{case_id}").json()["suggestions"])
        n_calls = len(rt.llm.history)
        resp, events = read_events(c, f"/v1/cases/{case_id}/suggest/stream", stop_after="rationale")
    assert resp.status_code == 200 and [e.name for e in events] == ["rationale"]
    # the chain stops at its next token: its worker thread ends long before a whole answer could be generated
    deadline = time.monotonic() + 30
    while any(t.name == "copilot-llm-stream" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "copilot-llm-stream" for t in threading.enumerate())
    assert len(rt.llm.history) == n_calls, "the cut call must not complete (a completed call is recorded in the history)"
    with llm_server.client("moderator") as c:
        after = len(c.get(f"/v1/cases/{case_id}").json()["suggestions"])
    assert after == before, "a cancelled stream stores nothing"
    # the model is free again: a new stream on the same case completes
    with llm_server.client("moderator") as c:
        resp, events = read_events(c, f"/v1/cases/{case_id}/suggest/stream")
    assert events and events[-1].name == "suggestion"
