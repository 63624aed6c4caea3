from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from copilot.cli import app
from copilot.errors import CorpusError, UnknownClause
from copilot.policy.corpus import corpus_version, lint_corpus, load_corpus


def test_bundled_corpus_is_valid_and_covers_every_label(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    assert len(corpus.clauses) >= 120
    prohibited = {l for c in corpus.clauses.values() if c.kind == "prohibition" for l in c.labels}
    assert prohibited == set(corpus.taxonomy.labels)
    for c in corpus.clauses.values():
        assert len(c.violating) >= 2 and len(c.non_violating) >= 2, c.id
        assert c.id.split("-")[0] == corpus.taxonomy.areas[c.area].prefix


def _copy(corpus_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "policy_corpus"
    shutil.copytree(corpus_dir, dst)
    return dst


def _first_heading_line(path: Path) -> tuple[int, str]:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("## "):
            return i, line
    raise AssertionError("no clause heading")


def test_duplicate_id_is_reported_with_file_and_line(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    hate = root / "hate.md"
    lines = hate.read_text().splitlines()
    first_no, first = _first_heading_line(hate)
    clause_id = first.split()[1]
    second_no = next(i for i, l in enumerate(lines, 1) if l.startswith("## ") and i > first_no)
    lines[second_no - 1] = f"## {clause_id} Copied heading"
    hate.write_text("\n".join(lines) + "\n")
    _, errors = lint_corpus(root)
    assert any(f"hate.md:{second_no}: duplicate clause ID {clause_id}" in e and f":{first_no})" in e for e in errors), errors


def test_malformed_id_unknown_label_and_missing_field(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    spam = root / "spam.md"
    text = spam.read_text()
    line_no, heading = _first_heading_line(spam)
    text = text.replace(heading, "## SPAM_1 Bad id", 1)
    spam.write_text(text)
    priv = root / "privacy.md"
    ptext = priv.read_text()
    labels_line = next(l for l in ptext.splitlines() if l.startswith("**Labels:**"))
    ptext = ptext.replace(labels_line, "**Labels:** privacy, doxing", 1)
    rationale = next(l for l in ptext.splitlines() if l.startswith("**Rationale:**"))
    ptext = ptext.replace(rationale, "", 1)
    priv.write_text(ptext)
    corpus, errors = lint_corpus(root)
    assert corpus is None
    joined = "\n".join(errors)
    assert f"spam.md:{line_no}: malformed clause ID 'SPAM_1'" in joined
    assert "privacy.md:" in joined and "unknown label 'doxing'" in joined
    assert "missing or empty field 'Rationale'" in joined
    with pytest.raises(CorpusError):
        load_corpus(root)


def test_cli_lint_fails_on_broken_copy(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    (root / "violence.md").write_text("no front matter here\n## VIO-1.1 Something\n")
    result = CliRunner().invoke(app, ["policy", "lint", "--corpus", str(root)])
    assert result.exit_code == 1
    assert "violence.md:1: missing YAML front matter" in result.output


def test_version_changes_with_content(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    before = corpus_version(root)
    assert before == corpus_version(corpus_dir)
    f = root / "spam.md"
    f.write_text(f.read_text().replace("**Rule:**", "**Rule:** Edited.", 1))
    assert corpus_version(root) != before


def test_unknown_clause_suggests_close_ids(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    some = next(iter(corpus.clauses))
    with pytest.raises(UnknownClause) as exc:
        corpus.get(some + "9")
    assert some in exc.value.detail


def test_lookalike_note_naming_an_allowance_links_the_example_there(corpus_dir: Path) -> None:
    from copilot.retrieval.chunks import corpus_chunks, named_allowance

    corpus = load_corpus(corpus_dir)
    chunks = corpus_chunks(corpus)
    by_text: dict[str, set[tuple[str, str]]] = {}
    for ch in chunks:
        by_text.setdefault(ch.text, set()).add((ch.clause_id, ch.kind))
    indexed_elsewhere = {e for c in corpus.active for e in c.violating + (c.non_violating if c.kind == "allowance" else [])}
    linked = unlinked = 0
    for clause in corpus.active:
        if clause.kind != "prohibition":
            continue
        assert len(clause.non_violating_why) == len(clause.non_violating), clause.id
        for ex, why in zip(clause.non_violating, clause.non_violating_why, strict=True):
            target = named_allowance(corpus, clause, why)
            if target is not None:
                assert corpus.clauses[target].kind == "allowance" and target in why
                assert by_text[ex] == {(target, "allowed")}, (clause.id, ex)
                linked += 1
            elif ex not in indexed_elsewhere:
                assert ex not in by_text, (clause.id, ex)  # an unlinked look-alike is not indexed at all
                unlinked += 1
    assert linked >= 20 and unlinked >= 20  # the bundled corpus has both kinds of note
    assert len({(c.clause_id, c.kind, c.text) for c in chunks}) == len(chunks)  # no chunk twice


def test_note_naming_an_unknown_clause_is_a_lint_error(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    mis = root / "misinformation.md"
    text = mis.read_text()
    assert "(why: debunking, MIS-9.3)" in text
    mis.write_text(text.replace("(why: debunking, MIS-9.3)", "(why: debunking, MIS-9.8)", 1))
    corpus, errors = lint_corpus(root)
    assert corpus is None
    assert any("misinformation.md:" in e and "names unknown clause MIS-9.8" in e for e in errors), errors


def test_labels_field_naming_no_label_is_a_lint_error(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    spam = root / "spam.md"
    lines = spam.read_text().splitlines()
    labels_no = next(i for i, l in enumerate(lines, 1) if l.startswith("**Labels:**"))
    lines[labels_no - 1] = "**Labels:** ,"  # not empty text, but an empty list once split
    spam.write_text("\n".join(lines) + "\n")
    corpus, errors = lint_corpus(root)
    assert corpus is None
    assert any(f"spam.md:{labels_no}:" in e and "Labels names no label" in e for e in errors), errors


def test_corpus_without_clauses_fails_lint(corpus_dir: Path, tmp_path: Path) -> None:
    root = _copy(corpus_dir, tmp_path)
    for area in load_corpus(corpus_dir).taxonomy.areas.values():  # keep each file's front matter and intro, drop every clause
        path = root / area.file
        text = path.read_text()
        path.write_text(text[: text.index("\n## ") + 1])
    corpus, errors = lint_corpus(root)
    assert corpus is None
    assert errors == [f"{root}: the corpus has no valid clause (a clause is a '## ID Title' section of an area's policy file)"]
    result = CliRunner().invoke(app, ["policy", "lint", "--corpus", str(root)])
    assert result.exit_code == 1 and "no valid clause" in result.output
