"""On-screen text: frames sampled by an ffmpeg child (grayscale, fixed size, streamed as raw bytes), read by Tesseract
children, lines de-duplicated across frames and given the time span they are visible.

Why grayscale and a white mask: Tesseract returns nothing on many colour frames, and captions drawn in white over a
busy picture read better once near-white pixels are turned into black text on white (RECIPES.md). The mask pass runs
only for frames where the plain pass found no confident line. A frame that looks like the last one read (no more than
CHANGED_SHARE of a 2x-subsampled copy changed by a visible step) reuses its result: most short videos hold a caption
for seconds, and a small caption appearing on a still picture still counts as a change.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copilot.errors import CopilotError, CorruptMedia
from copilot.media.tools import MediaInfo, child_env_single_thread, run, scrub
from copilot.schema import TimedLine

MAX_WIDTH = 960
WORD_MIN_CONF = 50.0
LINE_MIN_CONF = 65.0
CHANGED_STEP = 24  # grey levels: more than H.264 noise on a still picture
CHANGED_SHARE = 0.0005  # share of thumbnail pixels that must change for a frame to be read again
GAP_FRAMES = 2  # a line missed by this many frames in a row still continues its track
MAX_LINES = 500
SAME_LINE_RATIO = 0.8  # difflib ratio above which two readings are the same line (OCR noise differs frame to frame)
WHITE = 200


@dataclass
class OcrLine:
    text: str
    conf: float


@dataclass(eq=False)
class _Track:
    key: str
    best: OcrLine
    start_s: float
    end_s: float
    seen_at: int = 0
    last_seen: int = 0


@dataclass
class OcrResult:
    lines: list[TimedLine]
    frames: int
    frames_read: int  # frames that went through Tesseract (the rest matched the previous picture)
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def frame_size(info: MediaInfo) -> tuple[int, int]:
    """Even sizes, at most MAX_WIDTH wide and MAX_WIDTH tall (probe refused degenerate sizes already)."""
    assert info.width and info.height
    scale = min(1.0, MAX_WIDTH / info.width, MAX_WIDTH / info.height)
    return max(2, round(info.width * scale) // 2 * 2), max(2, round(info.height * scale) // 2 * 2)


class _Frames:
    """(index, gray frame) from an ffmpeg child, killed when it runs past timeout_s; `stopped` says whether it was."""

    def __init__(self, path: Path, info: MediaInfo, fps: float, timeout_s: float) -> None:
        self.w, self.h = frame_size(info)
        self.cmd = ["ffmpeg", "-nostdin", "-v", "error", *info.input_args(path), "-an", "-vf",
                    f"fps={fps},scale={self.w}:{self.h},format=gray", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
        self.timeout_s = timeout_s
        self.killed = threading.Event()
        self.count = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        errfile = tempfile.TemporaryFile()  # not a pipe: a decoder complaining about every frame would fill it and stall
        proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL)

        def kill() -> None:
            self.killed.set()
            proc.kill()

        timer = threading.Timer(self.timeout_s, kill)
        timer.start()
        size = self.w * self.h
        try:
            assert proc.stdout is not None
            while True:
                buf = proc.stdout.read(size)
                if len(buf) < size:
                    break
                yield self.count, np.frombuffer(buf, dtype=np.uint8).reshape(self.h, self.w)
                self.count += 1
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errfile.seek(0)
            errors = errfile.read().decode(errors="replace")
            errfile.close()
        if proc.returncode != 0 and self.count == 0 and not self.killed.is_set():
            err = scrub(errors, self.cmd).strip().splitlines()
            raise CorruptMedia(f"ffmpeg could not decode video frames: {err[-1] if err else proc.returncode}")


def _write_pgm(frame: np.ndarray, path: Path) -> None:
    h, w = frame.shape
    path.write_bytes(f"P5 {w} {h} 255\n".encode() + frame.tobytes())


def read_lines(image: Path, timeout_s: float) -> list[OcrLine]:
    """Tesseract (one thread) on one image; words grouped into its lines, low-confidence words and lines dropped."""
    proc = run(["tesseract", str(image), "stdout", "--psm", "3", "-l", "eng", "tsv"], timeout_s, "tesseract", env=child_env_single_thread())
    lines: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
    for row in proc.stdout.decode(errors="replace").splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text, conf = cols[11].strip(), float(cols[10])
        if text and conf >= WORD_MIN_CONF:
            lines.setdefault((cols[2], cols[3], cols[4]), []).append((text, conf))
    out = []
    for words in lines.values():
        text = " ".join(w for w, _ in words)
        conf = sum(c for _, c in words) / len(words)
        if conf >= LINE_MIN_CONF and sum(ch.isalnum() for ch in text) >= 3:
            out.append(OcrLine(text, round(conf, 1)))
    return out


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _thumb(frame: np.ndarray) -> np.ndarray:
    return frame[::2, ::2].astype(np.int16)


def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two thumbnails differ by more than codec noise: a share of pixels changed by a visible step. A mean over
    the frame would miss a small caption appearing on a still picture."""
    return bool((np.abs(a - b) > CHANGED_STEP).mean() > CHANGED_SHARE)


