"""The console's video/audio flow in a real browser (Debian's Chromium driven by Playwright) against the real service:
upload a clip made here, watch it being read, see what was said and shown with its times, and play the media from the
second the evidence was said. Speech recognition runs on the real Whisper base model, so allow for slow steps."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, require_media
from test_console import _page, browser, queue_row, use_key  # noqa: F401 - the shared Chromium fixture and page setup

from copilot.config import Settings
from copilot.media.synth import ClipSpec, Shown, Spoken, make_clip

pytestmark = pytest.mark.slow

THREAT = "I will find where you live and I will hurt you."
CAPTION = "meet me after school"
TIMEOUT_MS = 60_000
MEDIA_TIMEOUT_MS = 90_000  # extraction (Whisper on 2 busy cores, Tesseract) and the fast suggestion after it

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - test_console's browser fixture skips with the reason
    pass


@pytest.fixture()
def page(browser: Browser, server: Server) -> Iterator[Page]:  # noqa: F811
    yield from _page(browser, server)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> dict[str, Path]:
    require_media(settings)
    d = tmp_path_factory.mktemp("console-clips")
    (d / "notes.txt").write_text("this is a text file, not a video\n" * 20)
    return {
        "threat": make_clip(ClipSpec(10, speech=[Spoken(THREAT, 1.0)], captions=[Shown(CAPTION, 5, 9)]), d / "clip.mp4"),
        "silent": make_clip(ClipSpec(3, video=False), d / "silent.wav"),
        "text": d / "notes.txt",
    }


def clock(seconds: float) -> str:
    """m:ss as the console writes media times."""
    t = int(seconds)
    return f"{t // 60}:{t % 60:02d}"




def upload(page: Page, path: Path, title: str | None = None) -> None:
    page.get_by_test_id("upload-file").set_input_files(path)
    if title:
        page.get_by_test_id("upload-title").fill(title)
    page.get_by_test_id("upload-submit").click()


def seeked_to(page: Page, click) -> float:  # type: ignore[no-untyped-def]
    """Click something that should seek the player; return the player's currentTime when that seek completed."""
    page.get_by_test_id("media-player").evaluate(
        "v => { window.__seeked = null; v.addEventListener('seeked', () => { window.__seeked = v.currentTime; }, { once: true }); }")
    click()
    done = page.wait_for_function("() => window.__seeked === null ? null : { t: window.__seeked }", timeout=TIMEOUT_MS)
    return float(done.json_value()["t"])


