from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.deps import AUDIT, RuntimeDep, require
from api.metrics import render

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: one entry per component; 503 until the required ones are ready")
def readyz(rt: RuntimeDep) -> JSONResponse:
    comps = rt.readiness()
    ready = all(c.status == "ready" for c in comps if c.required)
    return JSONResponse({"ready": ready, "components": [c.as_dict() for c in comps]}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (auditor or admin key)", response_class=Response, dependencies=[require(*AUDIT)])
def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
