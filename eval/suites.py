"""Suites: several evaluation runs described in one YAML file (eval/suites/*.yaml), run one after another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from copilot.config import PROJECT_ROOT
from copilot.errors import InvalidInput


class SuiteRun(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str
    mode: str = Field("fast", pattern="^(fast|full|auto)$")
    labels: list[str] | None = None
    slices: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)


class Suite(BaseModel):
    name: str
    runs: list[SuiteRun] = Field(min_length=1)


def load_suite(path: Path) -> Suite:
    try:
        return Suite.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise InvalidInput(f"{path}: not a valid suite ({str(exc).splitlines()[0]})") from None


def run_suite(rt: Any, suite: Suite, out_dir: Path, allow_overlap: bool = False) -> dict[str, dict[str, Any]]:
    from eval.datasets import dataset_hash, read_many
    from eval.runner import run

    results = {}
    for r in suite.runs:
        ds = (PROJECT_ROOT / r.dataset) if not Path(r.dataset).is_absolute() else Path(r.dataset)
        rows = read_many([ds], rt.corpus.taxonomy)
        m = run(rt, rows, out_dir / r.name, r.mode, r.labels, r.limit, allow_overlap, r.dataset, dataset_hash(rows), r.slices)
        results[r.name] = {"macro_f1": m["macro"]["f1"], "flagged_auprc": m["flagged"]["auprc"], "fpr_clean": m["flagged"]["false_positive_rate_on_clean"],
                           "citation_precision": m["citations_violating"]["precision"], "abstention": m["abstention_rate"]}
    return results
