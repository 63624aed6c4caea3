"""Persistent hybrid index over the policy corpus.

Layout under <data_dir>/index/: manifest.json (corpus version, embedder id, dimension, build time, chunk keys),
chunks.jsonl, embeddings.npy, dense.faiss. The index is rebuilt when the corpus version, the embedder or the list of
chunks (e.g. after a change to copilot/retrieval/chunks.py) changes, and only chunks whose text changed are re-embedded
(embeddings are reused by chunk key).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import bm25s
import faiss
import numpy as np

from copilot.errors import ComponentMissing
from copilot.policy.corpus import Corpus
from copilot.retrieval.chunks import Chunk, corpus_chunks
from copilot.retrieval.embedder import Embedder
from copilot.schema import SearchHit

if TYPE_CHECKING:
    from copilot.config import Settings
    from copilot.retrieval.rerank import Reranker

log = logging.getLogger(__name__)
MANIFEST_VERSION = 2
METHODS = ("dense", "bm25", "hybrid", "rerank")
# Fusion, chosen on half of eval/retrieval/queries (ids hashing even) and checked on the other half (benchmarks/RESULTS.md):
# a small RRF k lets a clear first place count; BM25 at half weight (word overlap misleads on look-alikes); a clause's
# dense score adds half its second-best chunk.
RRF_K = 5
BM25_WEIGHT = 0.5
SECOND_CHUNK_WEIGHT = 0.5
SEARCH_DEPTH = 64  # chunks each method ranks for a search not restricted to some areas
CASCADE_CACHE = 8  # texts whose cascade vector is kept: a few concurrent cases, far fewer than any eval or benchmark's queries

try:
    import Stemmer

    _STEMMER = Stemmer.Stemmer("english")
except ImportError:  # PyStemmer is a pinned dependency; without it BM25 still works on surface forms
    _STEMMER = None


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)  # type: ignore[return-value]


@dataclass
class BuildReport:
    n_chunks: int
    n_embedded: int
    n_reused: int
    seconds: float
    rebuilt: bool


class PolicyIndex:
    def __init__(self, corpus: Corpus, embedder: Embedder, chunks: list[Chunk], vectors: np.ndarray, manifest: dict,
                 dense: faiss.Index | None = None) -> None:
        self.corpus = corpus
        self.embedder = embedder
        self.chunks = chunks
        self.manifest = manifest
        if dense is None:
            dense = faiss.IndexFlatIP(vectors.shape[1])
            dense.add(vectors)
        self.dense = dense
        # The clause chunk's vector per clause, so callers can compare a case to a clause without re-embedding it.
        self.clause_vectors = {c.clause_id: vectors[i] for i, c in enumerate(chunks) if c.kind == "clause"}
        self.bm25 = bm25s.BM25()
        self.bm25.index(_tokenize([c.text for c in chunks]), show_progress=False)
        self.reranker: Reranker | None = None  # attached by the runtime when a trained cross-encoder is configured
        self.rerank_depth = 20
        self.cascade: PolicyIndex | None = None  # a stronger embedder's index over the same chunks (attach_cascade)
        self.cascade_below = 0.0
        self.dense_searches = 0  # dense rankings computed, and how many of them the cascade answered (for evals, /readyz)
        self.cascaded = 0
        self._count_lock = threading.Lock()
        # The fast path searches one case text several times (overall, then per flagged area); the slow embedder runs once.
        self._cascade_vecs: OrderedDict[str, np.ndarray] = OrderedDict()

    def attach_cascade(self, other: PolicyIndex, below: float) -> None:
        """Let `other` (a slower, more accurate embedder's index over the same corpus) rank the queries this index's
        embedder is unsure of: those whose best clause's dense score is below `below`. Most queries then cost only this
        embedder; the rest both."""
        if other is self:
            raise ComponentMissing("cascade: an index cannot cascade to itself")
        if other.manifest.get("chunk_keys") != self.manifest.get("chunk_keys") or other.corpus.version != self.corpus.version:
            raise ComponentMissing(f"cascade: index {other.manifest.get('embedder_id')} was built over other chunks than "
                                   f"{self.manifest.get('embedder_id')} (rebuild both with `copilot index build`)")
        with self._count_lock:  # vectors cached for another cascade embedder would not fit this one's index
            self.cascade, self.cascade_below = other, below
            self._cascade_vecs.clear()

    # ---- building -------------------------------------------------------------------------------------------
    @classmethod
    def load_or_build(
        cls, corpus: Corpus, embedder: Embedder, index_dir: Path, force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[PolicyIndex, BuildReport]:
        t0 = time.perf_counter()
        manifest_path = index_dir / "manifest.json"
        chunks = corpus_chunks(corpus)
        old: dict[str, np.ndarray] = {}
        manifest: dict = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("embedder_id") == embedder.model_id and manifest.get("manifest_version") == MANIFEST_VERSION:
                    vecs = np.load(index_dir / "embeddings.npy")
                    old = dict(zip(manifest["chunk_keys"], vecs, strict=True))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("index at %s unreadable (%s); rebuilding", index_dir, exc)
                manifest, old = {}, {}
        fresh = (
            not force and manifest.get("corpus_version") == corpus.version
            and manifest.get("embedder_id") == embedder.model_id and manifest.get("chunk_keys") == [c.key for c in chunks]
        )  # the same chunks in the same order: the persisted FAISS ids index this list (a code change can reorder it)
        todo = [c for c in chunks if c.key not in old] if not force else chunks
        if todo:
            vecs_new = _encode_with_progress(embedder, [c.text for c in todo], progress)
            old.update({c.key: v for c, v in zip(todo, vecs_new, strict=True)})
        vectors = np.stack([old[c.key] for c in chunks]).astype(np.float32)
        dense = None
        if fresh:
            try:  # the persisted FAISS index, when it matches the manifest; otherwise rebuilt from the vectors
                dense = faiss.read_index(str(index_dir / "dense.faiss"))
                if dense.ntotal != len(chunks):
                    dense = None
            except RuntimeError:
                dense = None
        if not fresh:
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "corpus_version": corpus.version,
                "embedder_id": embedder.model_id,
                "embedder_path": str(embedder.path),
                "dimension": int(vectors.shape[1]),
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "n_clauses": len(corpus.active),
                "n_chunks": len(chunks),
                "chunk_keys": [c.key for c in chunks],
            }
        index = cls(corpus, embedder, chunks, vectors, manifest, dense)
        if not fresh:
            _write_atomically(index_dir, manifest, chunks, vectors, index.dense)
        report = BuildReport(len(chunks), len(todo), len(chunks) - len(todo), time.perf_counter() - t0, rebuilt=not fresh)
        return index, report

    # ---- search ---------------------------------------------------------------------------------------------
    def dense_ranking(self, query_vec: np.ndarray, depth: int = SEARCH_DEPTH) -> dict[str, float]:
        scores, ids = self.dense.search(query_vec.reshape(1, -1), min(depth, len(self.chunks)))
        return _best_per_clause(self.chunks, ids[0], scores[0], SECOND_CHUNK_WEIGHT)

    def bm25_ranking(self, query: str, depth: int = SEARCH_DEPTH) -> dict[str, float]:
        tokens = _tokenize([query])
        if not tokens[0]:
            return {}
        ids, scores = self.bm25.retrieve(tokens, k=min(depth, len(self.chunks)), show_progress=False, n_threads=1)
        keep = scores[0] > 0
        return _best_per_clause(self.chunks, ids[0][keep], scores[0][keep])

    def search(self, query: str, k: int = 5, method: str = "auto", rrf_k: int = RRF_K, areas: set[str] | None = None,
               query_vec: np.ndarray | None = None) -> list[SearchHit]:
        """Rank clauses for a query. `hybrid` fuses the dense and BM25 rankings by reciprocal rank; `rerank` reorders the
        hybrid top `rerank_depth` with the cross-encoder (it never adds clauses the first stage missed).

        `auto` is `rerank` when a reranker is attached, else `hybrid`. Pass `query_vec` when the caller already embedded
        the query (it is not embedded again)."""
        if method == "auto":
            method = "rerank" if self.reranker is not None else "hybrid"
        if method not in METHODS:
            raise ValueError(f"unknown retrieval method {method!r} ({', '.join(METHODS)})")
        if method == "rerank" and self.reranker is None:
            raise ComponentMissing("reranker: none configured (train one with `copilot index train-reranker`, set COPILOT_RERANKER_DIR)")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        # Restricted to some areas, rank every chunk: the overall top SEARCH_DEPTH may hold none of an area's clauses,
        # and a caller asking for an area's best clause (the fast path citing a flagged label) must get one, not nothing.
        depth = len(self.chunks) if areas else SEARCH_DEPTH
        rankings: list[dict[str, float]] = []
        if method in ("dense", "hybrid", "rerank"):
            rankings.append(self._dense_for(query, query_vec, depth))
        if method in ("bm25", "hybrid", "rerank"):
            rankings.append(self.bm25_ranking(query, depth))
        fused = rankings[0] if len(rankings) == 1 else rrf(rankings, rrf_k, [1.0, BM25_WEIGHT])
        if method == "rerank" and self.reranker is not None:
            fused = self._rerank(query, fused, areas)
        hits = []
        for cid, score in sorted(fused.items(), key=lambda kv: -kv[1]):
            clause = self.corpus.clauses[cid]
            if areas and clause.area not in areas:
                continue
            hits.append(SearchHit(clause_id=cid, title=clause.title, labels=clause.labels, area=clause.area, kind=clause.kind, score=round(float(score), 6)))
            if len(hits) >= k:
                break
        return hits

    def _dense_for(self, query: str, query_vec: np.ndarray | None, depth: int) -> dict[str, float]:
        vec = query_vec if query_vec is not None else self.embedder.encode([query])[0]
        cascade, below = self.cascade, self.cascade_below
        scores, ids = self.dense.search(vec.reshape(1, -1), min(depth, len(self.chunks)))
        ranking = _best_per_clause(self.chunks, ids[0], scores[0], SECOND_CHUNK_WEIGHT)
        unsure = False
        if cascade is not None:
            # Judged on the first SEARCH_DEPTH chunks whatever the depth: an area-restricted search ranks every chunk, which
            # finds more clauses' second chunks and so raises their scores; one case must cascade or not for all its searches.
            top = ranking if depth <= SEARCH_DEPTH else _best_per_clause(self.chunks, ids[0][:SEARCH_DEPTH], scores[0][:SEARCH_DEPTH], SECOND_CHUNK_WEIGHT)
            unsure = bool(top) and max(top.values()) < below
            if unsure:
                ranking = cascade.dense_ranking(self._cascade_vec(cascade, query), depth)
        with self._count_lock:
            self.dense_searches += 1
            self.cascaded += unsure
        return ranking

    def _cascade_vec(self, cascade: PolicyIndex, query: str) -> np.ndarray:
        with self._count_lock:
            vec = self._cascade_vecs.get(query)
            if vec is not None:
                self._cascade_vecs.move_to_end(query)
        if vec is None:
            vec = cascade.embedder.encode([query])[0]
            with self._count_lock:
                if cascade is self.cascade:  # not re-attached meanwhile
                    self._cascade_vecs[query] = vec
                    while len(self._cascade_vecs) > CASCADE_CACHE:
                        self._cascade_vecs.popitem(last=False)
        return vec

    def _rerank(self, query: str, fused: dict[str, float], areas: set[str] | None) -> dict[str, float]:
        from copilot.retrieval.rerank import clause_passage

        assert self.reranker is not None
        top = [cid for cid, _ in sorted(fused.items(), key=lambda kv: -kv[1])
               if not areas or self.corpus.clauses[cid].area in areas][: self.rerank_depth]
        scores = self.reranker.scores(query, [clause_passage(self.corpus, cid) for cid in top])
        return {cid: float(sc) for cid, sc in zip(top, scores, strict=True)}


def attach_cascade(index: PolicyIndex, settings: Settings, index_dir: Path | None = None, force: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> BuildReport | None:
    """Build (or load) the cascade embedder's index when COPILOT_CASCADE_EMBEDDER_PATH is set, and attach it to `index`.
    Returns its build report, or None when no cascade is configured."""
    from copilot.retrieval.embedder import cascade_embedder_for

    emb = cascade_embedder_for(settings)
    if emb is None:
        return None
    other, report = PolicyIndex.load_or_build(index.corpus, emb, index_dir or settings.cascade_index_dir, force, progress)
    index.attach_cascade(other, settings.cascade_below)
    return report


def rrf(rankings: list[dict[str, float]], k: int = 60, weights: list[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion: sum of weight/(k + rank) over the rankings a clause appears in."""
    fused: dict[str, float] = {}
    for n, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[n]
        for rank, cid in enumerate(sorted(ranking, key=lambda c: -ranking[c]), start=1):
            fused[cid] = fused.get(cid, 0.0) + w / (k + rank)
    return fused


def _best_per_clause(chunks: list[Chunk], ids: np.ndarray, scores: np.ndarray, second: float = 0.0) -> dict[str, float]:
    """A clause's score: its best chunk's, plus `second` times its second best (dense: a clause two of whose examples
    sit near the query is a safer answer than one with a single lucky neighbour)."""
    per: dict[str, list[float]] = {}
    for i, s in zip(ids, scores, strict=True):
        if i >= 0:
            per.setdefault(chunks[int(i)].clause_id, []).append(float(s))
    out = {}
    for cid, ss in per.items():
        best, *rest = sorted(ss, reverse=True)
        out[cid] = best + (second * rest[0] if rest else 0.0)
    return out


def _encode_with_progress(embedder: Embedder, texts: list[str], progress: Callable[[int, int], None] | None) -> np.ndarray:
    out = []
    step = 64
    for i in range(0, len(texts), step):
        out.append(embedder.encode(texts[i : i + step]))
        if progress:
            progress(min(i + step, len(texts)), len(texts))
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), dtype=np.float32)


def _write_atomically(index_dir: Path, manifest: dict, chunks: list[Chunk], vectors: np.ndarray, dense: faiss.Index) -> None:
    """Write to a temp folder then swap, so a crash mid-build never leaves a manifest that lies about its files."""
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "embeddings.npy", vectors)
    faiss.write_index(dense, str(tmp / "dense.faiss"))
    with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    old = index_dir.with_name(index_dir.name + ".old")
    if index_dir.exists():
        if old.exists():
            _rmtree(old)
        index_dir.rename(old)
    tmp.rename(index_dir)
    if old.exists():
        _rmtree(old)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
