"""The whole corpus: every area file validated together, versioned by a content hash."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from copilot.errors import CorpusError, UnknownClause
from copilot.policy.parser import CLAUSE_REF, parse_policy_file
from copilot.schema import Clause
from copilot.taxonomy import Taxonomy, load_taxonomy


@dataclass(frozen=True)
class Corpus:
    root: Path
    taxonomy: Taxonomy
    clauses: dict[str, Clause]
    version: str
    file_meta: dict[str, dict]

    def get(self, clause_id: str) -> Clause:
        clause = self.clauses.get(clause_id.strip().upper())
        if clause is None:
            close = difflib.get_close_matches(clause_id.upper(), self.clauses, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownClause(f"no clause {clause_id!r} in corpus version {self.version}{hint}", clause_id=clause_id)
        return clause

    @cached_property
    def active(self) -> list[Clause]:
        return [c for c in self.clauses.values() if c.status == "active"]

    def clause_hash(self, clause: Clause) -> str:
        return hashlib.sha256(clause.model_dump_json(exclude={"file", "line"}).encode()).hexdigest()[:16]


def corpus_version(root: Path, taxonomy_file: str = "taxonomy.yaml") -> str:
    """Content hash of the taxonomy and every area file (names and bytes), so any edit changes the version."""
    h = hashlib.sha256()
    for path in sorted([root / taxonomy_file, *root.glob("*.md")]):
        if path.name in ("FORMAT.md", "README.md", "CHANGELOG.md"):
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def lint_corpus(root: Path) -> tuple[Corpus | None, list[str]]:
    """Validate the corpus, returning it (when valid) and the list of problems."""
    errors: list[str] = []
    tax_path = root / "taxonomy.yaml"
    try:
        taxonomy = load_taxonomy(tax_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, [f"{tax_path}:1: cannot read taxonomy: {exc}"]
    clauses: dict[str, Clause] = {}
    meta: dict[str, dict] = {}
    seen_areas: dict[str, str] = {}
    for a in taxonomy.areas.values():
        if not (root / a.file).exists():
            errors.append(f"{root / a.file}:1: policy file for area {a.key!r} is missing")
    for path in sorted(root.glob("*.md")):
        if path.name in ("FORMAT.md", "README.md", "CHANGELOG.md"):
            continue
        display = str(path.relative_to(root.parent)) if root.parent in path.parents else str(path)
        parsed = parse_policy_file(path, taxonomy, display)
        errors.extend(parsed.errors)
        area = parsed.meta.get("area")
        if isinstance(area, str):
            if area in seen_areas:
                errors.append(f"{display}:1: area {area!r} is also defined in {seen_areas[area]}")
            seen_areas[area] = display
        meta[path.name] = parsed.meta
        for clause in parsed.clauses:
            if clause.id in clauses:
                first = clauses[clause.id]
                errors.append(f"{display}:{clause.line}: duplicate clause ID {clause.id} (first defined at {first.file}:{first.line})")
                continue
            clauses[clause.id] = clause
    for clause in clauses.values():  # a look-alike's note may name the clause that allows it (retrieval links it there)
        for why in clause.non_violating_why:
            for cid in CLAUSE_REF.findall(why):
                if cid not in clauses:
                    errors.append(f"{clause.file}:{clause.line}: {clause.id}: a non-violating example's note names unknown clause {cid}")
    if not clauses:  # said once, rather than as every label lacking a prohibition clause
        errors.append(f"{root}: the corpus has no valid clause (a clause is a '## ID Title' section of an area's policy file)")
    covered = {label for c in clauses.values() if c.kind == "prohibition" for label in c.labels}
    for label in taxonomy.labels:
        if clauses and label not in covered:
            errors.append(f"{tax_path}:1: label {label!r} is not justified by any prohibition clause")
    if errors:
        return None, errors
    return Corpus(root=root, taxonomy=taxonomy, clauses=clauses, version=corpus_version(root), file_meta=meta), []


def load_corpus(root: Path) -> Corpus:
    corpus, errors = lint_corpus(root)
    if corpus is None:
        raise CorpusError(errors)
    return corpus
