"""A media file in, a MediaReport out (transcript and on-screen lines with times); and the report folded into a Case.

Stages, each timed: probe (ffprobe: size, streams, duration limits, before anything is decoded), audio (ffmpeg child
to 16 kHz PCM), asr (Whisper with VAD), ocr (sampled frames through Tesseract). Any stage's failure is a typed error
(copilot/errors.py) the API maps to a 4xx problem or records on the case as its failure reason.
"""

from __future__ import annotations

import time
from pathlib import Path

from copilot.artifacts import sha256_file
from copilot.config import Settings
from copilot.errors import CopilotError, NoMediaText
from copilot.media.asr import SAMPLE_RATE, Transcriber, decode_audio
from copilot.media.ocr import extract_text
from copilot.media.tools import check_tools, probe
from copilot.schema import Case, ContentType, MediaReport


def extract(path: Path, settings: Settings, transcriber: Transcriber | None, language: str | None = None) -> MediaReport:
    """transcriber None skips speech (the CLI's --no-asr); settings.media_ocr False skips on-screen text."""
    check_tools(ocr=settings.media_ocr)
    t_all = time.perf_counter()
    seconds: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    info = probe(path, settings.media_max_bytes, settings.media_max_seconds, settings.media_tool_timeout_s)
    seconds["probe"] = round(time.perf_counter() - t0, 3)
    transcript, lang, lang_p = [], None, None
    if info.audio_codec is None:
        notes.append("no audio track")
    elif transcriber is None:
        notes.append("speech recognition skipped")
    else:
        t0 = time.perf_counter()
        audio = decode_audio(path, settings.media_tool_timeout_s, info)
        seconds["audio"] = round(time.perf_counter() - t0, 3)
        if len(audio) / SAMPLE_RATE > info.duration_s + 5 and len(audio) / SAMPLE_RATE >= settings.media_max_seconds - 0.5:
            notes.append(f"the container says {info.duration_s:.0f} s but holds more audio: only the first "
                         f"{settings.media_max_seconds:.0f} s were read (COPILOT_MEDIA_MAX_SECONDS)")
        tr = transcriber.transcribe(audio, language, time_limit_s=settings.media_tool_timeout_s)
        seconds["asr"] = round(tr.seconds, 3)
        notes += tr.notes
        transcript, lang, lang_p = tr.segments, tr.language, tr.language_probability
        if not transcript:
            notes.append("no speech detected in the audio track")
    frames = frames_read = 0
    on_screen = []
    if info.video_codec and settings.media_ocr:
        t0 = time.perf_counter()
        try:
            ocr = extract_text(path, info, settings.media_ocr_fps, settings.media_ocr_max_frames, settings.media_tool_timeout_s)
            on_screen, frames, frames_read = ocr.lines, ocr.frames, ocr.frames_read
            notes += ocr.notes
            if not on_screen:
                notes.append("no on-screen text found")
        except CopilotError as exc:  # the speech already read still makes a case; say what is missing
            notes.append(f"on-screen text not read: {exc.detail}")
        seconds["ocr"] = round(time.perf_counter() - t0, 3)
    elif info.video_codec:
        notes.append("on-screen text reading is off (COPILOT_MEDIA_OCR=false)")
    seconds["total"] = round(time.perf_counter() - t_all, 3)
    ids = {"asr": transcriber.model_id} if transcriber is not None and info.audio_codec else {}
    if on_screen or (info.video_codec and settings.media_ocr):
        ids["ocr"] = "tesseract-eng-psm3"
    return MediaReport(kind=info.kind, sha256=sha256_file(path), duration_s=info.duration_s, format_name=info.format_name,  # type: ignore[arg-type]
                       audio_codec=info.audio_codec, video_codec=info.video_codec, language=lang, language_probability=lang_p,
                       transcript=transcript, on_screen=on_screen, seconds=seconds, frames=frames, frames_read=frames_read,
                       notes=notes, model_ids=ids)


def apply_to_case(case: Case, report: MediaReport) -> Case:
    """The case as a reviewer sees it once the media is read: transcript and on-screen text filled in from the media
    (one line per segment, so a character offset maps back to a time), the spoken language when the caller gave none.
    A case with no text at all afterwards is an error that names why (silent audio, no captions...)."""
    data = case.model_dump()
    data.update(
        transcript="\n".join(line.text for line in report.transcript) or case.transcript,
        on_screen_text="\n".join(line.text for line in report.on_screen) or case.on_screen_text,
        transcript_timing=[line.model_dump() for line in report.transcript],
        on_screen_timing=[line.model_dump() for line in report.on_screen],
        language=case.language or report.language,
        content_type=ContentType.audio if report.kind == "audio" and case.content_type == ContentType.post else
        (ContentType.video if case.content_type == ContentType.post else case.content_type),
    )
    data["metadata"] = {**case.metadata, "media": {"sha256": report.sha256, "duration_s": report.duration_s, "kind": report.kind}}
    out = Case(**data)
    if not out.text().strip():
        raise NoMediaText("nothing to review: " + "; ".join(report.notes or ["no text extracted"]) + ", and the case has no caption or title")
    return out
