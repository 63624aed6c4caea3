"""Grid over the retrieval cascade's threshold (COPILOT_CASCADE_BELOW) with the current indexes, scored as hybrid
recall@5 on the md5 dev / test halves of eval/retrieval/queries (a query is dev when its id's md5 is even), with the
share of queries that cascade. The threshold is chosen on dev only: at most 30 % of queries may cascade (so the median
query costs the main embedder alone), then the best dev recall@5 (benchmarks/RESULTS.md, retrieval, "Session 15").

Needs a cascade: COPILOT_CASCADE_EMBEDDER_PATH=<data_dir>/models/embedder-mpnet python benchmarks/cascade_grid.py

Each query's rankings are computed once with the search's own functions; every threshold then costs microseconds.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lo", type=float, default=0.55, help="lowest threshold")
    ap.add_argument("--hi", type=float, default=0.80, help="highest threshold")
    ap.add_argument("--step", type=float, default=0.01)
    args = ap.parse_args()
    from copilot.config import get_settings
    from copilot.retrieval import index as IX
    from copilot.runtime import Runtime
    from eval.retrieval_eval import in_dev_half, load_queries

    ix = Runtime(get_settings()).index
    if ix.cascade is None:
        sys.exit("no cascade configured: set COPILOT_CASCADE_EMBEDDER_PATH (see --help)")
    queries = load_queries()
    dev = np.array([in_dev_half(q.id) for q in queries])

    def hit(dense: dict[str, float], bm25: dict[str, float], gold: list[str]) -> bool:
        fused = IX.rrf([dense, bm25], IX.RRF_K, [1.0, IX.BM25_WEIGHT])
        return bool(set(sorted(fused, key=lambda c: -fused[c])[:5]) & set(gold))

    signal, main_hit, cascade_hit = [], [], []
    for q in queries:
        bm25 = ix.bm25_ranking(q.query)
        dense = ix.dense_ranking(ix.embedder.encode([q.query])[0])
        signal.append(max(dense.values()))  # what _dense_for compares with the threshold (a search of SEARCH_DEPTH chunks)
        main_hit.append(hit(dense, bm25, q.gold))
        cascade_hit.append(hit(ix.cascade.dense_ranking(ix.cascade.embedder.encode([q.query])[0]), bm25, q.gold))
    s, m, c = np.array(signal), np.array(main_hit), np.array(cascade_hit)
    miss = ~m
    auc = float(np.mean([(p < n) + 0.5 * (p == n) for p in s[miss] for n in s[~miss]])) if miss.any() and (~miss).any() else float("nan")
    fmt = lambda h: f"{h[dev].mean():.3f} / {h[~dev].mean():.3f} / {h.mean():.3f}"  # noqa: E731
    print(f"{len(queries)} queries (dev {int(dev.sum())}, test {int((~dev).sum())}); main {ix.embedder.model_id}, cascade {ix.cascade.embedder.model_id}")
    print(f"main alone: recall@5 dev / test / all {fmt(m)}; cascade embedder alone: {fmt(c)}")
    print(f"AUROC of a low best-clause score for a main-embedder miss: {auc:.3f}; configured threshold {ix.cascade_below}\n")
    print("| below | cascaded dev / all | recall@5 dev / test / all |\n|---|---|---|")
    grid = sorted({round(float(t), 4) for t in np.arange(args.lo, args.hi + args.step / 2, args.step)} | {ix.cascade_below})
    for t in grid:
        esc = s < t
        mark = " (configured)" if t == ix.cascade_below else ""
        print(f"| {t:.3f}{mark} | {esc[dev].mean():.2f} / {esc.mean():.2f} | {fmt(np.where(esc, c, m))} |")


if __name__ == "__main__":
    main()
