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
    width: int | None  # as displayed: rotation metadata applied
    height: int | None
    max_seconds: float = 600.0  # the limit the file was checked against: decoders stop there whatever the container claims

    @property
    def kind(self) -> str:
        return "video" if self.video_codec else "audio"

    @property
    def demuxer(self) -> str:
        """The demuxer ffprobe chose, passed to every decoder child as `-f` so it cannot pick another one."""
        return self.format_name.split(",")[0]

    @property
    def mime(self) -> str:
        """The playback Content-Type, from what the file is (never from what the client said it is)."""
        return (_AUDIO_MIME if self.kind == "audio" else _MIME).get(self.demuxer, "application/octet-stream")

    def input_args(self, path: Path) -> list[str]:
        """ffmpeg input options: the probed (allow-listed) demuxer and at most the checked duration."""
        return ["-f", self.demuxer, "-t", f"{self.max_seconds:.3f}", "-i", str(path)]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# Containers we decode. Anything else ffmpeg recognises is refused: playlists and concat lists (hls, concat) would make
# the decoder read OTHER files on this server, past the size and duration checks made on the list itself.
_ALLOWED_DEMUXERS = {"mov", "matroska", "mp3", "wav", "ogg", "flac", "aac", "avi", "mpegts", "flv", "asf", "amr", "caf", "aiff", "w64"}
_MIME = {"mov": "video/mp4", "matroska": "video/webm", "avi": "video/x-msvideo", "mpegts": "video/mp2t", "flv": "video/x-flv",
         "asf": "video/x-ms-asf", "ogg": "video/ogg"}
_AUDIO_MIME = {"mov": "audio/mp4", "mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg", "flac": "audio/flac", "aac": "audio/aac",
               "matroska": "audio/webm", "amr": "audio/amr", "caf": "audio/x-caf", "aiff": "audio/aiff", "w64": "audio/wav", "asf": "audio/x-ms-wma"}
# File signatures of the containers above: an unreadable file that starts like one is corrupt (422), not foreign (415).
_MAGIC = (b"ftyp", b"RIFF", b"ID3", b"OggS", b"\x1aE\xdf\xa3", b"fLaC", b"FLV", b"\xff\xfb", b"\xff\xf3")
MAX_SIDE = 7680  # 8K: larger frames would cost the decoder child hundreds of MB each
MIN_SIDE = 16
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
        last = err.splitlines()[-1] if err else "no container recognised"
        with path.open("rb") as f:
            head = f.read(16)
        if any(m in head for m in _MAGIC):
            raise CorruptMedia(f"the file looks like audio or video but cannot be read (truncated or damaged?): {last}")
        raise UnsupportedMedia(f"not a media file ffmpeg can read ({last})")
    fmt_name = str(fmt.get("format_name", ""))
    if fmt_name in _IMAGE_FORMATS:
        raise UnsupportedMedia(f"not a media file: it is a still image ({fmt_name}); send the video or audio")
    if fmt_name in _TEXT_FORMATS:
        raise UnsupportedMedia(f"not a media file: it is text ({fmt_name}); put text in the case's fields instead")
    if fmt_name.split(",")[0] not in _ALLOWED_DEMUXERS:
        raise UnsupportedMedia(f"the {fmt_name} format is not accepted; send MP4, MOV, WebM/MKV, AVI, MP3, WAV, OGG, FLAC or AAC")
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
    width = height = None
    if video is not None:
        width, height = int(video.get("width") or 0), int(video.get("height") or 0)
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise UnsupportedMedia(f"the video is {width}x{height} pixels; each side must be {MIN_SIDE} to {MAX_SIDE}")
        if _rotation(video) in (90, 270):  # phones store portrait video as landscape plus a rotation; ffmpeg applies it
            width, height = height, width
    return MediaInfo(format_name=fmt_name, duration_s=round(duration, 3), size_bytes=size,
                     audio_codec=audio.get("codec_name") if audio else None, video_codec=video.get("codec_name") if video else None,
                     width=width, height=height, max_seconds=max_seconds)


def _rotation(stream: dict[str, Any]) -> int:
    values = [stream.get("tags", {}).get("rotate")] + [sd.get("rotation") for sd in stream.get("side_data_list") or []]
    for v in values:
        try:
            return int(float(str(v))) % 360
        except (TypeError, ValueError):
            continue
    return 0


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
