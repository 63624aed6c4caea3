"""Media cases in the service: uploads stored by content hash, extraction in one background worker, and the case's
status moving processing -> queued (text ready, fast suggestion stored) or -> failed (with the reason).

One worker, on purpose: Whisper already uses both cores, so a second extraction would only slow both. A case that was
processing when the service stopped is picked up again at the next start (`resume`), from its stored file.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select

from copilot.artifacts import sha256_file
from copilot.errors import ComponentMissing, CopilotError, MediaTooLarge
from copilot.media.extract import apply_to_case, extract
from copilot.runtime import Runtime
from copilot.schema import Case, MediaReport, Suggestion
from copilot.store import audit
from copilot.store import cases as repo
from copilot.store.models import CaseRow
from copilot.suggest import suggest_fast
from copilot.validate import validate_case

log = logging.getLogger(__name__)
_SAFE_SUFFIX = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mp3", ".m4a", ".aac", ".wav", ".ogg", ".opus", ".flac", ".3gp"}


@dataclass
class StoredMedia:
    path: Path
    sha256: str
    size_bytes: int
    filename: str
    content_type: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self.sha256, "size_bytes": self.size_bytes, "filename": self.filename,
                "content_type": self.content_type}


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in _SAFE_SUFFIX else ".bin"


def store_stream(media_dir: Path, chunks: Iterator[bytes], filename: str, content_type: str, max_bytes: int,
                 check: Callable[[Path], object] | None = None) -> StoredMedia:
    """Write an upload to <media_dir>/<sha256><suffix>, refusing it as soon as it passes max_bytes. `check` (the
    probe) runs on the complete temporary file first: a rejected file is never kept."""
    media_dir.mkdir(parents=True, exist_ok=True)
    # the real suffix, not ".part": ffprobe guesses some formats from it
    fd, tmp = tempfile.mkstemp(dir=media_dir, prefix=".upload-", suffix=_suffix(filename))
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLarge(f"the upload is over the {max_bytes / 2**20:.0f} MiB limit (COPILOT_MEDIA_MAX_BYTES)", limit_bytes=max_bytes)
                out.write(chunk)
        if check is not None:
            check(Path(tmp))
        digest = sha256_file(Path(tmp))
        target = media_dir / f"{digest}{_suffix(filename)}"
        os.replace(tmp, target)  # same content, same name: a second upload of one file keeps one copy
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StoredMedia(target, digest, size, filename, content_type)


def store_file(media_dir: Path, src: Path, max_bytes: int, check: Callable[[Path], object] | None = None) -> StoredMedia:
    def chunks(f: BinaryIO) -> Iterator[bytes]:
        while block := f.read(1 << 20):
            yield block

    with src.open("rb") as f:
        return store_stream(media_dir, chunks(f), src.name, "", max_bytes, check)


def trusted_path(raw: str, roots: list[Path]) -> Path:
    """A local path a trusted caller may ingest: it must resolve (symlinks followed) inside one of the configured roots."""
    from copilot.errors import Forbidden, InvalidInput

    if not roots:
        raise Forbidden("ingestion by local path is off (set COPILOT_MEDIA_INGEST_ROOTS to the folders it may read)")
    if "\x00" in raw:
        raise InvalidInput("the path contains a NUL character")
    path = Path(raw).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        raise Forbidden(f"{raw} is outside the ingestion folders (COPILOT_MEDIA_INGEST_ROOTS)")
    if not path.is_file():
        raise InvalidInput(f"{raw} is not a file")
    return path


def process(rt: Runtime, case_id: int) -> str:
    """Extract the media of one processing case, queue it with its fast suggestion (evidence with times), and return
    the new status. Never raises for bad media: the reason goes on the case, where the console and the API show it."""
    settings = rt.settings
    with rt.database.session() as s:
        row = repo.get(s, case_id)
        if row.status != "processing" or not row.media:
            return row.status
        media = dict(row.media)
        submitted = Case(**media["submitted"])
        row.status_detail = "extracting speech and on-screen text"
    path = settings.media_dir / media["file"]
    try:
        transcriber = rt.media
    except ComponentMissing as exc:  # not the file's fault: leave it processing; the next start (or submit) retries it
        log.warning("media case %s waits: %s", case_id, exc.detail)
        _set_detail(rt, case_id, "waiting for the speech model or media tools (see GET /readyz)")
        return "processing"
    try:
        report: MediaReport = extract(path, settings, transcriber, submitted.language)
        case = apply_to_case(submitted.model_copy(update={"external_id": None}), report)
        validate_case(case, settings)  # the same limits as a text case (a long transcript plus many captions can pass them)
    except CopilotError as exc:
        _fail(rt, case_id, f"{exc.code}: {exc.detail}" if exc.safe else "internal error; see the server log")
        if not exc.safe:
            log.error("media case %s failed: %s", case_id, exc.detail)
        return "failed"
    except Exception:
        log.exception("media case %s failed", case_id)
        _fail(rt, case_id, "internal error while reading the media; see the server log")
        return "failed"
    try:  # before the case enters the queue, so a moderator never opens it without its suggestion
        sug: Suggestion | None = suggest_fast(rt, case)
    except Exception as exc:  # queued without a suggestion; a moderator can ask for one
        log.warning("media case %s queued without suggestion: %s", case_id, exc)
        sug = None
    with rt.database.session() as s:
        row = repo.get(s, case_id, for_update=True)
        if row.status != "processing":  # another worker (a second replica resuming) finished it first
            log.info("media case %s is already %s; this extraction is dropped", case_id, row.status)
            return str(row.status)
        row.payload = case.model_dump(mode="json", exclude={"external_id"})
        row.text_hash = repo.text_hash(case)
        row.media = {**media, "report": report.model_dump(mode="json")}
        row.status, row.status_detail = "queued", None
        audit.append(s, "media-worker", "case.media_ready", "case", case_id,
                     {"sha256": report.sha256, "duration_s": report.duration_s, "language": report.language,
                      "segments": len(report.transcript), "on_screen_lines": len(report.on_screen), "seconds": report.seconds,
                      "model_ids": report.model_ids})
        if sug is not None:
            repo.add_suggestion(s, case_id, sug, "media-worker")
    return "queued"


def _set_detail(rt: Runtime, case_id: int, detail: str) -> None:
    with rt.database.session() as s:
        repo.get(s, case_id).status_detail = detail


def _fail(rt: Runtime, case_id: int, reason: str) -> None:
    with rt.database.session() as s:
        row = repo.get(s, case_id, for_update=True)
        if row.status != "processing":
            return
        row.status, row.status_detail = "failed", reason
        row.media = {**(row.media or {}), "failure": reason}
        audit.append(s, "media-worker", "case.media_failed", "case", case_id, {"reason": reason})
    log.info("media case %s failed: %s", case_id, reason)


def _log_crash(future: Future[str], *, case_id: int) -> None:
    """process() reports bad media on the case itself; anything escaping it (a database outage) must at least be logged:
    the case stays processing and is picked up again at the next start."""
    if not future.cancelled() and future.exception() is not None:
        log.error("media worker failed on case %s; it stays processing until the next start", case_id, exc_info=future.exception())


class MediaWorker:
    """One background thread extracting media cases in submission order."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media")
        self._pending: dict[int, Future[str]] = {}
        self._lock = threading.Lock()

    def submit(self, case_id: int) -> None:
        with self._lock:
            if case_id in self._pending and not self._pending[case_id].done():
                return
            future = self._pool.submit(process, self.rt, case_id)
            future.add_done_callback(functools.partial(_log_crash, case_id=case_id))
            self._pending = {k: v for k, v in self._pending.items() if not v.done()}
            self._pending[case_id] = future

    def resume(self) -> int:
        """Re-submit cases left processing by a previous run (their files are on disk)."""
        with self.rt.database.session() as s:
            ids = list(s.scalars(select(CaseRow.id).where(CaseRow.status == "processing", CaseRow.media.is_not(None)).order_by(CaseRow.id)))
        for case_id in ids:
            self.submit(case_id)
        if ids:
            log.info("resuming media extraction for %d case(s)", len(ids))
        return len(ids)

    def queued(self) -> int:
        with self._lock:
            return sum(1 for f in self._pending.values() if not f.done())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
