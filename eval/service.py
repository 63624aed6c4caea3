"""Run an evaluation as a registered, observable job (used by the API's background runs and by `copilot eval run`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from copilot.config import PROJECT_ROOT
from copilot.errors import CopilotError, Forbidden
from copilot.runtime import Runtime
from copilot.store import evalruns
from eval.datasets import dataset_hash, read_many
from eval.runner import run

log = logging.getLogger(__name__)


def allowed_roots(rt: Runtime) -> list[Path]:
    """Datasets the API may read: the project's eval folder, <data_dir>/datasets and the shared training data."""
    return [PROJECT_ROOT / "eval", rt.settings.data_dir / "datasets", PROJECT_ROOT.parent / "shared" / "data"]


def resolve_dataset(rt: Runtime, name: str) -> Path:
    path = (PROJECT_ROOT / name).resolve() if not Path(name).is_absolute() else Path(name).resolve()
    if not any(path == r.resolve() or r.resolve() in path.parents for r in allowed_roots(rt)):
        raise Forbidden(f"dataset {name!r} is outside the allowed folders ({', '.join(str(r) for r in allowed_roots(rt))})")
    return path


def register(rt: Runtime, dataset: Path, mode: str, actor: str) -> tuple[str, Any]:
    rows = read_many([dataset], rt.corpus.taxonomy)
    h = dataset_hash(rows)
    with rt.database.session() as s:
        row = evalruns.create(s, str(dataset), h, mode, actor, "")
        row.out_dir = str(rt.settings.data_dir / "eval_runs" / row.id)
        return row.id, rows


def execute(rt: Runtime, run_id: str, rows: Any, mode: str = "fast", labels: list[str] | None = None, limit: int | None = None,
            allow_overlap: bool = False, slice_fields: list[str] | None = None) -> dict[str, Any] | None:
    with rt.database.session() as s:
        row = evalruns.get(s, run_id)
        out_dir, dataset, h = Path(row.out_dir or ""), row.dataset, row.dataset_hash
        evalruns.update(s, run_id, status="running")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        frac = done / total
        if frac - last[0] >= 0.05 or done == total:
            last[0] = frac
            with rt.database.session() as s2:
                evalruns.update(s2, run_id, progress=round(frac, 3))

    try:
        m = run(rt, rows, out_dir, mode, labels, limit, allow_overlap, dataset, h, slice_fields, progress)
    except CopilotError as exc:
        with rt.database.session() as s:
            evalruns.update(s, run_id, status="failed", error=exc.detail)
        raise
    except Exception as exc:  # the run is marked failed with the reason; the caller's thread logs it
        log.exception("evaluation run %s failed", run_id)
        with rt.database.session() as s:
            evalruns.update(s, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        return None
    summary = {k: m[k] for k in ("macro", "micro", "flagged", "citations", "citations_violating", "invented_clause_ids", "abstention_rate", "latency_ms", "ci95")}
    summary["flagged"] = {k: v for k, v in summary["flagged"].items() if k != "reliability"}
    with rt.database.session() as s:
        evalruns.update(s, run_id, status="done", progress=1.0, metrics=summary, corpus_version=m["run"]["corpus_version"],
                        model_ids=m["run"]["model_ids"], prompt_version=m["run"]["prompt_version"])
    return m
