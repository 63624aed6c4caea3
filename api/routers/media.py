"""Video and audio cases: upload (multipart) or trusted local path in, extraction in the background, the case enters
the queue when its text is ready. The stored file is served back so the console can play it at the evidence's second."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.deps import MODERATE, READ_CASES, Caller, RuntimeDep, require
from api.routers.cases import CaseId
from copilot.errors import ComponentMissing, Conflict, InvalidInput, NotFound
from copilot.media.jobs import MediaWorker, StoredMedia, store_file, store_stream, trusted_path
from copilot.media.tools import MediaInfo, probe
from copilot.schema import Case, ContentType, MediaReport, ReporterType
from copilot.store import audit
from copilot.store import cases as repo

router = APIRouter(prefix="/v1", tags=["media"])


class MediaCaseCreated(BaseModel):
    id: int
    created: bool = Field(description="False when the same file and fields were already ingested under this external id / key.")
    status: str = Field(description="processing until the transcript and on-screen text are ready, then queued (or failed).")
    status_detail: str | None = None
    sha256: str
    duration_s: float
    kind: str


class PathIngest(BaseModel):
    path: str = Field(description="A file under one of COPILOT_MEDIA_INGEST_ROOTS (trusted ingestion from shared storage).")
    case: Case = Field(default_factory=Case, description="The case's other fields (title, caption, report reason, ...).")


class MediaStatus(BaseModel):
    id: int
    status: str
    status_detail: str | None
    filename: str | None
    sha256: str
    report: MediaReport | None


def _worker(request: Request) -> MediaWorker:
    rt = request.app.state.runtime
    if not rt.settings.media_enabled:
        raise ComponentMissing("media: video and audio cases are off (COPILOT_MEDIA_ENABLED=false)")
    worker: MediaWorker | None = getattr(request.app.state, "media_worker", None)
    if worker is None:
        raise ComponentMissing("media: the media worker is not running")
    return worker


async def _ingest(request: Request, rt: Any, caller: Caller, case: Case, stored: StoredMedia, info: MediaInfo,
                  idempotency_key: str | None) -> MediaCaseCreated:
    worker = _worker(request)
    duration_s, kind = info.duration_s, info.kind

    def write() -> tuple[int, bool, str, str | None]:
        media = {**stored.as_dict(), "content_type": info.mime, "duration_s": duration_s, "kind": kind}
        try:
            with rt.database.session() as s:
                row, created = repo.ingest_media(s, case, media, caller.name, idempotency_key)
                return row.id, created, row.status, row.status_detail
        except Conflict:
            with rt.database.session() as s:  # the file was stored for nothing: keep it only if another case uses it
                if not repo.media_in_use(s, stored.path.name):
                    stored.path.unlink(missing_ok=True)
            raise

    case_id, created, status, detail = await asyncio.to_thread(write)
    if created:
        worker.submit(case_id)
    return MediaCaseCreated(id=case_id, created=created, status=status, status_detail=detail, sha256=stored.sha256,
                            duration_s=duration_s, kind=kind)


def _limits(rt: Any) -> dict[str, Any]:
    s = rt.settings
    return {"max_bytes": s.media_max_bytes, "max_seconds": s.media_max_seconds, "timeout_s": s.media_tool_timeout_s}


async def _readable(rt: Any) -> None:
    """Refuse uploads at once (503) when the speech model or the tools are missing, rather than fail every case later."""
    await asyncio.to_thread(lambda: rt.media)


UPLOAD_DOC = """Multipart form: `file` (the video or audio, at most COPILOT_MEDIA_MAX_BYTES and COPILOT_MEDIA_MAX_SECONDS)
plus optional case fields. The file is probed at once: not media (415), no audio or video stream (415), an unknown codec
(415), corrupt (422), too large or too long (413) are refused before anything is stored. Accepted cases answer 202 with
`status: processing`; speech and on-screen text are extracted in the background and the case enters the queue
(`queued`, with a fast suggestion whose evidence carries `start_s`/`end_s`) or ends `failed` with the reason in
`status_detail` (e.g. silent audio and no captions). `POST /v1/cases` with a multipart body is the same operation."""


@router.post("/cases/media", response_model=MediaCaseCreated, status_code=202, summary="Ingest a video or audio case (multipart upload)",
             description=UPLOAD_DOC, responses={413: {"description": "Too large or too long"}, 415: {"description": "Not usable media"}})
async def upload_media(request: Request, rt: RuntimeDep, file: Annotated[UploadFile, File(description="The video or audio file.")],
                       caller: Caller = require(*MODERATE),
                       external_id: Annotated[str | None, Form(max_length=200)] = None,
                       title: Annotated[str | None, Form(max_length=1000)] = None,
                       caption: Annotated[str | None, Form(max_length=20_000)] = None,
                       report_reason: Annotated[str | None, Form(max_length=500)] = None,
                       reporter_type: Annotated[ReporterType | None, Form()] = None,
                       language: Annotated[str | None, Form(max_length=16)] = None,
                       metadata: Annotated[str | None, Form(description="JSON object with platform metadata.")] = None,
                       idempotency_key: Annotated[str | None, Form(max_length=200)] = None) -> MediaCaseCreated:
    _worker(request)
    await _readable(rt)
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError:
        raise InvalidInput("metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InvalidInput("metadata must be a JSON object")
    case = Case(external_id=external_id, title=title, caption=caption, report_reason=report_reason, reporter_type=reporter_type,
                language=language, metadata=meta, content_type=ContentType.video)
    lim = _limits(rt)
    info: dict[str, Any] = {}

    def check(path: Any) -> None:
        info["probe"] = probe(path, lim["max_bytes"], lim["max_seconds"], lim["timeout_s"], name=file.filename)

    def chunks() -> Iterator[bytes]:
        while block := file.file.read(1 << 20):
            yield block

    stored = await asyncio.to_thread(store_stream, rt.settings.media_dir, chunks(), file.filename or "upload", file.content_type or "",
                                     lim["max_bytes"], check)
    p = info["probe"]
    if p.kind == "audio":
        case = case.model_copy(update={"content_type": ContentType.audio})
    return await _ingest(request, rt, caller, case, stored, p, idempotency_key)


@router.post("/cases/media/path", response_model=MediaCaseCreated, status_code=202, summary="Ingest a video or audio case from a trusted local path",
             description="For ingestion pipelines that already hold the file on shared storage: admin keys only, and the path "
                         "must lie under COPILOT_MEDIA_INGEST_ROOTS (403 otherwise, and when that setting is empty). The file "
                         "is copied into the media store and then handled as an upload.")
async def ingest_path(body: PathIngest, request: Request, rt: RuntimeDep, caller: Caller = require("admin")) -> MediaCaseCreated:
    _worker(request)
    await _readable(rt)
    src = trusted_path(body.path, rt.settings.media_ingest_roots)
    lim = _limits(rt)
    info: dict[str, Any] = {}

    def check(path: Any) -> None:
        info["probe"] = probe(path, lim["max_bytes"], lim["max_seconds"], lim["timeout_s"], name=src.name)

    stored = await asyncio.to_thread(store_file, rt.settings.media_dir, src, lim["max_bytes"], check)
    p = info["probe"]
    case = body.case
    if case.content_type == ContentType.post:
        case = case.model_copy(update={"content_type": ContentType.audio if p.kind == "audio" else ContentType.video})
    return await _ingest(request, rt, caller, case, stored, p, None)


@router.get("/cases/{case_id}/media", summary="The case's media file (for playback; supports Range requests)",
            response_class=FileResponse, responses={200: {"content": {"video/mp4": {}, "audio/mpeg": {}}}})
def get_media(case_id: CaseId, rt: RuntimeDep, caller: Caller = require(*READ_CASES)) -> FileResponse:
    with rt.database.session() as s:
        row = repo.get(s, case_id)
        media = dict(row.media or {})
    if not media:
        raise NotFound(f"case {case_id} has no media")
    path = rt.settings.media_dir / media["file"]
    if not path.is_file():
        raise NotFound(f"the media file of case {case_id} is no longer stored")
    # the type the probe found, never the client's: the response must not become HTML in someone's browser
    return FileResponse(path, media_type=media.get("content_type") or "application/octet-stream",
                        headers={"X-Content-Type-Options": "nosniff", "Content-Disposition": "inline; filename=media"})


@router.post("/cases/{case_id}/media/retry", response_model=MediaStatus, status_code=202,
             summary="Extract a failed media case again (after a fix: a model installed, a limit raised)")
async def retry_media(case_id: CaseId, request: Request, rt: RuntimeDep, caller: Caller = require(*MODERATE)) -> MediaStatus:
    worker = _worker(request)
    await _readable(rt)

    def reset() -> MediaStatus:
        with rt.database.session() as s:
            row = repo.get(s, case_id, for_update=True)
            if not row.media:
                raise NotFound(f"case {case_id} has no media")
            if row.status != "failed":
                raise Conflict(f"case {case_id} is {row.status}; only failed media cases are retried")
            row.status, row.status_detail = "processing", "waiting for the media worker (retry)"
            audit.append(s, caller.name, "case.media_retry", "case", case_id, {"previous_reason": row.media.get("failure")})
            return MediaStatus(id=row.id, status=row.status, status_detail=row.status_detail, filename=row.media.get("filename"),
                               sha256=row.media["sha256"], report=None)

    out = await asyncio.to_thread(reset)
    worker.submit(case_id)
    return out


@router.get("/cases/{case_id}/media/status", response_model=MediaStatus, summary="Extraction status and the media report (times of every line)")
def media_status(case_id: CaseId, rt: RuntimeDep, caller: Caller = require(*READ_CASES)) -> MediaStatus:
    with rt.database.session() as s:
        row = repo.get(s, case_id)
        if not row.media:
            raise NotFound(f"case {case_id} has no media")
        report = row.media.get("report")
        return MediaStatus(id=row.id, status=row.status, status_detail=row.status_detail, filename=row.media.get("filename"),
                           sha256=row.media["sha256"], report=MediaReport.model_validate(report) if report else None)
