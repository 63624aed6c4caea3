"""Retrieval quality on our own queries (eval/retrieval/queries/*.jsonl): recall@1, recall@5, MRR@10 per method and area.

A query counts as found at k when any of its gold clauses is in the top k (most queries have one gold clause).

`gold` is the writer's answer and every headline figure (overall, per area, per kind, misses) uses it alone. `also`
lists clauses a second annotator, reading only the query and the policy (blind to any ranking), judged equally
correct because their own rule squarely covers the query: mostly another area's clause (a threat against a named
person is both VIO-1.1 and HAR-2.1). An overall figure counting either annotator's clauses is reported beside the
headline, never instead of it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from copilot.config import PROJECT_ROOT
from copilot.policy.corpus import Corpus
from copilot.retrieval.index import RRF_K

QUERIES = PROJECT_ROOT / "eval" / "retrieval" / "queries"
METHODS = ("bm25", "dense", "hybrid")


@dataclass
class Query:
    id: str
    area: str
    kind: str
    query: str
    gold: list[str]
    also: list[str] = field(default_factory=list)

    @property
    def acceptable(self) -> set[str]:
        return {*self.gold, *self.also}


def load_queries(folder: Path = QUERIES) -> list[Query]:
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            r = json.loads(line)
            gold, also = r.get("gold"), r.get("also", [])
            # a string here would be read as a set of characters and every query would silently miss
            if not (isinstance(gold, list) and gold and isinstance(also, list) and all(isinstance(c, str) for c in gold + also)):
                raise ValueError(f"{path}:{n}: gold must be a non-empty list of clause IDs and also a list of clause IDs")
            out.append(Query(r["id"], r["area"], r["kind"], r["query"], gold, also))
    return out


def in_dev_half(query_id: str) -> bool:
    """The fixed halves that retrieval settings are chosen on (dev) and checked on (test): a query is dev when its id's
    md5 is even (benchmarks/fusion_grid.py, benchmarks/cascade_grid.py)."""
    return int(hashlib.md5(query_id.encode()).hexdigest(), 16) % 2 == 0


def inactive_clauses(corpus: Corpus, queries: list[Query]) -> list[str]:
    """`<query id> gold=<clause>` / `also=<clause>` for every clause a query names that the corpus lacks or retired:
    such a clause can never be retrieved, so the query would count as a miss for no reason."""
    return [f"{q.id} {name}={cid}" for q in queries for name, ids in (("gold", q.gold), ("also", q.also)) for cid in ids
            if cid not in corpus.clauses or corpus.clauses[cid].status != "active"]


def evaluate(index, queries: list[Query], methods: tuple[str, ...] = METHODS, rrf_k: int = RRF_K) -> dict:  # type: ignore[no-untyped-def]
    bad = inactive_clauses(index.corpus, queries)
    if bad:
        raise ValueError(f"queries cite clauses that are not active in corpus {index.corpus.version}: {', '.join(bad)}")
    results: dict = {}
    for method in methods:
        per_q = []
        latencies = []
        cascaded_before = getattr(index, "cascaded", 0)
        for q in queries:
            t0 = time.perf_counter()
            hits = index.search(q.query, k=10, method=method, rrf_k=rrf_k)
            latencies.append((time.perf_counter() - t0) * 1000)
            ranked = [h.clause_id for h in hits]
            per_q.append((q, _first_rank(ranked, set(q.gold)), _first_rank(ranked, q.acceptable)))
        results[method] = {
            "overall": _summ([r for _, r, _ in per_q]),
            "overall_either_annotator": _summ([e for _, _, e in per_q]),
            "by_area": {a: _summ([r for q, r, _ in per_q if q.area == a]) for a in sorted({q.area for q in queries})},
            "by_kind": {k: _summ([r for q, r, _ in per_q if q.kind == k]) for k in sorted({q.kind for q in queries})},
            "latency_ms": {"p50": round(statistics.median(latencies), 2), "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 2)},
            "misses": [q.id for q, r, _ in per_q if r is None or r > 5],
        }
        if getattr(index, "cascade", None) is not None and method != "bm25":
            results[method]["cascaded"] = index.cascaded - cascaded_before  # queries the cascade embedder ranked
    return results


def _first_rank(ranked: list[str], wanted: set[str]) -> int | None:
    return next((i + 1 for i, c in enumerate(ranked) if c in wanted), None)


def _summ(ranks: list[int | None]) -> dict:
    n = len(ranks)
    if n == 0:
        return {}
    return {
        "n": n,
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 3),
        "recall@5": round(sum(1 for r in ranks if r and r <= 5) / n, 3),
        "mrr@10": round(sum(1 / r for r in ranks if r and r <= 10) / n, 3),
    }


def markdown(results: dict) -> str:
    lines = ["| method | n | recall@1 | recall@5 | MRR@10 | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        o = r["overall"]
        lines.append(f"| {m} | {o['n']} | {o['recall@1']} | {o['recall@5']} | {o['mrr@10']} | {r['latency_ms']['p50']} | {r['latency_ms']['p95']} |")
    lines += ["", "Counting a second annotator's equally correct clauses too (`also`; the headline above uses `gold` only):", "",
              "| method | recall@1 | recall@5 | MRR@10 |", "|---|---|---|---|"]
    for m, r in results.items():
        e = r["overall_either_annotator"]
        lines.append(f"| {m} | {e['recall@1']} | {e['recall@5']} | {e['mrr@10']} |")
    cascaded = [f"{m}: {r['cascaded']} of {r['overall']['n']} queries ranked by the cascade embedder (the main one was unsure)"
                for m, r in results.items() if "cascaded" in r]
    lines += ["", *cascaded] if cascaded else []
    areas = list(next(iter(results.values()))["by_area"])
    lines += ["", "recall@5 by area:", "", "| area | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for a in areas:
        lines.append(f"| {a} | " + " | ".join(str(results[m]["by_area"][a]["recall@5"]) for m in results) + " |")
    kinds = list(next(iter(results.values()))["by_kind"])
    lines += ["", "recall@5 by query kind:", "", "| kind | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(str(results[m]["by_kind"][k]["recall@5"]) for m in results) + " |")
    return "\n".join(lines)
