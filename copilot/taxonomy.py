"""The label set, read from policy_corpus/taxonomy.yaml."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from copilot.errors import InvalidInput, UnknownArea, UnknownLabel


@dataclass(frozen=True)
class Area:
    key: str
    title: str
    file: str
    prefix: str


@dataclass(frozen=True)
class Label:
    name: str
    area: str
    description: str


def _known(value: str, valid: Mapping[str, object], noun: str, error: type[InvalidInput]) -> str:
    if value in valid:
        return value
    close = difflib.get_close_matches(value, valid, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise error(f"unknown {noun} {value!r}{hint} (valid: {', '.join(valid)})")


@dataclass(frozen=True)
class Taxonomy:
    areas: dict[str, Area]
    labels: dict[str, Label]

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def check(self, label: str) -> str:
        """Return the label or raise UnknownLabel naming the closest valid labels."""
        return _known(label, self.labels, "label", UnknownLabel)

    def check_area(self, area: str) -> str:
        """Return the area key or raise UnknownArea naming the closest and all valid areas (a filter on a typo would
        otherwise match nothing, silently)."""
        return _known(area, self.areas, "area", UnknownArea)

    def close(self, labels: list[str]) -> list[str]:
        """Add the base label of every sub-label ('hate/threatening' implies 'hate'), as OpenAI's categories nest."""
        out = set(labels)
        for label in labels:
            if self.is_sub_label(label):
                out.add(label.split("/")[0])
        return sorted(out)

    def is_sub_label(self, label: str) -> bool:
        """'hate/threatening' is a sub-label (of 'hate'); 'hate' is not."""
        return "/" in label and label.split("/")[0] in self.labels

    def area_of(self, label: str) -> Area:
        return self.areas[self.labels[self.check(label)].area]

    def area_by_prefix(self, prefix: str) -> Area | None:
        return next((a for a in self.areas.values() if a.prefix == prefix), None)


def load_taxonomy(path: Path) -> Taxonomy:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    areas = {k: Area(key=k, title=v["title"], file=v["file"], prefix=v["prefix"]) for k, v in raw["areas"].items()}
    labels = {}
    for name, v in raw["labels"].items():
        if v["area"] not in areas:
            raise ValueError(f"{path}: label {name!r} names unknown area {v['area']!r}")
        labels[name] = Label(name=name, area=v["area"], description=v["description"].strip())
    return Taxonomy(areas=areas, labels=labels)


@lru_cache
def default_taxonomy() -> Taxonomy:
    from copilot.config import get_settings

    return load_taxonomy(get_settings().corpus_dir / "taxonomy.yaml")