def test_moderator_uploads_a_video_and_plays_the_evidence(page: Page, server: Server, clips: dict[str, Path], tmp_path: Path) -> None:
    components = {c["name"]: c for c in httpx.get(server.url + "/readyz", timeout=10).json()["components"]}
    assert components["media"]["status"] == "ready", f"the test server's media component is not ready: {components['media']}"
    page.goto(server.url + "/")
    expect(page.get_by_test_id("status-chip-media")).to_have_attribute("data-status", "ready")
    use_key(page, server.keys["moderator"])
    expect(page.get_by_test_id("auth-state")).to_have_text("key accepted")

    # a text file is refused at once with the service's problem detail, shown under the form
    upload(page, clips["text"])
    error = page.get_by_test_id("upload-error")
    expect(error).to_have_attribute("data-status", "415")
    with server.client("moderator") as c:
        refused = c.post("/v1/cases", files={"file": ("notes.txt", clips["text"].read_bytes(), "text/plain")})
    assert refused.status_code == 415 and refused.headers["content-type"].startswith("application/problem+json")
    assert page.get_by_test_id("upload-error-detail").inner_text() == refused.json()["detail"]
    assert "notes.txt" in refused.json()["detail"] and ".upload-" not in refused.json()["detail"]  # the client's name, not ours
    expect(error).to_contain_text("not a media file")

    # the clip is accepted as processing, then followed (polled) until it is queued with its suggestion
    upload(page, clips["threat"], title="console media upload")
    created = page.get_by_test_id("upload-case-id")
    expect(created).to_be_visible()
    expect(error).to_have_count(0)
    case_id = int(created.get_attribute("data-case-id") or "0")
    assert case_id > 0
    expect(page.get_by_test_id("upload-status")).to_have_text("processing")  # from the 202; extraction takes seconds
    page.screenshot(path=str(tmp_path / "console-media-processing.png"), full_page=True)
    page.get_by_test_id("upload-open").click()
    expect(page.get_by_test_id("case-id")).to_have_text(f"#{case_id}")
    player = page.get_by_test_id("media-player")
    expect(player).to_be_visible()  # the stored file plays while it is being read
    assert player.evaluate("v => v.tagName") == "VIDEO" and player.get_attribute("src", timeout=1000).startswith("blob:")
    expect(page.get_by_test_id("evidence-seek").first).to_be_visible(timeout=MEDIA_TIMEOUT_MS)
    expect(page.get_by_test_id("case-status")).to_have_text("queued")
    expect(page.get_by_test_id("case-processing")).to_be_hidden()

    with server.client("moderator") as c:
        detail = c.get(f"/v1/cases/{case_id}").json()
    assert detail["status"] == "queued" and detail["media"]["kind"] == "video"
    evidence = detail["suggestions"][-1]["suggestion"]["evidence"]
    timed = [i for i, e in enumerate(evidence) if e["start_s"] is not None]
    assert timed, evidence

    # what was said and shown, with times
    expect(page.get_by_test_id("transcript-line").first).to_contain_text(re.compile("where you live", re.I))
    [shown] = [line for line in detail["case"]["on_screen_timing"] if "after school" in line["text"].lower()]
    assert 4.0 <= shown["start_s"] <= 6.0, shown
    onscreen = page.get_by_test_id("onscreen-line").filter(has_text=re.compile(CAPTION, re.I))
    expect(onscreen).to_have_count(1)
    expect(onscreen).to_contain_text(f"{clock(shown['start_s'])}–{clock(shown['end_s'])}")

    # the evidence's time button plays the media from the second the quote is said or shown; the quote stays as text
    ev = evidence[timed[0]]
    item = page.get_by_test_id("evidence-item").nth(timed[0])
    expect(item.get_by_test_id("evidence-quote")).to_have_text(ev["quote"])
    button = item.get_by_test_id("evidence-seek")
    expect(button).to_have_text(f"▶ {clock(ev['start_s'])}")
    at = seeked_to(page, button.click)
    assert abs(at - ev["start_s"]) < 0.5, (at, ev)
    page.wait_for_function("() => !document.querySelector('[data-testid=media-player]').paused")
    # and a transcript / on-screen line's time seeks too
    at = seeked_to(page, onscreen.get_by_test_id("onscreen-line-seek").click)
    assert abs(at - shown["start_s"]) < 0.5, (at, shown)
    page.screenshot(path=str(tmp_path / "console-media-case.png"), full_page=True)

    # a recording with nothing to read fails; the reason shows under the form, in the queue and in the case
    page.get_by_test_id("tab-queue").click()
    upload(page, clips["silent"])
    expect(page.get_by_test_id("upload-status")).to_have_text("failed", timeout=MEDIA_TIMEOUT_MS)
    failed_id = int(page.get_by_test_id("upload-case-id").get_attribute("data-case-id") or "0")
    with server.client("moderator") as c:
        reason = c.get(f"/v1/cases/{failed_id}").json()["status_detail"]
    assert reason and "no speech" in reason, reason
    expect(page.get_by_test_id("upload-status-detail")).to_have_text(reason)
    page.get_by_test_id("queue-apply").click()
    row = queue_row(page, failed_id)
    expect(row.get_by_test_id("queue-status")).to_have_text("failed")
    expect(row.get_by_test_id("queue-status-detail")).to_have_text(reason)
    row.click()
    expect(page.get_by_test_id("case-failed")).to_be_visible()
    expect(page.get_by_test_id("case-failed").get_by_test_id("case-status-detail")).to_have_text(reason)
    expect(page.get_by_test_id("claim")).to_be_disabled()
    expect(page.get_by_test_id("decision-submit")).to_be_disabled()
    expect(page.get_by_test_id("case-meta")).to_contain_text("audio")
    assert page.get_by_test_id("media-player").evaluate("a => a.tagName") == "AUDIO"  # the file still plays
    page.screenshot(path=str(tmp_path / "console-media-failed.png"), full_page=True)
    print(f"screenshots in {tmp_path}")
