"""The web console in a real browser (Debian's Chromium driven by Playwright) against the real service over loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, start_server

from copilot.config import Settings
from copilot.runtime import Runtime

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
THREAT = "I know where you live, tonight I'm coming to your house to hurt you and your kids"
CLAUSE_ID = re.compile(r"^[A-Z]{2,4}-\d+\.\d+$")
TIMEOUT_MS = 60_000  # a suggestion runs the classifier and retrieval; the first one may warm caches

try:
    from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

    # The suggestion behind each click runs real models on a 2-core machine that may be busy: allow slow steps.
    expect.set_options(timeout=TIMEOUT_MS)
except ImportError:  # pragma: no cover - the skip below says what is missing
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Browser, server: Server) -> Iterator[Page]:
    yield from _page(browser, server)


def _page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # the machine is offline and the console must not need the network: refuse anything that is not the service
    def refuse(route: Route) -> None:
        errors.append("external request: " + route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!" + re.escape(server.url) + r").*"), refuse)
    yield pg
    context.close()
    assert not errors, errors


def queue_row(page: Page, case_id: int):  # type: ignore[no-untyped-def]
    """The case's queue row, paging on with "load more" when other tests filled the first page (oldest first)."""
    row = page.locator(f'[data-testid="queue-row"][data-case-id="{case_id}"]')
    expect(page.get_by_test_id("queue-row").first).to_be_visible()
    for _ in range(50):
        if row.count() or not page.get_by_test_id("load-more").is_visible():
            break
        n = page.get_by_test_id("queue-row").count()
        page.get_by_test_id("load-more").click()
        expect(page.get_by_test_id("queue-row")).not_to_have_count(n)
    return row


def use_key(page: Page, key: str) -> None:
    page.get_by_test_id("api-key-input").fill(key)
    page.get_by_test_id("api-key-save").click()


def test_moderator_works_a_case_end_to_end(page: Page, server: Server, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    expect(page).to_have_title("Moderation Copilot")
    # status line from /readyz: one chip per component, no key needed
    for name in ("corpus", "index", "classifier", "database"):
        expect(page.get_by_test_id(f"status-chip-{name}")).to_have_attribute("data-status", "ready")
    expect(page.get_by_test_id("status-chip-llm")).to_be_visible()

    use_key(page, server.keys["moderator"])
    expect(page.get_by_test_id("auth-state")).to_have_text("key accepted")
    expect(page.get_by_test_id("error-banner")).to_be_hidden()

    # create a case through the form
    page.get_by_test_id("new-caption").fill(THREAT)
    page.get_by_test_id("new-content-type").select_option("comment")
    page.get_by_test_id("new-report-reason").fill("threat")
    page.get_by_test_id("new-submit").click()
    created = page.get_by_test_id("new-case-id")
    expect(created).to_be_visible()
    case_id = int(created.get_attribute("data-case-id") or "0")
    assert case_id > 0
    row = queue_row(page, case_id)  # it shows up in the queue
    expect(row).to_be_visible()
    expect(row.get_by_test_id("queue-preview")).to_contain_text("I know where you live")
    page.screenshot(path=str(tmp_path / "console-queue.png"), full_page=True)

    # open it: fields, suggestion with cited clauses, score bars
    page.get_by_test_id("new-case-open").click()
    expect(page.get_by_test_id("panel-case")).to_be_visible()
    expect(page.get_by_test_id("case-id")).to_have_text(f"#{case_id}")
    expect(page.get_by_test_id("case-field-caption")).to_contain_text("tonight I'm coming to your house")
    citations = page.get_by_test_id("citation")
    expect(citations.first).to_be_visible()
    clause_ids = [c.get_attribute("data-clause-id") or "" for c in citations.all()]
    assert clause_ids and all(CLAUSE_ID.match(c) for c in clause_ids), clause_ids
    expect(page.get_by_test_id("score-row")).to_have_count(17)
    expect(page.get_by_test_id("rationale")).not_to_be_empty()
    expect(page.get_by_test_id("corpus-version")).not_to_be_empty()
    expect(page.get_by_test_id("model-ids")).to_contain_text("classifier")

    # clicking a citation shows the clause's rule and exceptions
    citations.first.get_by_test_id("citation-link").click()
    clause = page.get_by_test_id("clause-detail")
    expect(clause.get_by_test_id("clause-id")).to_have_text(clause_ids[0])
    expect(clause.get_by_test_id("clause-rule")).not_to_be_empty()
    expect(clause.get_by_test_id("clause-exceptions")).to_be_visible()

    # no LLM on this service: the streamed full suggestion is refused with the service's reason, the stored one stays
    page.get_by_test_id("full-suggest").click()
    banner = page.get_by_test_id("error-banner")
    expect(banner).to_have_attribute("data-status", "409")
    expect(banner).to_contain_text("COPILOT_LLM_BACKEND=none")
    expect(page.get_by_test_id("suggestion")).to_have_attribute("data-streaming", "false")
    expect(page.get_by_test_id("citation").first).to_be_visible()
    page.get_by_test_id("error-close").click()

    # claim, then decide: the labels are pre-filled from the suggestion; make sure the threat label is on
    page.get_by_test_id("claim").click()
    expect(page.get_by_test_id("case-status")).to_have_text("claimed")
    page.get_by_test_id("decision-label-harassment/threatening").check()
    page.get_by_test_id("decision-action").select_option("remove_and_report")
    page.get_by_test_id("decision-note").fill("credible threat against a family")
    page.get_by_test_id("decision-submit").click()
    expect(page.get_by_test_id("decision-result")).to_contain_text("recorded")
    verdict = page.get_by_test_id("decision-result-verdict").inner_text()
    assert verdict in ("accepted", "edited", "overridden")
    expect(page.get_by_test_id("decision-item")).to_have_count(1)
    expect(page.get_by_test_id("case-status")).to_have_text("decided")
    page.screenshot(path=str(tmp_path / "console-case.png"), full_page=True)

    # the decision is stored, as the API tells it
    with server.client("moderator") as c:
        detail = c.get(f"/v1/cases/{case_id}").json()
    assert detail["status"] == "decided"
    [decision] = detail["decisions"]
    assert "harassment/threatening" in decision["labels"] and decision["action"] == "remove_and_report"
    assert decision["note"] == "credible threat against a family" and decision["verdict"] == verdict

    # policy search and a clause from a hit
    page.get_by_test_id("tab-policy").click()
    page.get_by_test_id("policy-search-input").fill("posting someone's home address")
    page.get_by_test_id("policy-search-submit").click()
    hits = page.get_by_test_id("search-hit")
    expect(hits).to_have_count(5)
    hit_id = hits.first.get_attribute("data-clause-id") or ""
    assert CLAUSE_ID.match(hit_id), hit_id
    hits.first.click()
    expect(page.get_by_test_id("policy-clause").get_by_test_id("clause-id")).to_have_text(hit_id)
    page.get_by_test_id("ask-input").fill("Can I post someone's home address?")
    page.get_by_test_id("ask-submit").click()
    expect(page.get_by_test_id("ask-answer")).not_to_be_empty()
    expect(page.get_by_test_id("ask-result")).to_have_attribute("data-abstained", re.compile("true|false"))
    expect(page.get_by_test_id("ask-fallback")).to_have_count(1)
    expect(page.get_by_test_id("ask-fallback")).to_be_hidden()  # no LLM configured here: nothing failed
    page.screenshot(path=str(tmp_path / "console-policy.png"), full_page=True)

    # keyboard: 1 goes to the queue, j selects the first row, Enter opens it
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    expect(page.get_by_test_id("panel-queue")).to_be_visible()
    page.keyboard.press("j")
    first_id = page.get_by_test_id("queue-row").first.get_attribute("data-case-id")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("panel-case")).to_be_visible()
    expect(page.get_by_test_id("case-id")).to_have_text(f"#{first_id}")

    # a wrong key gets the service's 401 detail
    use_key(page, "mc_wrong_key")
    banner = page.get_by_test_id("error-banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-status", "401")
    expect(banner).to_contain_text("the API key is unknown or revoked")
    expect(page.get_by_test_id("auth-state")).to_have_text("key rejected")
    page.screenshot(path=str(tmp_path / "console-401.png"), full_page=True)
    print(f"screenshots in {tmp_path}")