def extract_text(path: Path, info: MediaInfo, fps: float, max_frames: int, timeout_s: float) -> OcrResult:
    """On-screen lines with times. Never fails the case for what it could not read: a frame Tesseract fails on is
    skipped, and past the time limit the lines read so far are kept, each with a note."""
    t0 = time.perf_counter()
    if not info.video_codec:
        return OcrResult([], 0, 0, 0.0, ["no video stream: no on-screen text"])
    fps = min(fps, max_frames / max(info.duration_s, 1e-3))
    step = 1.0 / fps
    tracks: list[_Track] = []
    last_thumb: np.ndarray | None = None  # of the last frame Tesseract read
    last_lines: list[OcrLine] = []
    read = failed = 0
    notes: list[str] = []
    deadline = time.monotonic() + timeout_s
    frames = _Frames(path, info, fps, timeout_s)
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "frame.pgm"
        for i, frame in frames:
            thumb = _thumb(frame)
            if last_thumb is not None and not _changed(thumb, last_thumb):
                lines = last_lines
            else:
                if time.monotonic() > deadline:
                    notes.append(f"on-screen text read up to {i * step:.0f} s of {info.duration_s:.0f} s (time limit "
                                 "COPILOT_MEDIA_TOOL_TIMEOUT_S)")
                    break
                read += 1
                try:
                    lines = _read_frame(frame, img, timeout_s)
                except CopilotError:
                    failed += 1
                    lines = []
                last_thumb, last_lines = thumb, lines
            _track(tracks, lines, i, step, info.duration_s)
            if len(tracks) > MAX_LINES:
                notes.append(f"more than {MAX_LINES} distinct on-screen lines: the rest were not kept")
                break
    if frames.killed.is_set():
        notes.append(f"frame sampling stopped after {frames.count} frames (time limit COPILOT_MEDIA_TOOL_TIMEOUT_S)")
    if failed:
        notes.append(f"{failed} frame(s) could not be read by Tesseract")
    tracks.sort(key=lambda tr: (tr.start_s, tr.seen_at))
    timed = [TimedLine(text=tr.best.text, start_s=round(tr.start_s, 2), end_s=round(max(tr.end_s, tr.start_s), 2)) for tr in tracks[:MAX_LINES]]
    return OcrResult(timed, frames.count, read, time.perf_counter() - t0, notes)


def _read_frame(frame: np.ndarray, img: Path, timeout_s: float) -> list[OcrLine]:
    _write_pgm(frame, img)
    lines = read_lines(img, timeout_s)
    if not lines and (frame > WHITE).mean() > 0.001:  # white captions on a busy picture: read the white pixels alone
        _write_pgm(np.where(frame > WHITE, 0, 255).astype(np.uint8), img)
        lines = read_lines(img, timeout_s)
    return lines


def _track(tracks: list[_Track], lines: list[OcrLine], i: int, step: float, duration: float) -> None:
    """Extend the track each line continues (same text, allowing OCR noise, seen within the last GAP_FRAMES frames: a
    frame that misses a line does not split it in two), or start a new one."""
    t = i * step
    taken: set[int] = set()
    for line in lines:
        key = _key(line.text)
        match = None
        for k, tr in enumerate(tracks):
            if k not in taken and i - tr.last_seen <= GAP_FRAMES and difflib.SequenceMatcher(None, tr.key, key).ratio() >= SAME_LINE_RATIO:
                match = k
                break
        if match is None:
            tracks.append(_Track(key, line, t, min(t + step, duration), seen_at=i, last_seen=i))
            taken.add(len(tracks) - 1)
            continue
        tr = tracks[match]
        taken.add(match)
        if line.conf > tr.best.conf:
            tr.best = line
        tr.end_s, tr.last_seen = min(t + step, duration), i
