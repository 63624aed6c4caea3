"""Grid over the hybrid search's fusion constants (RRF k, BM25 weight, second-chunk weight) with the current index,
scored as recall@5 on the md5 dev / test halves of eval/retrieval/queries (a query is dev when its id's md5 is even).
Prints the shipped setting's figures and the 15 best settings on dev. The search is copilot/retrieval/index.py; this
only re-fuses the dense and BM25 rankings it computes, so each setting costs milliseconds.

    python benchmarks/fusion_grid.py
"""

from __future__ import annotations

import argparse
import itertools
import os
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GRID_K = [1, 2, 3, 5, 8, 10, 20, 60]
GRID_BM25 = [0.25, 0.35, 0.5, 0.65, 0.75, 1.0]
GRID_SECOND = [0.0, 0.25, 0.5, 0.75, 1.0]


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from copilot.config import get_settings
    from copilot.retrieval import index as IX
    from copilot.runtime import Runtime
    from eval.retrieval_eval import in_dev_half, load_queries

    ix = Runtime(get_settings()).index
    queries = load_queries()
    dev = np.array([in_dev_half(q.id) for q in queries])
    print(f"{len(queries)} queries: dev {int(dev.sum())}, test {int((~dev).sum())}")
    vectors = ix.embedder.encode([q.query for q in queries])
    raw: list[tuple[Any, Any, dict[str, float]]] = []
    for q, v in zip(queries, vectors, strict=True):
        scores, ids = ix.dense.search(v.reshape(1, -1), IX.SEARCH_DEPTH)
        raw.append((ids[0], scores[0], ix.bm25_ranking(q.query)))

    def recall5(k: int, w: float, second: float) -> tuple[float, float, float]:
        hits = []
        for q, (ids, sc, bm) in zip(queries, raw, strict=True):
            fused = IX.rrf([IX._best_per_clause(ix.chunks, ids, sc, second), bm], k, [1.0, w])
            top = [c for c, _ in sorted(fused.items(), key=lambda kv: -kv[1])[:5]]
            hits.append(bool(set(top) & set(q.gold)))
        h = np.array(hits)
        return float(h[dev].mean()), float(h[~dev].mean()), float(h.mean())

    results = {cfg: recall5(*cfg) for cfg in itertools.product(GRID_K, GRID_BM25, GRID_SECOND)}
    shipped = (IX.RRF_K, IX.BM25_WEIGHT, IX.SECOND_CHUNK_WEIGHT)
    fmt = lambda r: " / ".join(f"{x:.3f}" for x in r)  # noqa: E731
    print(f"shipped (k, bm25 weight, second) = {shipped}: recall@5 dev / test / all {fmt(results.get(shipped) or recall5(*shipped))}")
    print(f"{len(results)} settings; best 15 on dev:")
    for cfg, r in sorted(results.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {cfg}: {fmt(r)}")


if __name__ == "__main__":
    main()
