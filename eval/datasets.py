"""Datasets in the JSONL contract of DESIGN.md (gzipped or not), validated row by row."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from copilot.errors import InvalidInput
from copilot.schema import DatasetRow
from copilot.taxonomy import Taxonomy


def read_rows(path: Path, taxonomy: Taxonomy) -> list[DatasetRow]:
    if not path.exists():
        raise InvalidInput(f"dataset {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = DatasetRow.model_validate_json(line)
            except ValueError as exc:
                raise InvalidInput(f"{path}:{n}: not a dataset row ({str(exc).splitlines()[0]})") from None
            if row.labels is not None:
                for label in row.labels:
                    taxonomy.check(label)
                row.labels = taxonomy.close(row.labels)
            rows.append(row)
    if not rows:
        raise InvalidInput(f"dataset {path} has no rows")
    return rows


def read_many(paths: list[Path], taxonomy: Taxonomy) -> list[DatasetRow]:
    out = []
    for p in paths:
        out.extend(read_rows(p, taxonomy) if p.is_file() else [r for f in sorted(p.glob("*.jsonl*")) for r in read_rows(f, taxonomy)])
    return out


def dataset_hash(rows: list[DatasetRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r.model_dump(), sort_keys=True).encode())
    return h.hexdigest()[:16]
