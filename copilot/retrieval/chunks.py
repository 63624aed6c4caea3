"""Cut the corpus into retrieval chunks: one per clause (title, summary, rule, exceptions), one per linked example."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from copilot.policy.corpus import Corpus


@dataclass(frozen=True)
class Chunk:
    clause_id: str
    kind: str  # clause | violating | allowed
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.text}".encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return asdict(self)


def corpus_chunks(corpus: Corpus) -> list[Chunk]:
    """Examples are linked to the clause a reader would want for them.

    Violating examples point at the prohibition they break. Allowed content points at a clause only when that clause is
    an allowance: a prohibition's own non-violating look-alikes would otherwise pull the prohibition for harmless text.
    """
    chunks: list[Chunk] = []
    for clause in corpus.active:
        head = f"{clause.title}. {clause.summary}"
        chunks.append(Chunk(clause.id, "clause", f"{head}\n{clause.rule}\n" + "\n".join(clause.exceptions)))
        if clause.kind == "prohibition":
            chunks.extend(Chunk(clause.id, "violating", ex) for ex in clause.violating)
        else:
            chunks.extend(Chunk(clause.id, "allowed", ex) for ex in clause.non_violating)
    return chunks