@pytest.fixture(scope="module")
def llm_server(server: Server, settings: Settings) -> Iterator[Server]:
    """The service with the small SmolLM2 GGUF as its LLM (scripts/install-llm.sh), sharing the session's components."""
    pytest.importorskip("llama_cpp", reason="run scripts/install-llm.sh")
    from copilot.llm.models import SMOLLM

    path = SMOLLM.default_path(Settings().data_dir)
    if not path.is_file():
        pytest.skip(f"{path} is missing: run scripts/install-llm.sh")
    rt = Runtime(settings.model_copy(update={"llm_backend": "llamacpp", "llm_model_path": path, "llm_timeout_s": 120.0,
                                             "llm_max_tokens": 160, "llm_threads": 1, "request_timeout_s": 180.0}))
    for name in ("corpus", "embedder", "index", "classifier", "database"):
        rt._values[name] = getattr(server.runtime, name)
    url, srv, thread = start_server(rt.settings, rt)
    deadline = time.time() + 180
    while time.time() < deadline:  # wait until the prefix warm-up is done (or failed)
        if {c["name"]: c["status"] for c in httpx.get(url + "/readyz").json()["components"]}["llm_prefix"] != "loading":
            break
        time.sleep(0.5)
    yield Server(url, rt, server.keys)
    srv.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


@pytest.fixture()
def llm_page(browser: Browser, llm_server: Server) -> Iterator[Page]:
    yield from _page(browser, llm_server)


def test_full_suggestion_streams_into_the_case_view(llm_page: Page, llm_server: Server, tmp_path: Path) -> None:
    page = llm_page
    with llm_server.client("moderator") as c:
        case_id = c.post("/v1/cases", json={"caption": "You people are vermin and should be driven out of this town. (console stream)"}).json()["cases"][0]["id"]
    page.goto(llm_server.url + "/")
    expect(page.get_by_test_id("status-chip-llm_prefix")).to_have_attribute("data-status", "ready")
    use_key(page, llm_server.keys["moderator"])
    page.get_by_test_id("tab-case").click()
    page.get_by_test_id("case-goto").fill(str(case_id))
    page.get_by_test_id("case-goto-submit").click()
    expect(page.get_by_test_id("suggestion-which")).to_contain_text("#")
    page.get_by_test_id("full-suggest").click()
    card = page.get_by_test_id("suggestion")
    # the rationale arrived in pieces, then the stored full suggestion replaced the streamed text
    expect(card).to_have_attribute("data-streaming", "false")
    expect(page.get_by_test_id("suggestion-which")).to_contain_text("latest of 2")
    chunks = int(page.get_by_test_id("rationale").get_attribute("data-chunks") or "0")
    assert chunks > 0
    expect(page.get_by_test_id("rationale")).not_to_be_empty()
    expect(page.get_by_test_id("model-ids")).to_contain_text("smollm2")
    expect(page.get_by_test_id("suggestion-path")).to_contain_text(re.compile(r"full|fell back"))
    expect(page.get_by_test_id("error-banner")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "console-stream.png"), full_page=True)
    with llm_server.client("moderator") as c:
        assert len(c.get(f"/v1/cases/{case_id}").json()["suggestions"]) == 2
