"""On-screen text: frames sampled by an ffmpeg child (grayscale, fixed size, streamed as raw bytes), read by Tesseract
children, lines de-duplicated across frames and given the time span they are visible.

Why grayscale and a white mask: Tesseract returns nothing on many colour frames, and captions drawn in white over a
busy picture read better once near-white pixels are turned into black text on white (RECIPES.md). The mask pass runs
only for frames where the plain pass found no confident line. A frame that looks like the previous one (mean absolute
difference of an 8x-downsampled copy) reuses its result: most short videos hold a caption for seconds.
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

from copilot.errors import CorruptMedia, MediaTimeout
from copilot.media.tools import MediaInfo, child_env_single_thread, run, scrub
from copilot.schema import TimedLine

MAX_WIDTH = 960
WORD_MIN_CONF = 50.0
LINE_MIN_CONF = 65.0
SAME_FRAME_DIFF = 2.0  # mean absolute difference (0-255) below which a frame is "the same picture"
SAME_LINE_RATIO = 0.8  # difflib ratio above which two readings are the same line (OCR noise differs frame to frame)
WHITE = 200


@dataclass
class OcrLine:
    text: str
    conf: float


@dataclass
class _Track:
    key: str
    best: OcrLine
    start_s: float
    end_s: float
    seen_at: int = 0


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
    assert info.width and info.height
    w = min(MAX_WIDTH, info.width) // 2 * 2
    h = max(2, round(info.height * w / info.width) // 2 * 2)
    return w, h


def _frames(path: Path, info: MediaInfo, fps: float, timeout_s: float):  # type: ignore[no-untyped-def]
    """Yield (index, gray frame) from an ffmpeg child, killed when it runs past timeout_s."""
    w, h = frame_size(info)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-an", "-vf", f"fps={fps},scale={w}:{h},format=gray",
           "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    errfile = tempfile.TemporaryFile()  # not a pipe: a decoder complaining about every frame would fill it and stall
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    size = w * h
    i = 0
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield i, np.frombuffer(buf, dtype=np.uint8).reshape(h, w)
            i += 1
        proc.wait()
    finally:
        timed_out = not timer.is_alive() and proc.returncode not in (0, None)
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errfile.seek(0)
        errors = errfile.read().decode(errors="replace")
        errfile.close()
    if timed_out:
        raise MediaTimeout(f"ffmpeg (frame sampling) took longer than {timeout_s:.0f} s (COPILOT_MEDIA_TOOL_TIMEOUT_S) and was stopped")
    if proc.returncode != 0 and i == 0:
        err = scrub(errors, cmd).strip().splitlines()
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
    return frame[::8, ::8].astype(np.int16)


def extract_text(path: Path, info: MediaInfo, fps: float, max_frames: int, timeout_s: float) -> OcrResult:
    t0 = time.perf_counter()
    if not info.video_codec:
        return OcrResult([], 0, 0, 0.0, ["no video stream: no on-screen text"])
    fps = min(fps, max_frames / max(info.duration_s, 1e-3))
    step = 1.0 / fps
    open_tracks: list[_Track] = []
    done: list[_Track] = []
    prev_thumb: np.ndarray | None = None
    prev_lines: list[OcrLine] = []
    frames = read = 0
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "frame.pgm"
        for i, frame in _frames(path, info, fps, timeout_s):
            frames += 1
            thumb = _thumb(frame)
            if prev_thumb is not None and float(np.abs(thumb - prev_thumb).mean()) < SAME_FRAME_DIFF:
                lines = prev_lines
            else:
                if time.monotonic() > deadline:
                    raise MediaTimeout(f"on-screen text reading took longer than {timeout_s:.0f} s (COPILOT_MEDIA_TOOL_TIMEOUT_S)")
                read += 1
                _write_pgm(frame, img)
                lines = read_lines(img, timeout_s)
                if not lines and (frame > WHITE).mean() > 0.001:
                    _write_pgm(np.where(frame > WHITE, 0, 255).astype(np.uint8), img)
                    lines = read_lines(img, timeout_s)
            prev_thumb, prev_lines = thumb, lines
            t = i * step
            still: list[_Track] = []
            for line in lines:
                key = _key(line.text)
                match = next((tr for tr in open_tracks if tr not in still and difflib.SequenceMatcher(None, tr.key, key).ratio() >= SAME_LINE_RATIO), None)
                if match is None:
                    match = _Track(key, line, t, t + step, seen_at=i)
                elif line.conf > match.best.conf:
                    match.best = line
                match.end_s = min(t + step, info.duration_s)
                still.append(match)
            done += [tr for tr in open_tracks if tr not in still]
            open_tracks = still
    done += open_tracks
    done.sort(key=lambda tr: (tr.start_s, tr.seen_at))
    timed = [TimedLine(text=tr.best.text, start_s=round(tr.start_s, 2), end_s=round(max(tr.end_s, tr.start_s), 2)) for tr in done]
    return OcrResult(timed, frames, read, time.perf_counter() - t0)
