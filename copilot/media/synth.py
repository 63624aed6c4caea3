"""Synthetic clips with known content, made here: espeak-ng speaks given sentences at given times and ffmpeg draws given
caption lines on a plain background. Tests, benchmarks and the console demo use them to check that what was said and
shown comes back with the right times; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass
class Spoken:
    text: str
    at_s: float


@dataclass
class Shown:
    text: str
    start_s: float
    end_s: float


@dataclass
class ClipSpec:
    duration_s: float
    speech: list[Spoken] = field(default_factory=list)
    captions: list[Shown] = field(default_factory=list)
    video: bool = True
    audio: bool = True
    size: tuple[int, int] = (640, 360)
    voice: str = "en-us"
    words_per_minute: int = 150
    font_size: int | None = None  # default: a twelfth of the height (a typical caption)
    background: str = "color"  # or "testsrc2": a busy, moving picture


def missing_tools() -> list[str]:
    return [t for t in ("ffmpeg", "espeak-ng") if shutil.which(t) is None]


def font_file() -> str:
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return path
    out = subprocess.run(["fc-match", "-f", "%{file}", "sans:bold"], capture_output=True, text=True, timeout=10)
    if out.returncode == 0 and out.stdout:
        return out.stdout
    raise RuntimeError("no TrueType font found for captions (install fonts-dejavu-core)")


def _escape(text: str) -> str:
    # drawtext's own escaping, inside a filtergraph: backslash, colon, quote and percent are special
    return text.replace("\\", "\\\\\\\\").replace(":", "\\\\:").replace("'", "\u2019").replace("%", "\\\\%")


def make_clip(spec: ClipSpec, out: Path) -> Path:
    """Write an MP4 (H.264 + AAC) or, for audio only, whatever the suffix of `out` says (.wav, .mp3, .m4a)."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs: list[str] = []
        filters: list[str] = []
        n = 0
        if spec.video:
            w, h = spec.size
            source = f"color=c=0x1e2a38:s={w}x{h}:d={spec.duration_s}:r=25" if spec.background == "color" else \
                f"testsrc2=s={w}x{h}:d={spec.duration_s}:r=25"
            inputs += ["-f", "lavfi", "-i", source]
            chain = "[0:v]"
            font = font_file()
            draws = [f"drawtext=fontfile={font}:text='{_escape(c.text)}':fontcolor=white:fontsize={spec.font_size or max(18, h // 12)}:"
                     f"x=(w-text_w)/2:y=h-{h // 4}:enable='between(t,{c.start_s},{c.end_s})'" for c in spec.captions]
            filters.append(chain + (",".join(draws) if draws else "null") + "[v]")
            n = 1
        if spec.audio:
            labels = []
            for i, s in enumerate(spec.speech):
                wav = Path(tmp) / f"s{i}.wav"
                subprocess.run(["espeak-ng", "-v", spec.voice, "-s", str(spec.words_per_minute), "-w", str(wav), s.text],
                               check=True, capture_output=True, timeout=60)
                inputs += ["-i", str(wav)]
                ms = int(s.at_s * 1000)
                filters.append(f"[{n}:a]aresample=16000,adelay={ms}|{ms}[a{i}]")
                labels.append(f"[a{i}]")
                n += 1
            # a silent bed as long as the clip, so audio runs the full duration even where nobody speaks
            inputs += ["-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={spec.duration_s}"]
            labels.append(f"[{n}:a]")
            filters.append("".join(labels) + f"amix=inputs={len(labels)}:normalize=0:duration=longest,atrim=0:{spec.duration_s}[a]")
        cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", *inputs, "-filter_complex", ";".join(filters)]
        if spec.video:
            cmd += ["-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        if spec.audio:
            cmd += ["-map", "[a]"]
            if out.suffix == ".mp4":
                cmd += ["-c:a", "aac", "-b:a", "64k"]
        cmd += ["-t", str(spec.duration_s), str(out)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out
