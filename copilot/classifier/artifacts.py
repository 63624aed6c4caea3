"""The files of a trained classifier folder and how to read them (shared by training, inference and eval)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS_FILE = "labels.json"
CALIBRATION_FILE = "calibration.json"
THRESHOLDS_FILE = "thresholds.json"
TRAIN_HASHES_FILE = "train_hashes.txt.gz"


@dataclass
class ClassifierMeta:
    labels: list[str]
    unsupported: dict[str, str]
    base_model: str
    max_len: int
    model_id: str
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> ClassifierMeta:
        raw = json.loads((folder / LABELS_FILE).read_text())
        return cls(
            labels=raw["labels"], unsupported=raw.get("unsupported", {}), base_model=raw["base_model"],
            max_len=int(raw.get("max_len", 128)), model_id=raw["model_id"], extra=raw.get("extra", {}),
        )

    def write(self, folder: Path) -> None:
        (folder / LABELS_FILE).write_text(json.dumps({
            "labels": self.labels, "unsupported": self.unsupported, "base_model": self.base_model,
            "max_len": self.max_len, "model_id": self.model_id, "extra": self.extra,
        }, indent=2))


@dataclass
class Calibration:
    """Per-label Platt scaling of the raw logit: p = sigmoid(a * logit + b); fitted on the dev split."""

    a: np.ndarray
    b: np.ndarray

    @classmethod
    def identity(cls, n: int) -> Calibration:
        return cls(np.ones(n, dtype=np.float32), np.zeros(n, dtype=np.float32))

    @classmethod
    def read(cls, folder: Path, labels: list[str]) -> Calibration:
        path = folder / CALIBRATION_FILE
        if not path.exists():
            return cls.identity(len(labels))
        raw = json.loads(path.read_text())["labels"]
        return cls(np.array([raw[l]["a"] for l in labels], dtype=np.float32), np.array([raw[l]["b"] for l in labels], dtype=np.float32))

    def write(self, folder: Path, labels: list[str], method: str) -> None:
        (folder / CALIBRATION_FILE).write_text(json.dumps({
            "method": method,
            "labels": {l: {"a": float(a), "b": float(b)} for l, a, b in zip(labels, self.a, self.b, strict=True)},
        }, indent=2))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        z = logits * self.a + self.b
        return 1.0 / (1.0 + np.exp(-z))


def read_thresholds(path: Path, labels: list[str]) -> dict[str, float]:
    raw = json.loads(path.read_text())
    values = raw.get("thresholds", raw)
    missing = [l for l in labels if l not in values]
    if missing:
        raise ValueError(f"{path}: no threshold for {', '.join(missing)}")
    return {l: float(values[l]) for l in labels}
