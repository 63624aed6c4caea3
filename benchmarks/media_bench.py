"""Media extraction speed and memory on this machine, on clips made here (espeak-ng speech, ffmpeg captions).

    python benchmarks/media_bench.py [--durations 10 30 60] [--beams 1 5] [--reps 2]

For each clip length: speech recognition (Whisper base int8, VAD, the given beam widths) and on-screen text (1 frame/s
through Tesseract, captions changing every 4 s) as seconds of media per second of wall time (x real time), the whole
extraction, the fast suggestion on the extracted case, and the share of the case's total time spent in media
extraction. Peak resident memory of this process (Whisper) and of the largest child (ffmpeg / Tesseract) at the end.
"Clip-minutes per core per day" = 1440 x (media seconds per wall second of the whole extraction) / cores used.
Speech is continuous (one sentence after another) so the recogniser never idles on silence: a worst case for ASR.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "We are going to the park to play football with our friends.",
    "After lunch we will walk along the river and feed the ducks.",
    "My brother bought a new bicycle with bright red wheels.",
    "The library opens at nine and closes early on Sundays.",
    "Please remember to bring a jacket because it may rain tonight.",
]


def make(duration: int, out: Path) -> Path:
    from copilot.media.synth import ClipSpec, Shown, Spoken, make_clip

    speech, t, i = [], 0.3, 0
    while t < duration - 4:
        speech.append(Spoken(SENTENCES[i % len(SENTENCES)], t))
        t += 4.2
        i += 1
    captions = [Shown(f"caption number {k} {SENTENCES[k % len(SENTENCES)].split()[1]}", k * 4, k * 4 + 3.5) for k in range(duration // 4)]
    return make_clip(ClipSpec(duration, speech=speech, captions=captions), out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--durations", type=int, nargs="+", default=[10, 30, 60])
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    from copilot.config import Settings
    from copilot.media.asr import Transcriber, decode_audio
    from copilot.media.extract import apply_to_case, extract
    from copilot.media.ocr import extract_text
    from copilot.media.tools import probe
    from copilot.runtime import Runtime
    from copilot.schema import Case
    from copilot.suggest import suggest_fast

    settings = Settings()
    rt = Runtime(settings)
    rt.classifier, rt.index  # noqa: B018 - load before timing
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    transcribers = {b: Transcriber(settings.whisper_path, settings.whisper_threads, b) for b in args.beams}
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {os.cpu_count()} cores; whisper threads {settings.whisper_threads}; RSS before Whisper {rss0:.0f} MiB, after loading "
          f"{len(transcribers)} Whisper model(s) {rss_model:.0f} MiB")
    print("| clip | stage | median wall s | x real time |")
    print("|---|---|---|---|")
    child_peak = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.durations:
            clip = make(d, Path(tmp) / f"clip{d}.mp4")
            info = probe(clip, settings.media_max_bytes, settings.media_max_seconds, 60)
            audio = decode_audio(clip, 60)
            for beam, tr in transcribers.items():
                walls = []
                for _ in range(args.reps):
                    walls.append(tr.transcribe(audio).seconds)
                w = statistics.median(walls)
                print(f"| {d} s | speech (beam {beam}) | {w:.2f} | {d / w:.1f} |")
            walls = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                ocr = extract_text(clip, info, settings.media_ocr_fps, settings.media_ocr_max_frames, 60)
                walls.append(time.perf_counter() - t0)
            w = statistics.median(walls)
            print(f"| {d} s | on-screen text ({ocr.frames} frames, {ocr.frames_read} read) | {w:.2f} | {d / w:.1f} |")
            tr = transcribers.get(settings.whisper_beam_size) or next(iter(transcribers.values()))
            ext, sug_s = [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                report = extract(clip, settings, tr)
                ext.append(time.perf_counter() - t0)
                case = apply_to_case(Case(caption="clip"), report)
                t0 = time.perf_counter()
                suggest_fast(rt, case)
                sug_s.append(time.perf_counter() - t0)
            e, s_ = statistics.median(ext), statistics.median(sug_s)
            print(f"| {d} s | whole extraction (beam {tr.beam_size}) | {e:.2f} | {d / e:.1f} |")
            print(f"| {d} s | fast suggestion on the extracted case | {s_:.3f} | share of case time in media: {e / (e + s_):.1%} |")
            per_day = 1440 * d / e / max(1, settings.whisper_threads)
            print(f"| {d} s | clip-minutes per core per day (whole extraction) | | {per_day:,.0f} |")
            if d == max(args.durations):
                child_peak = _child_peak(clip)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: this process {self_peak:.0f} MiB (classifier, index, {len(transcribers)} Whisper model(s)); "
          f"largest ffmpeg / tesseract child on the longest clip {child_peak:.0f} MiB")


def _child_peak(clip: Path) -> float:
    """Peak RSS of the ffmpeg / Tesseract children, measured from a small parent: a child forked from this big process
    would count the parent's pages until it execs."""
    import subprocess
    import sys

    code = ("import resource, sys; from pathlib import Path; from copilot.media.tools import probe; "
            "from copilot.media.ocr import extract_text; from copilot.media.asr import decode_audio; p = Path(sys.argv[1]); "
            "i = probe(p, 10**9, 10**4, 60); extract_text(p, i, 1.0, 300, 60); decode_audio(p, 60); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True, timeout=300, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
