"""Training data: which source may speak for which label, splits, and the checks run before any training.

Per-source decisions (documented in the model card, reasons in the comments of SOURCES):
- a label a source does not annotate is *masked* (no loss) for its rows, never treated as negative;
- rows whose labels are null are unlabelled and skipped;
- dev split: the source's own test split where it has one, else a fixed stratified 15 % by (source, label set),
  assigned by a hash of the row id so it never moves between runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copilot.config import PROJECT_ROOT
from copilot.errors import ComponentMissing, InvalidInput
from copilot.policy.corpus import Corpus
from copilot.taxonomy import Taxonomy

WRITTEN_DATA = PROJECT_ROOT / "data" / "written"
DEV_SHARE = 0.15
ALL = "*"


@dataclass(frozen=True)
class SourcePolicy:
    file: str
    speaks_for: tuple[str, ...]  # labels this source annotates; ALL = every label
    weight: float
    cap: int | None  # rows kept for training (random, fixed seed); dev keeps its share of the cap
    why: str
    # For rows labelled only with these labels, mask these others (e.g. Davidson "offensive" says nothing reliable)
    mask_when: dict[str, tuple[str, ...]] = field(default_factory=dict)


SOURCES: tuple[SourcePolicy, ...] = (
    SourcePolicy("davidson.jsonl.gz", ("hate", "hate/threatening", "harassment"), 0.5, 2500,
                 "Tweets. Its 'offensive' class (mapped to harassment) is mostly casual profanity, so on those rows harassment is masked, "
                 "not positive; hate rows and 'neither' rows are kept. Down-weighted: 2013 Twitter style and hate/offensive confusion.",
                 mask_when={"harassment": ("harassment",)}),
    SourcePolicy("ethos.jsonl.gz", ("hate", "hate/threatening", "violence"), 1.0, None,
                 "YouTube/Reddit comments with annotator fractions; speaks for hate, hate/threatening and violence only."),
    SourcePolicy("toxigen_annotated.jsonl.gz", ("hate",), 0.8, 2000,
                 "Machine-generated implicit statements about 13 groups; speaks for hate only; null (ambiguous) rows skipped."),
    SourcePolicy("sdcnl_suicide_vs_depression.jsonl.gz", ("self-harm",), 0.5, 1600,
                 "Reddit posts labelled by subreddit; noisy (depression posts may describe self-harm) so down-weighted; no intent/instruction split."),
    SourcePolicy("sms_spam.jsonl.gz", (ALL,), 0.7, 2500,
                 "SMS; spam rows are spam and nothing else, ham rows are ordinary messages, negative for every label. A narrow 2000s idea of spam."),
    SourcePolicy("strongreject.jsonl.gz", (), 1.0, None,
                 "Requests to an assistant labelled by category only: each row speaks only for its own label (positive), all else masked."),
)
WRITTEN_WEIGHT = 1.5
CORPUS_WEIGHT = 1.5


@dataclass
class Example:
    id: str
    text: str
    y: np.ndarray  # float32 0/1 per taxonomy label
    mask: np.ndarray  # float32 1 = this label is annotated for this row
    weight: float
    source: str
    split: str  # train | dev


def _open(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path}:{n}: not valid JSON ({exc.msg}); fix or remove the line") from None


def norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def text_key(text: str) -> str:
    return hashlib.sha1(norm_text(text).encode()).hexdigest()


def _assign_splits(rows: list[dict], group_of) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Stratified fixed split: within each group, rows sorted by a hash of their id; the first 15 % go to dev."""
    groups: dict[object, list[str]] = {}
    for r in rows:
        groups.setdefault(group_of(r), []).append(r["id"])
    out = {}
    for ids in groups.values():
        ids.sort(key=lambda i: hashlib.md5(i.encode()).hexdigest())
        n_dev = round(len(ids) * DEV_SHARE)
        for k, i in enumerate(ids):
            out[i] = "dev" if k < n_dev else "train"
    return out


