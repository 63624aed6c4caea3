"""Readiness reports a missing component honestly, with the reason, and answers 503."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import start_server

from copilot.config import Settings

pytestmark = pytest.mark.slow


def test_missing_classifier_makes_readyz_503_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPILOT_CLASSIFIER_DIR", str(tmp_path / "no-model"))
    settings = Settings(env="test", data_dir=tmp_path / "data")  # env overrides are read by Settings
    assert settings.classifier_path == tmp_path / "no-model"
    url, server, thread = start_server(settings)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            body = httpx.get(url + "/readyz").json()
            comps = {c["name"]: c for c in body["components"]}
            if comps["classifier"]["status"] == "missing" and comps["index"]["status"] == "ready":
                break
            time.sleep(0.5)
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503
        comps = {c["name"]: c for c in r.json()["components"]}
        assert comps["classifier"]["status"] == "missing" and "no-model" in comps["classifier"]["detail"]
        assert comps["corpus"]["status"] == "ready" and comps["database"]["status"] == "ready"
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=10)
