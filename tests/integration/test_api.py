"""The real service over loopback HTTP: auth, roles, problem details, the case workflow, audit, concurrency."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os

import httpx
import pytest
from conftest import Server, media_problems

pytestmark = pytest.mark.slow

HARMFUL = "I know where you live, tonight I'm coming to your house to hurt you and your kids"
BENIGN = "Made banana bread with my grandma today, recipe in the comments!"


def problem(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["code"] == code and body["detail"] and body["request_id"]
    return body


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 200
    comps = {c["name"]: c for c in r.json()["components"]}
    assert set(comps) == {"corpus", "index", "classifier", "database", "llm", "media", "llm_prefix"}
    assert comps["media"]["required"] is False  # optional: never gates readiness (the 200 above)
    if comps["media"]["status"] == "missing":
        # only where its prerequisites really are absent (no `make media` here); a loader that breaks on a complete
        # install must not pass as "missing", and CI installs everything
        assert media_problems(server.runtime.settings) and not os.environ.get("CI"), comps["media"]
    else:
        assert comps["media"]["status"] in ("ready", "loading"), comps["media"]
    assert all(comps[n]["status"] == "ready" for n in ("corpus", "index", "classifier", "database"))
    assert comps["llm"]["status"] == "not_configured" and comps["llm_prefix"]["status"] == "not_configured"
    # which backend each model runs on is visible (a silent ONNX -> torch fallback would cost 3x search time)
    assert comps["index"]["detail"].startswith("backend onnx-fp32") and comps["classifier"]["detail"].startswith("backend onnx-int8")
    assert r.headers["x-request-id"]


def test_auth_is_required_and_roles_are_enforced(server: Server) -> None:
    problem(server.client(None).get("/v1/cases"), 401, "unauthorized")
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer mc_wrong"}) as c:
        problem(c.get("/v1/cases"), 401, "unauthorized")
    # role matrix: (role, method, path, body, allowed)
    matrix = [
        ("policy", "post", "/v1/cases", {"caption": BENIGN}, False),
        ("auditor", "post", "/v1/cases", {"caption": BENIGN}, False),
        ("moderator", "get", "/v1/audit/verify", None, False),
        ("policy", "get", "/v1/audit/verify", None, False),
        ("auditor", "get", "/v1/audit/verify", None, True),
        ("auditor", "post", "/v1/moderations", {"input": BENIGN}, False),
        ("moderator", "post", "/v1/moderations", {"input": BENIGN}, True),
        ("policy", "get", "/v1/policy/search?q=doxxing", None, True),
        ("auditor", "get", "/v1/cases", None, True),
    ]
    for role, method, path, body, allowed in matrix:
        with server.client(role) as c:
            r = c.request(method, path, json=body)
        if allowed:
            assert r.status_code < 400, (role, path, r.text)
        else:
            problem(r, 403, "forbidden")


def test_bad_input_gets_precise_problems(server: Server) -> None:
    with server.client("moderator") as c:
        problem(c.post("/v1/cases", json={"caption": "   "}), 422, "empty_text")
        problem(c.post("/v1/cases", json={}), 422, "empty_text")
        too_long = "a" * (server.runtime.settings.max_text_chars + 1)
        problem(c.post("/v1/cases", json={"caption": too_long}), 413, "text_too_long")
        problem(c.post("/v1/cases", content=b'{"caption": "x"', headers={"content-type": "application/json"}), 400, "malformed_json")
        problem(c.post("/v1/cases", content=b'{"caption": "\xff\xfe"}', headers={"content-type": "application/json"}), 400, "malformed_json")
        problem(c.post("/v1/cases", json={"caption": "\x00\x01\x02\x03\x04\x05\x06\x07 bin"}), 422, "invalid_input")
        problem(c.post("/v1/cases", json={"caption": "ok", "colour": "red"}), 422, "validation_error")
        n = server.runtime.settings.max_batch + 1
        problem(c.post("/v1/cases", json={"cases": [{"caption": f"case {i}"} for i in range(n)]}), 413, "batch_too_large")
        problem(c.get("/v1/cases?label=hateful"), 422, "unknown_label")
        problem(c.get("/v1/cases/999999"), 404, "not_found")
        problem(c.get("/v1/policy/clauses/ZZZ-1.1"), 404, "not_found")
        problem(c.get("/v1/cases?cursor=garbage"), 422, "invalid_input")
        # an LLM budget out of range is refused, in the body and in the query alike
        body = problem(c.post("/v1/suggest", json={"case": {"caption": "ok"}, "mode": "full", "budget": {"max_tokens": 4}}), 422, "validation_error")
        assert "max_tokens" in json.dumps(body)
        problem(c.post("/v1/suggest", json={"case": {"caption": "ok"}, "budget": {"seconds": 3}}), 422, "validation_error")
        problem(c.post("/v1/cases/1/suggest?timeout_s=0"), 422, "validation_error")


def test_case_workflow_with_audit_trail(server: Server) -> None:
    with server.client("moderator") as c:
        r = c.post("/v1/cases", json={"external_id": "wf-1", "content_type": "comment", "caption": HARMFUL, "report_reason": "threat"})
        assert r.status_code == 201, r.text
        created = r.json()["cases"][0]
        assert created["created"] and created["suggestion"]["corpus_version"]
        cid = created["id"]
        # idempotent on external id: same body -> same case, 200
        again = c.post("/v1/cases", json={"external_id": "wf-1", "content_type": "comment", "caption": HARMFUL, "report_reason": "threat"})
        assert again.status_code == 200 and again.json()["cases"][0] == {**created, "created": False, "suggestion": None}
        # same id, different content -> conflict, nothing overwritten
        problem(c.post("/v1/cases", json={"external_id": "wf-1", "caption": "other text"}), 409, "conflict")
        sug = c.post(f"/v1/cases/{cid}/suggest?mode=fast").json()["suggestion"]
        for cit in sug["citations"]:
            assert c.get(f"/v1/policy/clauses/{cit['clause_id']}").status_code == 200
        assert c.post(f"/v1/cases/{cid}/claim").status_code == 200
        problem(c.post(f"/v1/cases/{cid}/decisions", json={"labels": ["violent"], "action": "remove"}), 422, "unknown_label")
        problem(c.post(f"/v1/cases/{cid}/decisions", json={"labels": ["violence"], "action": "remove", "clause_ids": ["VIO-99.9"]}), 422, "unknown_clause")
        d = c.post(f"/v1/cases/{cid}/decisions", json={"labels": ["harassment", "harassment/threatening"], "action": "remove_and_report", "note": "credible"})
        assert d.status_code == 201, d.text
        assert d.json()["verdict"] in ("accepted", "edited", "overridden")
        problem(c.post(f"/v1/cases/{cid}/decisions", json={"labels": [], "action": "no_action"}), 409, "conflict")
        detail = c.get(f"/v1/cases/{cid}").json()
        assert detail["status"] == "decided" and len(detail["decisions"]) == 1 and len(detail["suggestions"]) == 2 and detail["claims"]
    with server.client("auditor") as c:
        v = c.get("/v1/audit/verify").json()
        assert v["ok"] and v["rows"] >= 5


def test_queue_filters_and_cursor(server: Server) -> None:
    with server.client("moderator") as c:
        r = c.post("/v1/cases", json={"cases": [{"caption": f"{BENIGN} #{i}"} for i in range(5)]}, headers={"Idempotency-Key": "batch-q"})
        assert r.status_code == 201
        ids = [x["id"] for x in r.json()["cases"]]
        seen, cursor = [], None
        while True:
            page = c.get("/v1/cases", params={"limit": 2, "status": "queued", **({"cursor": cursor} if cursor else {})}).json()
            seen += [x["id"] for x in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert set(ids) <= set(seen) and seen == sorted(seen)
        replay = c.post("/v1/cases", json={"cases": [{"caption": f"{BENIGN} #{i}"} for i in range(5)]}, headers={"Idempotency-Key": "batch-q"})
        assert [x["id"] for x in replay.json()["cases"]] == ids


def test_fifty_concurrent_decision_writers_lose_nothing(server: Server) -> None:
    with server.client("moderator") as c:
        ids = [x["id"] for x in c.post("/v1/cases", json={"cases": [{"caption": f"concurrency case {i} about football"} for i in range(50)]}).json()["cases"]]

    def decide(cid: int) -> int:
        with server.client("moderator") as c:
            return c.post(f"/v1/cases/{cid}/decisions", json={"labels": [], "action": "no_action", "note": f"n{cid}"}).status_code

    with cf.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(decide, ids))
    assert codes == [201] * 50
    with server.client("admin") as c:
        for cid in ids:
            d = c.get(f"/v1/cases/{cid}").json()["decisions"]
            assert len(d) == 1 and d[0]["note"] == f"n{cid}"
        assert c.get("/v1/audit/verify").json()["ok"]


def test_openai_client_round_trip(server: Server) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.keys["moderator"])
    resp = client.moderations.create(input=[HARMFUL, BENIGN])
    assert len(resp.results) == 2
    labels = server.runtime.corpus.taxonomy.label_names
    for res in resp.results:
        scores = res.category_scores.model_dump(by_alias=True)
        assert set(labels) <= set(scores) or len(scores) >= 11
        assert isinstance(res.flagged, bool)
    assert resp.results[0].flagged is True
    assert resp.results[1].flagged is False


def test_policy_endpoints_return_corpus_version(server: Server) -> None:
    with server.client("policy") as c:
        allc = c.get("/v1/policy/clauses").json()
        version = allc["corpus_version"]
        assert len(allc["clauses"]) >= 120
        one = c.get(f"/v1/policy/clauses/{allc['clauses'][0]['id']}").json()
        assert one["corpus_version"] == version
        hits = c.get("/v1/policy/search", params={"q": "someone posted my home address and phone number", "k": 3}).json()
        assert hits["corpus_version"] == version and hits["hits"][0]["clause_id"].startswith("PRV-")
        ans = c.post("/v1/policy/ask", json={"question": "Can I quote a slur when reporting that someone used it against me?"}).json()
        assert not ans["abstained"] and any(x["clause_id"].startswith("HAT-") for x in ans["citations"])
        problem(c.get("/metrics"), 403, "forbidden")


def test_policy_filters_and_search_reject_bad_parameters(server: Server) -> None:
    with server.client("policy") as c:
        areas = list(server.runtime.corpus.taxonomy.areas)
        body = problem(c.get("/v1/policy/clauses", params={"area": "privcy"}), 422, "unknown_area")
        assert "'privcy'" in body["detail"] and "did you mean privacy" in body["detail"] and all(a in body["detail"] for a in areas)
        problem(c.get("/v1/policy/clauses", params={"area": ""}), 422, "unknown_area")
        privacy = c.get("/v1/policy/clauses", params={"area": "privacy"}).json()["clauses"]
        assert privacy and {x["area"] for x in privacy} == {"privacy"}
        problem(c.get("/v1/policy/clauses", params={"label": "hateful"}), 422, "unknown_label")
        body = problem(c.get("/v1/policy/search", params={"q": "doxxing", "k": 0}), 422, "validation_error")
        assert body["detail"].startswith("query.k:")
        problem(c.get("/v1/policy/search", params={"q": "doxxing", "k": 51}), 422, "validation_error")
        problem(c.get("/v1/policy/search", params={"q": "   "}), 422, "empty_text")


def test_metrics_exposes_counters(server: Server) -> None:
    problem(httpx.get(server.url + "/metrics"), 401, "unauthorized")
    with server.client("auditor") as c:
        body = c.get("/metrics").text
        assert "copilot_request_seconds_bucket" in body and "copilot_suggestions_total" in body and "copilot_decisions_total" in body


def test_concurrent_suggests_share_classifier_and_embedder_passes(server: Server) -> None:
    import asyncio
    import re

    def totals() -> dict[str, tuple[float, float]]:
        with server.client("auditor") as c:
            body = c.get("/metrics").text
        out = {}
        for model in ("classifier", "embedder"):
            s = re.search(rf'copilot_microbatch_size_sum{{model="{model}"}} (\S+)', body)
            n = re.search(rf'copilot_microbatch_size_count{{model="{model}"}} (\S+)', body)
            out[model] = (float(s.group(1)) if s else 0.0, float(n.group(1)) if n else 0.0)
        return out

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.keys['moderator']}"}, timeout=120) as c:
            rs = await asyncio.gather(*(c.post("/v1/suggest", json={"case": {"caption": f"dm me for the menu, fast delivery #{i}"}, "mode": "fast"})
                                        for i in range(n)))
        return [r.status_code for r in rs]

    before = totals()
    assert asyncio.run(burst(24)) == [200] * 24
    after = totals()
    for model in ("classifier", "embedder"):
        texts, passes = after[model][0] - before[model][0], after[model][1] - before[model][1]
        # every text went through the shared pass, in fewer passes than requests (24 arrive within the 4 ms window)
        assert texts == 24 and 1 <= passes < 24, (model, texts, passes)
