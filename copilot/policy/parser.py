"""Parse one policy Markdown file into clauses, collecting every problem as 'file:line: message'.

The format is documented in policy_corpus/FORMAT.md. Parsing never stops at the first problem: a policy author fixing
a file wants the whole list at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copilot.schema import Action, Clause
from copilot.taxonomy import Taxonomy

CLAUSE_ID = re.compile(r"^[A-Z]{2,4}-\d+\.\d+$")
HEADING = re.compile(r"^##\s+(\S+)\s+(.+?)\s*$")
FIELD = re.compile(r"^\*\*([A-Za-z][A-Za-z -]*):\*\*\s*(.*)$")
ITEM = re.compile(r"^\s*[-*]\s+(.*)$")
# a clause ID named in running text, e.g. in an example's note "(why: debunking, MIS-9.3)"
CLAUSE_REF = re.compile(r"\b[A-Z]{2,4}-\d+\.\d+\b")
WHY = re.compile(r"\s*\((?:why|because)\s*:[^)]*\)\s*$", re.IGNORECASE)

SCALAR_FIELDS = ("Labels", "Kind", "Severity", "Action", "Summary", "Rule", "Rationale", "Status")
LIST_FIELDS = ("Exceptions", "Violating", "Non-violating")
REQUIRED = ("Labels", "Kind", "Severity", "Action", "Summary", "Rule", "Rationale", "Exceptions", "Violating", "Non-violating")
FRONT_MATTER_KEYS = ("area", "labels", "version", "effective_date", "owner")
EXCEPTION_KINDS = (
    "counter-speech", "news reporting", "education and research", "art and fiction",
    "self-reference and recovery", "quoting to report", "satire", "other",
)
MIN_EXAMPLES = 2


@dataclass
class ParsedFile:
    path: Path
    meta: dict[str, Any]
    clauses: list[Clause] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _why(text: str) -> str:
    m = WHY.search(text.strip())
    return m.group(0).strip().strip("()").split(":", 1)[1].strip() if m else ""


def _clean_example(text: str) -> str:
    text = WHY.sub("", text.strip())
    if len(text) >= 2 and text[0] in "\"“'" and text[-1] in "\"”'":
        text = text[1:-1]
    return text.strip()


def _split_front_matter(lines: list[str], where: str, errors: list[str]) -> tuple[dict[str, Any], int]:
    if not lines or lines[0].strip() != "---":
        errors.append(f"{where}:1: missing YAML front matter (a first line '---')")
        return {}, 0
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            try:
                meta = yaml.safe_load("\n".join(lines[1:i])) or {}
            except yaml.YAMLError as exc:
                errors.append(f"{where}:2: front matter is not valid YAML: {exc}")
                return {}, i + 1
            if not isinstance(meta, dict):
                errors.append(f"{where}:2: front matter must be a mapping")
                return {}, i + 1
            for key in FRONT_MATTER_KEYS:
                if key not in meta:
                    errors.append(f"{where}:1: front matter lacks '{key}'")
            return meta, i + 1
    errors.append(f"{where}:1: front matter is not closed by a second '---'")
    return {}, len(lines)


def parse_policy_file(path: Path, taxonomy: Taxonomy, display: str | None = None) -> ParsedFile:
    where = display or str(path)
    errors: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return ParsedFile(path, {}, errors=[f"{where}:1: not UTF-8 text ({exc.reason})"])
    lines = text.splitlines()
    meta, start = _split_front_matter(lines, where, errors)
    result = ParsedFile(path, meta, errors=errors)
    area_key = meta.get("area")
    area = taxonomy.areas.get(area_key) if isinstance(area_key, str) else None
    if meta and area is None:
        errors.append(f"{where}:1: front matter area {area_key!r} is not an area of taxonomy.yaml")
    for label in meta.get("labels") or []:
        if label not in taxonomy.labels:
            errors.append(f"{where}:1: front matter names unknown label {label!r}")
        elif area and taxonomy.labels[label].area != area.key:
            errors.append(f"{where}:1: label {label!r} belongs to area {taxonomy.labels[label].area!r}, not {area.key!r}")

    blocks: list[tuple[int, str, str, list[tuple[int, str]]]] = []
    current: list[tuple[int, str]] | None = None
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if line.startswith("## "):
            m = HEADING.match(line)
            if not m:
                errors.append(f"{where}:{lineno}: malformed clause heading {line.strip()!r} (expected '## ID Title')")
                current = None
                continue
            current = []
            blocks.append((lineno, m.group(1), m.group(2), current))
        elif current is not None:
            current.append((lineno, line))
    for lineno, clause_id, title, body in blocks:
        clause = _parse_clause(clause_id, title, body, lineno, where, area.key if area else "", taxonomy, errors)
        if clause is not None:
            result.clauses.append(clause)
    return result


def _parse_clause(
    clause_id: str, title: str, body: list[tuple[int, str]], lineno: int, where: str, area: str,
    taxonomy: Taxonomy, errors: list[str],
) -> Clause | None:
    n_before = len(errors)
    if not CLAUSE_ID.match(clause_id):
        errors.append(f"{where}:{lineno}: malformed clause ID {clause_id!r} (expected like HAT-2.3)")
        return None
    prefix = clause_id.split("-")[0]
    if area and taxonomy.areas[area].prefix != prefix:
        errors.append(f"{where}:{lineno}: clause {clause_id} has prefix {prefix!r}; this area uses {taxonomy.areas[area].prefix!r}")
    fields: dict[str, Any] = {}
    field_line: dict[str, int] = {}
    name: str | None = None
    for ln, line in body:
        m = FIELD.match(line.strip())
        if m:
            name = m.group(1).strip()
            if name not in SCALAR_FIELDS and name not in LIST_FIELDS:
                errors.append(f"{where}:{ln}: {clause_id}: unknown field '{name}'")
                name = None
                continue
            if name in fields:
                errors.append(f"{where}:{ln}: {clause_id}: field '{name}' given twice")
            field_line[name] = ln
            fields[name] = [] if name in LIST_FIELDS else m.group(2).strip()
            if name in LIST_FIELDS and m.group(2).strip():
                errors.append(f"{where}:{ln}: {clause_id}: '{name}' must be a list of '- ' items on the following lines")
            continue
        if not line.strip() or name is None:
            continue
        if name in LIST_FIELDS:
            item = ITEM.match(line)
            if item:
                fields[name].append(item.group(1).strip())
            elif fields[name]:
                fields[name][-1] += " " + line.strip()
        else:
            fields[name] = f"{fields[name]} {line.strip()}".strip()
    for req in REQUIRED:
        if req not in fields or not fields[req]:
            errors.append(f"{where}:{lineno}: {clause_id}: missing or empty field '{req}'")
            # keep checking the fields that are there: an author wants every problem of the clause at once
            fields.setdefault(req, [] if req in LIST_FIELDS else "")
            field_line.setdefault(req, lineno)

    labels = [x.strip() for x in fields["Labels"].split(",") if x.strip()]
    if fields["Labels"] and not labels:  # e.g. "**Labels:** ," passes the non-empty check above but names no label
        errors.append(f"{where}:{field_line['Labels']}: {clause_id}: Labels names no label (give a comma-separated list)")
    for label in labels:
        if label not in taxonomy.labels:
            errors.append(f"{where}:{field_line['Labels']}: {clause_id}: unknown label {label!r}")
        elif area and taxonomy.labels[label].area != area:
            errors.append(f"{where}:{field_line['Labels']}: {clause_id}: label {label!r} belongs to area {taxonomy.labels[label].area!r}")
    kind = fields["Kind"].lower()
    if fields["Kind"] and kind not in ("prohibition", "allowance"):
        errors.append(f"{where}:{field_line['Kind']}: {clause_id}: Kind must be prohibition or allowance, not {fields['Kind']!r}")
    try:
        severity = int(fields["Severity"] or 4)
        if not 1 <= severity <= 4:
            raise ValueError
    except ValueError:
        errors.append(f"{where}:{field_line['Severity']}: {clause_id}: Severity must be 1..4, not {fields['Severity']!r}")
        severity = 4
    action = fields["Action"].strip().lower()
    if fields["Action"] and action not in Action.__members__:
        errors.append(f"{where}:{field_line['Action']}: {clause_id}: unknown Action {fields['Action']!r} (valid: {', '.join(Action.__members__)})")
    for exc in fields["Exceptions"]:
        head = exc.split(":", 1)[0].strip().lower()
        if head not in EXCEPTION_KINDS:
            errors.append(f"{where}:{field_line['Exceptions']}: {clause_id}: exception kind {head!r} not one of {', '.join(EXCEPTION_KINDS)}")
    for key in ("Violating", "Non-violating"):
        if fields[key] and len(fields[key]) < MIN_EXAMPLES:
            errors.append(f"{where}:{field_line[key]}: {clause_id}: needs at least {MIN_EXAMPLES} {key} examples, has {len(fields[key])}")
    status = fields.get("Status", "active").lower()
    if status not in ("active", "retired"):
        errors.append(f"{where}:{field_line['Status']}: {clause_id}: Status must be active or retired")
    if len(errors) > n_before:
        return None
    return Clause(
        id=clause_id, area=area, title=title, labels=labels, kind=kind,  # type: ignore[arg-type]
        severity=severity, action=Action(action), summary=fields["Summary"], rule=fields["Rule"],
        rationale=fields["Rationale"], exceptions=fields["Exceptions"],
        violating=[_clean_example(x) for x in fields["Violating"]],
        non_violating=[_clean_example(x) for x in fields["Non-violating"]],
        non_violating_why=[_why(x) for x in fields["Non-violating"]],
        status=status, file=where, line=lineno,  # type: ignore[arg-type]
    )
