"""ffprobe / ffmpeg / tesseract as child processes with time limits: a corrupt or hostile file can hang or crash a
decoder, and it must take down a child, never a worker of the service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copilot.errors import ComponentMissing, CorruptMedia, MediaTimeout, MediaTooLarge, UnsupportedMedia

TOOLS = ("ffmpeg", "ffprobe", "tesseract")


def check_tools(ocr: bool = True) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None and (ocr or t != "tesseract")]
    if missing:
        raise ComponentMissing(f"media: {', '.join(missing)} not found on PATH (Debian: apt-get install ffmpeg tesseract-ocr; "
                               "`make system-deps` does it)")


def run(cmd: list[str], timeout_s: float, what: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaTimeout(f"{what} took longer than {timeout_s:.0f} s (COPILOT_MEDIA_TOOL_TIMEOUT_S) and was stopped") from None
    if check and proc.returncode != 0:
        err = scrub(proc.stderr.decode(errors="replace"), cmd).strip().splitlines()
        raise CorruptMedia(f"{what} failed: {err[-1] if err else f'exit code {proc.returncode}'}")
    return proc


def scrub(message: str, cmd: list[str]) -> str:
    """Tool messages quote the file's path; the server's folders are none of the client's business: keep the name."""
    for arg in cmd:
        if arg.startswith("/"):
            message = message.replace(arg, Path(arg).name)
    return message


@dataclass
class MediaInfo:
    """What ffprobe says of a file, before anything is decoded."""

    format_name: str
    duration_s: float
    size_bytes: int
    audio_codec: str | None
    video_codec: str | None
    width: int | None
    height: int | None

    @property
    def kind(self) -> str:
        return "video" if self.video_codec else "audio"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# Formats ffprobe recognises that are not audio or video: images and subtitle/text formats are rejected, not decoded.
_IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "gif", "webp_pipe", "bmp_pipe", "tiff_pipe", "svg_pipe"}
_TEXT_FORMATS = {"tty", "srt", "webvtt", "ass"}  # ffmpeg reads any text file as "tty" (ANSI art)


def probe(path: Path, max_bytes: int, max_seconds: float, timeout_s: float, name: str | None = None) -> MediaInfo:
    """Check size, container, streams and duration; raise a precise error for each way a file can be unusable.
    `name` is what messages call the file (an upload's own name rather than its temporary one)."""
    size = path.stat().st_size
    if size == 0:
        raise UnsupportedMedia("the file is empty")
    if size > max_bytes:
        raise MediaTooLarge(f"the file is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB (COPILOT_MEDIA_MAX_BYTES)",
                            size_bytes=size, limit_bytes=max_bytes)
    proc = run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)], min(timeout_s, 30.0),
               "ffprobe", check=False)
    err = proc.stderr.decode(errors="replace").replace(str(path), name or path.name).strip()
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError:
        data = {}
    fmt = data.get("format") or {}
    if proc.returncode != 0 or not fmt:
        if "Invalid data found" in err or not fmt:
            raise UnsupportedMedia(f"not a media file ffmpeg can read ({err.splitlines()[-1] if err else 'no container recognised'})")
        raise CorruptMedia(f"ffprobe could not read the file: {err.splitlines()[-1] if err else proc.returncode}")
    fmt_name = str(fmt.get("format_name", ""))
    if fmt_name in _IMAGE_FORMATS:
        raise UnsupportedMedia(f"not a media file: it is a still image ({fmt_name}); send the video or audio")
    if fmt_name in _TEXT_FORMATS:
        raise UnsupportedMedia(f"not a media file: it is text ({fmt_name}); put text in the case's fields instead")
    streams = data.get("streams") or []
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    video = next((s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")), None)
    if audio is None and video is None:
        kinds = sorted({str(s.get("codec_type")) for s in streams}) or ["none"]
        raise UnsupportedMedia(f"the file has no audio or video stream (streams: {', '.join(kinds)})")
    for s in (audio, video):
        if s is not None and s.get("codec_name") in (None, "", "none", "unknown"):
            raise UnsupportedMedia(f"unsupported {s.get('codec_type')} codec (tag {s.get('codec_tag_string', '?')}); "
                                   "send H.264/H.265/VP9/AV1 video with AAC/Opus/MP3 audio")
    duration = _duration(fmt, streams)
    if duration is None:
        raise CorruptMedia("the container does not say how long it is (truncated or still being written?)")
    if duration > max_seconds:
        raise MediaTooLarge(f"the media lasts {duration:.0f} s; the limit is {max_seconds:.0f} s (COPILOT_MEDIA_MAX_SECONDS)",
                            duration_s=round(duration, 1), limit_s=max_seconds)
    return MediaInfo(format_name=fmt_name, duration_s=round(duration, 3), size_bytes=size,
                     audio_codec=audio.get("codec_name") if audio else None, video_codec=video.get("codec_name") if video else None,
                     width=int(video["width"]) if video and video.get("width") else None,
                     height=int(video["height"]) if video and video.get("height") else None)


def _duration(fmt: dict[str, Any], streams: list[dict[str, Any]]) -> float | None:
    for value in [fmt.get("duration"), *[s.get("duration") for s in streams]]:
        try:
            d = float(str(value))
        except (TypeError, ValueError):
            continue
        if d > 0:
            return d
    return None


def child_env_single_thread() -> dict[str, str]:
    """Tesseract's OpenMP threads fight the service for 2 cores; one thread each is faster overall. Set for the child
    only: OMP_THREAD_LIMIT=1 in the process that runs Whisper silently empties its transcript (RECIPES.md)."""
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}