def load_public(taxonomy: Taxonomy, data_dir: Path | None = None, seed: int = 13) -> list[Example]:
    if data_dir is None:
        from copilot.config import get_settings

        data_dir = get_settings().training_data_dir
    labels = taxonomy.label_names
    li = {l: i for i, l in enumerate(labels)}
    out: list[Example] = []
    for pol in SOURCES:
        path = data_dir / pol.file
        if not path.exists():
            raise ComponentMissing(f"training data: {path} is missing (set COPILOT_TRAINING_DATA_DIR to the shared data folder)")
        rows = [r for r in _open(path) if r.get("labels") is not None and str(r.get("text", "")).strip()]
        for r in rows:
            for l in r["labels"]:
                taxonomy.check(l)
        own = any(r.get("split") for r in rows)
        splits = {r["id"]: ("dev" if r.get("split") in ("test", "dev", "validation") else "train") for r in rows} if own and len({r.get("split") for r in rows}) > 1 \
            else _assign_splits(rows, lambda r: tuple(sorted(r["labels"])))
        if pol.cap is not None and len(rows) > pol.cap:
            rng = random.Random(seed)
            # Keep every positive of a rare label, then sample the rest: caps should not starve minority labels.
            counts = Counter(l for r in rows for l in r["labels"])
            rare = [r for r in rows if any(counts[l] < pol.cap // 3 for l in r["labels"])]
            rare_ids = {r["id"] for r in rare}
            rest = [r for r in rows if r["id"] not in rare_ids]
            rng.shuffle(rest)
            rows = rare + rest[: max(0, pol.cap - len(rare))]
        for r in rows:
            y = np.zeros(len(labels), np.float32)
            for l in r["labels"]:
                y[li[l]] = 1
            if pol.speaks_for == (ALL,):
                mask = np.ones(len(labels), np.float32)
            elif pol.speaks_for:
                mask = np.zeros(len(labels), np.float32)
                for l in pol.speaks_for:
                    mask[li[l]] = 1
            else:
                mask = y.copy()  # positives only
            for lab, masked in pol.mask_when.items():
                if r["labels"] == [lab]:
                    for m in masked:
                        mask[li[m]] = 0
                        y[li[m]] = 0
            out.append(Example(r["id"], r["text"], y, mask, pol.weight, pol.file.split(".")[0], splits[r["id"]]))
    return out


def load_written(taxonomy: Taxonomy, folder: Path = WRITTEN_DATA) -> list[Example]:
    labels = taxonomy.label_names
    li = {l: i for i, l in enumerate(labels)}
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for r in _open(path):
            if r.get("labels") is None or not str(r.get("text", "")).strip():
                continue
            for l in r["labels"]:
                taxonomy.check(l)
            r["labels"] = taxonomy.close(r["labels"])
            rows.append(r)
    splits = _assign_splits(rows, lambda r: tuple(sorted(r["labels"])))
    out = []
    for r in rows:
        y = np.zeros(len(labels), np.float32)
        for l in r["labels"]:
            y[li[l]] = 1
        out.append(Example(r["id"], r["text"], y, np.ones(len(labels), np.float32), WRITTEN_WEIGHT, "copilot-written", splits[r["id"]]))
    return out


def load_corpus_examples(corpus: Corpus) -> list[Example]:
    """Violating examples are positive for their clause's base label (sub-labels masked unless the clause has one
    label); allowed look-alikes are negative for every label of their area."""
    labels = corpus.taxonomy.label_names
    li = {l: i for i, l in enumerate(labels)}
    out = []
    for c in corpus.active:
        area_labels = [l for l, v in corpus.taxonomy.labels.items() if v.area == c.area]
        for kind, texts in (("v", c.violating), ("n", c.non_violating)):
            for j, text in enumerate(texts):
                y = np.zeros(len(labels), np.float32)
                mask = np.zeros(len(labels), np.float32)
                if kind == "v" and c.kind == "prohibition":
                    pos = c.labels if len(c.labels) == 1 else [l for l in c.labels if "/" not in l] or c.labels[:1]
                    for l in pos:
                        y[li[l]] = 1
                        mask[li[l]] = 1
                        base = l.split("/")[0]
                        if "/" in l and base in li:  # a sub-label implies its base label
                            y[li[base]] = 1
                            mask[li[base]] = 1
                elif kind == "n":
                    for l in area_labels:
                        mask[li[l]] = 1
                else:
                    continue  # what an allowance clause lists as still violating: which label applies is not stated
                rid = f"corpus-{c.id}-{kind}{j}"
                split = "dev" if int(hashlib.md5(rid.encode()).hexdigest(), 16) % 100 < DEV_SHARE * 100 else "train"
                out.append(Example(rid, text, y, mask, CORPUS_WEIGHT, "policy-corpus", split))
    return out


def drop_overlap(examples: list[Example], forbidden_texts: set[str]) -> tuple[list[Example], int]:
    """Remove training rows whose normalised text appears in an evaluation set (gold cases, retrieval queries)."""
    keys = {text_key(t) for t in forbidden_texts}
    kept = [e for e in examples if text_key(e.text) not in keys]
    return kept, len(examples) - len(kept)


def dedupe(examples: list[Example]) -> list[Example]:
    """Identical texts across sources: keep the first (dev rows first, so a dev text never also trains)."""
    seen: set[str] = set()
    out = []
    for e in sorted(examples, key=lambda e: e.split != "dev"):
        k = text_key(e.text)
        if k in seen:
            continue
        seen.add(k)
        out.append(e)
    return out


def eval_texts(root: Path = PROJECT_ROOT) -> set[str]:
    texts: set[str] = set()
    for path in [*(root / "eval" / "cases").rglob("*.jsonl"), *(root / "eval" / "retrieval").rglob("*.jsonl")]:
        for r in _open(path):
            t = r.get("text") or r.get("query")
            if t:
                texts.add(t)
    return texts


def label_counts(examples: list[Example], labels: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for split in ("train", "dev"):
        ys = [e.y * e.mask for e in examples if e.split == split]
        tot = np.sum(ys, axis=0) if ys else np.zeros(len(labels))
        out[split] = {l: int(v) for l, v in zip(labels, tot, strict=True)}
    return out


def to_dataset_rows(examples: list[Example], labels: list[str]) -> Iterator[dict]:
    """Examples as rows of the JSONL contract (DESIGN.md): labels a source does not annotate for a row are listed in
    source_labels.unknown_categories, so evaluation masks them exactly as training did."""
    for e in examples:
        unknown = [l for l, m in zip(labels, e.mask, strict=True) if m < 0.5]
        yield {"id": e.id, "text": e.text, "labels": [l for l, y, m in zip(labels, e.y, e.mask, strict=True) if y > 0.5 and m >= 0.5],
               "source": e.source, "split": e.split, "source_labels": {"unknown_categories": unknown} if unknown else {}}
