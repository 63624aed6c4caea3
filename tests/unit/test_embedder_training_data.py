"""The embedder's training queries (models/embedder_train): they load against the bundled corpus, and a broken line
stops the fine-tuning with file:line instead of being skipped."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from copilot.config import PROJECT_ROOT
from copilot.policy.corpus import Corpus
from copilot.retrieval.finetune import load_extra_anchors

TRAIN_DIR = PROJECT_ROOT / "models" / "embedder_train"


def test_shipped_training_queries_cover_every_active_clause(corpus: Corpus) -> None:
    files = tuple(sorted(TRAIN_DIR.glob("*.jsonl")))
    assert files
    anchors = load_extra_anchors(corpus, files)
    questions = Counter(json.loads(line)["clause_id"] for f in files for line in f.read_text().splitlines()
                        if line.strip() and json.loads(line)["kind"] == "question")
    assert {c.id for c in corpus.active} <= {a.clause_id for a in anchors}
    assert min(questions[c.id] for c in corpus.active) >= 2
    assert len({a.text for a in anchors}) == len(anchors)  # no duplicated line


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "is doxxing ok?", "clause_id": "PRV-99.9", "kind": "question"}', "PRV-99.9 is not an active clause"),
    ('{"text": "is doxxing ok?"}', "not a {\"text\", \"clause_id\"} object"),
    ("not json", "not a {\"text\", \"clause_id\"} object"),
])
def test_a_bad_training_line_is_an_error_with_file_and_line(corpus: Corpus, tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"text": "can I post my ex\'s address?", "clause_id": "PRV-1.1", "kind": "question"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"queries\.jsonl:2: .*{re.escape(message)}"):
        load_extra_anchors(corpus, (path,))


def test_training_queries_are_not_copies_of_the_retrieval_eval_queries() -> None:
    """The eval queries measure the embedder: a training line that rewords one would leak it (token Jaccard >= 0.6)."""

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9']+", text.lower()))

    evals = [words(json.loads(line)["query"]) for f in sorted((PROJECT_ROOT / "eval" / "retrieval" / "queries").glob("*.jsonl"))
             for line in f.read_text().splitlines() if line.strip()]
    assert len(evals) >= 250
    for f in sorted(TRAIN_DIR.glob("*.jsonl")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            w = words(json.loads(line)["text"])
            close = max(len(w & e) / len(w | e) for e in evals)
            assert close < 0.6, f"{f.name}:{n} is close to an eval query (Jaccard {close:.2f})"


def test_files_under_eval_are_refused_as_training_queries(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="must not come from eval/"):
        load_extra_anchors(corpus, (PROJECT_ROOT / "eval" / "retrieval" / "queries" / "hate.jsonl",))


def test_the_default_recipe_trains_on_the_chunks_the_shipped_embedder_saw(corpus: Corpus) -> None:
    from copilot.retrieval.chunks import Chunk, corpus_chunks, named_allowance
    from copilot.retrieval.finetune import corpus_anchors, training_chunks

    index_chunks = corpus_chunks(corpus)
    # derived from the linking rule itself, not from training_chunks' filter (a look-alike that is also the allowance's
    # own example is that example's chunk, which stays)
    linked = list(dict.fromkeys(  # one chunk per (allowance, text), as the index keeps them
        Chunk(target, "allowed", ex) for cl in corpus.active if cl.kind == "prohibition"
        for ex, why in zip(cl.non_violating, cl.non_violating_why, strict=False)
        if (target := named_allowance(corpus, cl, why)) is not None and ex not in corpus.clauses[target].non_violating))
    assert linked  # the index links prohibitions' look-alikes to their allowance (session 6)
    default = training_chunks(corpus)
    assert not set(linked) & set(default) and len(default) == len(index_chunks) - len(linked)
    assert training_chunks(corpus, linked_lookalikes=True) == index_chunks
    anchors, _, examples = corpus_anchors(corpus)
    assert not {(c.clause_id, c.text) for c in linked} & {(a.clause_id, a.text) for a in anchors}
    assert not any(c.text in examples.get(c.clause_id, []) for c in linked)  # nor drawn as a positive
    # retraining with the default recipe reproduces the shipped weights (seed 13: bit for bit, session 11) only if it
    # sees the same anchors
    shipped = json.loads((PROJECT_ROOT / "models" / "embedder" / "finetune.json").read_text())
    if shipped["corpus_version"] == corpus.version:
        assert len(anchors) == shipped["anchors"]
