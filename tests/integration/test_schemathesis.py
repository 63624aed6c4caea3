"""Property-based requests generated from our OpenAPI schema against the real server: no input may produce a 5xx,
and every error is a problem-details body.

Runs as the admin role so every operation is reachable; examples per operation are bounded to keep CI time sane.
"""

from __future__ import annotations

import pytest
from conftest import Server
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow
SKIP = {("POST", "/v1/eval/runs")}  # each example would start a background evaluation; covered in test_eval


def test_no_server_errors(server: Server) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {server.keys['admin']}"}
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=server.url, headers=headers, timeout=60)
            ct = response.headers.get("content-type") or [""]
            ct = ct[0] if isinstance(ct, list) else ct  # schemathesis keeps each header as a list
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
            elif response.status_code >= 400 and not ct.startswith("application/problem+json"):
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} without problem+json")

        check()
        checked += 1
    assert checked >= 15, f"only {checked} operations found in the schema"
    assert not failures, "\n".join(failures[:20])
