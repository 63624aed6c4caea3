"""Pieces of the media path that need no model: offsets to seconds, which lines are evidence candidates, the upload
store's limits and the trusted-path guard. (The extraction itself is tested on real clips in tests/integration.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.errors import Forbidden, MediaTooLarge
from copilot.evidence import timed_lines
from copilot.media.jobs import store_stream, trusted_path
from copilot.schema import Case, EvidenceSpan, TimedLine
from copilot.timecode import seconds_for, with_time

LINES = [TimedLine(text="hello there", start_s=0.5, end_s=1.8), TimedLine(text="I will hurt you", start_s=2.0, end_s=3.4),
         TimedLine(text="bye now", start_s=6.0, end_s=7.0)]


def media_case(**kw: object) -> Case:
    return Case(transcript="\n".join(line.text for line in LINES), transcript_timing=LINES, **kw)  # type: ignore[arg-type]


def test_offsets_map_to_the_seconds_of_their_lines() -> None:
    case = media_case()
    start = case.transcript.index("hurt")  # type: ignore[union-attr]
    assert seconds_for(case, "transcript", start, start + 4) == (2.0, 3.4)
    assert seconds_for(case, "transcript", 0, len(case.transcript or "")) == (0.5, 7.0)  # a quote over lines spans them
    assert seconds_for(case, "caption", 0, 3) is None  # untimed field


def test_edited_transcript_falls_back_to_finding_the_quote() -> None:
    case = media_case().model_copy(update={"transcript": "[edited by moderator]\nI will hurt you"})
    start = case.transcript.index("I will")  # type: ignore[union-attr]
    assert seconds_for(case, "transcript", start, start + 15) == (2.0, 3.4)
    span = with_time(case, EvidenceSpan(field="transcript", start=0, end=21, quote="[edited by moderator]"))
    assert span.start_s is None  # text no line contains gets no invented time


def test_timed_lines_are_offered_only_where_text_and_timing_agree() -> None:
    lines = timed_lines(media_case())
    assert [(f, s, e, t) for f, s, e, t, *_ in lines] == [("transcript", 0, 11, "hello there"), ("transcript", 12, 27, "I will hurt you"),
                                                         ("transcript", 28, 35, "bye now")]
    case = media_case()
    for field, start, end, text, *_ in lines:
        assert case.field_text(field)[start:end] == text
    assert timed_lines(media_case().model_copy(update={"transcript": "rewritten"})) == []


def test_upload_over_the_limit_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    chunks = (b"x" * 1000 for _ in range(5))
    with pytest.raises(MediaTooLarge):
        store_stream(tmp_path, chunks, "big.mp4", "video/mp4", max_bytes=3000)
    assert list(tmp_path.iterdir()) == []
    stored = store_stream(tmp_path, iter([b"abc"]), "../../evil name.MP4", "video/mp4", max_bytes=3000)
    assert stored.path.parent == tmp_path and stored.path.name == f"{stored.sha256}.mp4"  # the client's name never makes a path
    weird = store_stream(tmp_path, iter([b"abcd"]), "clip.exe", "", max_bytes=3000)
    assert weird.path.suffix == ".bin"


def test_a_failed_check_keeps_nothing(tmp_path: Path) -> None:
    def reject(_: Path) -> None:
        raise MediaTooLarge("too long")

    with pytest.raises(MediaTooLarge):
        store_stream(tmp_path, iter([b"abc"]), "a.mp4", "", 3000, check=reject)
    assert list(tmp_path.iterdir()) == []


def test_trusted_paths_stay_inside_their_roots(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (root / "link.mp4").symlink_to(tmp_path / "secret.txt")
    assert trusted_path(str(root / "clip.mp4"), [root]) == (root / "clip.mp4").resolve()
    with pytest.raises(Forbidden, match="off"):
        trusted_path(str(root / "clip.mp4"), [])
    for sneaky in (str(root / ".." / "secret.txt"), str(root / "link.mp4"), "/etc/passwd"):
        with pytest.raises(Forbidden, match="outside"):
            trusted_path(sneaky, [root])


def test_transcript_lines_end_at_sentences_pauses_and_a_length_cap() -> None:
    from copilot.media.asr import LINE_MAX_S, split_by_words

    words = [(" I", 0.0, 0.2), (" will", 0.2, 0.4), (" hurt", 0.4, 0.6), (" you.", 0.6, 0.9), (" Anyway", 1.0, 1.3), (" the", 1.3, 1.4),
             (" weather", 1.4, 1.8), (" is", 3.0, 3.2), (" nice", 3.2, 3.5)]  # a 1.2 s pause before "is"
    lines = split_by_words(words)
    assert [(x.text, x.start_s, x.end_s) for x in lines] == [("I will hurt you.", 0.0, 0.9), ("Anyway the weather", 1.0, 1.8),
                                                            ("is nice", 3.0, 3.5)]
    run_on = [(f" w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(40)]  # 20 s of speech, no punctuation, no pauses
    lines = split_by_words(run_on)
    assert len(lines) >= 3 and all(x.end_s - x.start_s <= LINE_MAX_S for x in lines)
    assert " ".join(x.text for x in lines) == " ".join(w.strip() for w, _, _ in run_on)  # nothing lost or repeated
