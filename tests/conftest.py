"""Real components for tests: the bundled corpus, the packaged MiniLM embedder, the shipped classifier, a real SQLite
file in a temp dir, and the real app served by uvicorn on a loopback port. Only a remote LLM would be faked."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from copilot.config import PROJECT_ROOT, Settings
from copilot.policy import load_corpus
from copilot.policy.corpus import Corpus
from copilot.runtime import Runtime


def require_llama_cpp() -> None:
    """Skip a local-LLM test where llama-cpp-python is not installed; under CI it must be, so the test fails instead."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("llama_cpp is not importable: run scripts/install-llm.sh (under CI=true this test fails instead)")


def assert_final_rationale_matches_stream(rt: Runtime, streamed: str, rationale: str, case_text: str) -> None:
    """A full-path suggestion's rationale continues what was streamed, unless the streamed reasoning repeated the
    prompt (SmolLM2 copies examples): then the repair's or the stated no-reasoning text replaces it (the console shows
    the final rationale), and that must not repeat the prompt."""
    from copilot.llm.chain import NO_CASE_REASONING, suggest_echo_lines
    from copilot.llm.checks import echoes

    lines = suggest_echo_lines()  # what the chain checks against
    streamed = streamed.strip()
    if not streamed:  # the model may close the reasoning string at once
        assert rationale.startswith("(no reasoning given)") or rationale.startswith(NO_CASE_REASONING), rationale
    elif echoes(streamed, lines, case_text):
        assert rationale.startswith(NO_CASE_REASONING) or not echoes(rationale.split(" Note:")[0].split(" Escalated:")[0], lines, case_text), rationale
    else:
        assert rationale.startswith(streamed[:20]), (streamed, rationale)


def media_problems(settings: Settings | None = None) -> list[str]:
    """What keeps video and audio cases from working here: missing Debian tools or speech model (empty when ready)."""
    import shutil

    from copilot.errors import ComponentMissing
    from copilot.media import models as media_models

    problems = [f"{t} not on PATH" for t in ("ffmpeg", "ffprobe", "tesseract", "espeak-ng") if shutil.which(t) is None]
    try:
        media_models.verify((settings or Settings()).whisper_path)
    except ComponentMissing as exc:
        problems.append(exc.detail)
    return problems


def require_media(settings: Settings | None = None) -> None:
    """Skip a media test where ffmpeg / Tesseract / espeak-ng or the speech model are missing; under CI fail instead."""
    problems = media_problems(settings)
    if problems:
        if os.environ.get("CI"):
            raise RuntimeError("media test prerequisites missing: " + "; ".join(problems))
        pytest.skip("; ".join(problems) + " (scripts/system-deps.sh and scripts/install-media.sh; under CI=true this fails instead)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("copilot")


@pytest.fixture(scope="session")
def settings(session_dir: Path) -> Settings:
    # The speech model is installed once per checkout under the default data dir (scripts/install-media.sh), not per test.
    return Settings(env="test", data_dir=session_dir / "data", log_level="WARNING", whisper_dir=Settings().whisper_path)


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Runtime:
    return Runtime(settings)


@dataclass
class Server:
    url: str
    runtime: Runtime
    keys: dict[str, str]

    def client(self, role: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def start_server(settings: Settings, runtime: Runtime | None = None, warm: bool = True) -> tuple[str, object, threading.Thread]:
    import uvicorn

    from api.app import create_app

    port = free_port()
    app = create_app(settings, runtime, warm=warm)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    # 30 s was too short once when another test run shared the 2 cores: the session-wide server then failed for every
    # test that uses it. Starting is seconds when the machine is free; the wait only matters when it is not.
    deadline = time.time() + 120
    while time.time() < deadline:
        if not thread.is_alive():
            raise RuntimeError("server thread exited during start-up (see the log above)")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise RuntimeError("server did not start within 120 s")
    return url, server, thread


@pytest.fixture(scope="session")
def server(settings: Settings, runtime: Runtime) -> Iterator[Server]:
    from copilot.store import keys

    url, srv, thread = start_server(settings, runtime)
    deadline = time.time() + 240
    while time.time() < deadline:
        if httpx.get(url + "/readyz", timeout=5).status_code == 200:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("service never became ready: " + httpx.get(url + "/readyz").text)
    made = {}
    with runtime.database.session() as s:
        for role in ("moderator", "policy", "auditor", "admin"):
            made[role] = keys.create_key(s, role, f"test-{role}")
    yield Server(url, runtime, made)
    srv.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return PROJECT_ROOT / "policy_corpus"


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The bundled corpus, loaded once (read-only: tests that edit a corpus copy it to a temp folder)."""
    return load_corpus(Settings().corpus_dir)
