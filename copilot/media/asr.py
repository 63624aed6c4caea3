"""Speech to text with segment times: faster-whisper on the Whisper base weights (copilot/media/models.py).

Audio is decoded by an ffmpeg child process to 16 kHz mono PCM (time-limited), never inside this process, so a
hostile container cannot hang a worker. Silero VAD (bundled inside faster-whisper, nothing downloaded) skips silence,
which is also what keeps Whisper from inventing "Thank you." over music or an empty track.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copilot.media import models as media_models
from copilot.media.tools import MediaInfo, run
from copilot.schema import TimedLine, primary_language

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Segments Whisper itself thinks are probably not speech, with a low mean log-probability, are dropped as inventions.
NO_SPEECH_DROP = 0.6
LOGPROB_DROP = -1.0


@dataclass
class Transcript:
    segments: list[TimedLine]
    language: str | None
    language_probability: float | None
    audio_s: float
    speech_s: float
    seconds: float  # wall time of decoding + recognition
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.segments)


def decode_audio(path: Path, timeout_s: float, info: MediaInfo | None = None) -> np.ndarray:
    """16 kHz mono float32. With `info` (the probe) the child uses the probed demuxer and stops at the checked duration:
    a container can claim 5 s and hold hours (an MP3 without a length header), and this must not decode them."""
    source = info.input_args(path) if info is not None else ["-i", str(path)]
    proc = run(["ffmpeg", "-nostdin", "-v", "error", *source, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"],
               timeout_s, "ffmpeg (audio decoding)")
    return np.frombuffer(proc.stdout, dtype=np.int16).astype(np.float32) / 32768.0


# Whisper segments run up to ~30 s; evidence should point at the sentence. Lines end at a sentence end, a pause, or
# this length, so a quote maps to a few seconds of the clip, not a half-minute segment.
LINE_MAX_S = 8.0
PAUSE_S = 0.8


def split_by_words(words: list[tuple[str, float, float]]) -> list[TimedLine]:
    """(word, start, end) triples (Whisper words carry their leading space) into timed lines."""
    lines: list[TimedLine] = []
    buf: list[tuple[str, float, float]] = []

    def flush() -> None:
        text = "".join(w for w, _, _ in buf).strip()
        if text:
            lines.append(TimedLine(text=text, start_s=round(buf[0][1], 2), end_s=round(buf[-1][2], 2)))
        buf.clear()

    for k, (word, start, end) in enumerate(words):
        if buf and (start - buf[-1][2] > PAUSE_S or end - buf[0][1] > LINE_MAX_S):
            flush()
        buf.append((word, start, end))
        if word.strip().endswith((".", "?", "!")) and k + 1 < len(words):
            flush()
    flush()
    return lines


class Transcriber:
    """One Whisper model per process; calls are serialised (CTranslate2 already uses every thread it was given)."""

    def __init__(self, folder: Path, threads: int = 2, beam_size: int = 1, word_times: bool = True) -> None:
        from faster_whisper import WhisperModel

        media_models.verify(folder)
        self.model_id = media_models.MODEL_ID
        self.beam_size = beam_size
        self.word_times = word_times
        self._lock = threading.Lock()
        self._model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True)

    def whisper_language(self, language: str | None) -> str | None:
        """A case's BCP-47 tag ('en-US', 'pt_BR') as Whisper's code ('en', 'pt'); None (detect) for one Whisper lacks."""
        primary = primary_language(language)
        return primary if primary and primary in set(self._model.supported_languages) else None

    def transcribe(self, audio: np.ndarray, language: str | None = None, time_limit_s: float | None = None) -> Transcript:
        """Segments are consumed one at a time; past time_limit_s the rest is not recognised (a note says so): Whisper
        can loop on audio it misreads (temperature fallbacks), and it runs in-process, so this is its only bound."""
        t0 = time.perf_counter()
        notes: list[str] = []
        language = self.whisper_language(language)
        audio_s = len(audio) / SAMPLE_RATE
        if audio_s < 0.1 or float(np.abs(audio).max(initial=0.0)) < 1e-4:  # digital silence: nothing to recognise
            return Transcript([], None, None, audio_s, 0.0, time.perf_counter() - t0)
        with self._lock:
            segments, info = self._model.transcribe(audio, language=language, beam_size=self.beam_size, vad_filter=True,
                                                    condition_on_previous_text=False, word_timestamps=self.word_times)
            kept: list[TimedLine] = []
            for seg in segments:  # lazy: recognition happens while iterating
                text = seg.text.strip()
                if not text or (seg.no_speech_prob > NO_SPEECH_DROP and seg.avg_logprob < LOGPROB_DROP):
                    continue
                words = [(w.word, w.start, w.end) for w in (seg.words or [])]
                kept += split_by_words(words) if words else [TimedLine(text=text, start_s=round(seg.start, 2), end_s=round(seg.end, 2))]
                if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
                    notes.append(f"speech recognised up to {seg.end:.0f} s of {audio_s:.0f} s (time limit COPILOT_MEDIA_TOOL_TIMEOUT_S)")
                    break
        speech_s = float(getattr(info, "duration_after_vad", 0.0) or 0.0)
        if not kept:
            return Transcript([], None, None, audio_s, speech_s, time.perf_counter() - t0, notes)
        return Transcript(kept, info.language, round(float(info.language_probability), 3), audio_s, speech_s, time.perf_counter() - t0, notes)
