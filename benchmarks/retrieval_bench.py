"""Retrieval speed: index build time, warm single-query search latency per method, and a synthetic 100k-chunk
FAISS index (flat vs HNSW) to show where the crossover is.

    python benchmarks/retrieval_bench.py [--synthetic 100000] [--queries 200]

With COPILOT_CASCADE_EMBEDDER_PATH set, dense and hybrid are also timed with the cascade attached (same run, same queries).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", type=int, default=100_000, help="chunks in the synthetic index (0 to skip)")
    ap.add_argument("--queries", type=int, default=200, help="queries timed per method")
    args = ap.parse_args()

    import faiss
    import torch

    from copilot.config import get_settings
    from copilot.policy import load_corpus
    from copilot.retrieval.embedder import cascade_embedder_for, embedder_for
    from copilot.retrieval.index import PolicyIndex
    from eval.retrieval_eval import load_queries

    s = get_settings()
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, faiss {faiss.__version__}")
    corpus = load_corpus(s.corpus_dir)
    emb = embedder_for(s)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        idx, rep = PolicyIndex.load_or_build(corpus, emb, Path(tmp) / "index", force=True)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        PolicyIndex.load_or_build(corpus, emb, Path(tmp) / "index")
        reload = time.perf_counter() - t0
        print(f"index build (embed {rep.n_chunks} chunks of {len(corpus.active)} clauses): {build:.2f} s; warm reload, nothing re-embedded: {reload:.2f} s")
        # The cascade (COPILOT_CASCADE_EMBEDDER_PATH) is built now but attached after the plain timings, so one run gives both.
        cascade_emb, cascade = cascade_embedder_for(s), None
        if cascade_emb is not None:
            cascade, crep = PolicyIndex.load_or_build(corpus, cascade_emb, Path(tmp) / "index-cascade", force=True)
            print(f"cascade index build ({cascade_emb.model_id}, embed {crep.n_chunks} chunks): {crep.seconds:.2f} s")
    qs = [q.query for q in load_queries()][: args.queries]
    for q in qs[:5]:
        idx.search(q, 5)
    print("\n| method | p50 ms | p95 ms | mean ms |\n|---|---|---|---|")
    for method in ("bm25", "dense", "hybrid"):
        lat = []
        for q in qs:
            t0 = time.perf_counter()
            idx.search(q, 5, method=method)
            lat.append((time.perf_counter() - t0) * 1000)
        print(f"| {method} | {statistics.median(lat):.2f} | {pct(lat, 95):.2f} | {statistics.fmean(lat):.2f} |")
    if cascade is not None:
        idx.attach_cascade(cascade, s.cascade_below)
        for q in qs[:5]:
            idx.search(q, 5)
        idx.attach_cascade(cascade, s.cascade_below)  # again: it empties the cascade's vector cache the warm-up filled
        for method in ("dense", "hybrid"):
            lat, before = [], idx.cascaded
            for q in qs:
                t0 = time.perf_counter()
                idx.search(q, 5, method=method)
                lat.append((time.perf_counter() - t0) * 1000)
            print(f"| {method} + cascade below {idx.cascade_below} ({idx.cascaded - before} of {len(qs)} cascaded) | "
                  f"{statistics.median(lat):.2f} | {pct(lat, 95):.2f} | {statistics.fmean(lat):.2f} |")
        idx.cascade = None
    qv = emb.encode(qs)
    lat = []
    for v in qv:
        t0 = time.perf_counter()
        idx.dense_ranking(v)
        lat.append((time.perf_counter() - t0) * 1000)
    print(f"(dense search alone, query already embedded: p50 {statistics.median(lat):.3f} ms)")

    if args.synthetic:
        n, d = args.synthetic, emb.dim
        rng = np.random.default_rng(0)
        # Not uniform random vectors: in 384 dimensions those are all nearly equidistant, so "nearest" is noise and
        # every approximate index looks broken. Real policy corpora cluster by topic: perturb the corpus's own chunk
        # vectors (cosine ~0.75 to their parent) so the synthetic index keeps that structure.
        base = idx.dense.reconstruct_n(0, idx.dense.ntotal)
        noise = rng.standard_normal((n, d), dtype=np.float32) * 0.045
        xb = base[rng.integers(0, len(base), n)] + noise
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        xq = qv.astype(np.float32)
        print(f"\nsynthetic {n} x {d} (corpus chunk vectors + noise; query set = our queries)")
        print("| index | size | build s | p50 ms/query | recall@10 vs flat |\n|---|---|---|---|---|")
        for size in (1_000, 10_000, 30_000, n):
            flat = faiss.IndexFlatIP(d)
            t0 = time.perf_counter()
            flat.add(xb[:size])
            fb = time.perf_counter() - t0
            hn = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            hn.hnsw.efConstruction = 80
            t0 = time.perf_counter()
            hn.add(xb[:size])
            hb = time.perf_counter() - t0
            res = {}
            for name, ix, ef in (("flat", flat, 0), ("hnsw ef=64", hn, 64), ("hnsw ef=256", hn, 256)):
                if ef:
                    hn.hnsw.efSearch = ef
                lat, ids = [], []
                for v in xq:
                    t0 = time.perf_counter()
                    _, I = ix.search(v.reshape(1, -1), 10)
                    lat.append((time.perf_counter() - t0) * 1000)
                    ids.append(set(I[0].tolist()))
                res[name] = (statistics.median(lat), ids)
            print(f"| flat | {size} | {fb:.2f} | {res['flat'][0]:.3f} | 1.000 |")
            for name in ("hnsw ef=64", "hnsw ef=256"):
                recall = float(np.mean([len(a & b) / 10 for a, b in zip(res["flat"][1], res[name][1], strict=True)]))
                print(f"| {name} (M=32) | {size} | {hb:.2f} | {res[name][0]:.3f} | {recall:.3f} |")


if __name__ == "__main__":
    main()
