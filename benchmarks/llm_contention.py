"""How the local LLM and the fast path share the cores: which COPILOT_LLM_THREADS should a small machine run?

    python benchmarks/llm_contention.py --threads 1          # one configuration per process (OpenMP reads its
    python benchmarks/llm_contention.py --threads 2          # settings once); compare rows of the same session
    python benchmarks/llm_contention.py --threads 2 --omp-wait-policy passive

Per configuration, on tuning gold half B (var/gold-half-b.jsonl, from benchmarks/gold_halves.py):
- the full path alone: LLM chain latency p50 over --llm-cases cases (fast path computed before the clock starts);
- the fast path alone: p50/p95 over 80 cases;
- both at once: the same LLM cases in a thread while the main thread runs the fast path back to back (a saturating
  moderator queue), then again while it scores batches of 32 texts with the classifier (an ingest burst).
The question it answers: do llama.cpp's threads and the classifier/embedder starve each other (session 3 measured a
collapse to 1.6 tok/s with 2 llama threads and a classifier loop), and what does each setting cost the other path?
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, required=True, help="llama.cpp threads (COPILOT_LLM_THREADS)")
    ap.add_argument("--omp-wait-policy", default="", help="OMP_WAIT_POLICY for llama.cpp's OpenMP threads (active|passive; default: unset)")
    ap.add_argument("--llm-cases", type=int, default=8)
    ap.add_argument("--dataset", type=Path, default=Path("var/gold-half-b.jsonl"))
    args = ap.parse_args()
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before llama.cpp (and its OpenMP runtime) loads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np

    from copilot.config import get_settings
    from copilot.llm.chain import suggest_full, suggestion_cache, warm_up
    from copilot.runtime import Runtime
    from copilot.schema import Case
    from copilot.suggest import suggest_fast

    if not args.dataset.exists():
        sys.exit(f"{args.dataset} missing: run python benchmarks/gold_halves.py first")
    rt = Runtime(get_settings().model_copy(update={"llm_backend": "llamacpp", "llm_threads": args.threads}))
    rows = [json.loads(line) for line in args.dataset.read_text().splitlines() if line.strip()]
    llm_texts = [r["text"] for r in rows[: args.llm_cases]]
    fast_texts = [r["text"] for r in rows[20:100]]
    for t in fast_texts[:5]:
        suggest_fast(rt, Case.from_text(t))
    warm_up(rt)

    def fast_ms(texts: list[str]) -> list[float]:
        out = []
        for t in texts:
            t0 = time.perf_counter()
            suggest_fast(rt, Case.from_text(t))
            out.append((time.perf_counter() - t0) * 1000)
        return out

    def batch_ms() -> float:  # an ingest burst: the classifier over 32 texts at once
        t0 = time.perf_counter()
        rt.classifier.predict_proba(fast_texts[:32])
        return (time.perf_counter() - t0) * 1000

    def llm_s(out: list[float]) -> None:
        suggestion_cache(rt).clear()
        for t in llm_texts:
            case = Case.from_text(t)
            fast = suggest_fast(rt, case)
            t0 = time.perf_counter()
            suggest_full(rt, case, fast)
            out.append(time.perf_counter() - t0)

    def under_llm(load: str) -> tuple[list[float], list[float]]:
        llm: list[float] = []
        th = threading.Thread(target=llm_s, args=(llm,))
        th.start()
        other: list[float] = []
        while th.is_alive():
            if load == "fast":
                other += fast_ms(fast_texts[:10])
            else:
                other.append(batch_ms())
        th.join()
        return llm, other

    def pct(xs: list[float], q: float) -> float:
        return round(float(np.percentile(xs, q)), 1)

    alone = fast_ms(fast_texts)
    batch_alone = [batch_ms() for _ in range(5)]
    llm_alone: list[float] = []
    llm_s(llm_alone)
    llm_fast, fast_loaded = under_llm("fast")
    llm_batch, batches = under_llm("batch")
    print(json.dumps({
        "threads": args.threads, "omp_wait_policy": args.omp_wait_policy or "unset", "llm_cases": len(llm_texts),
        "llm_alone_p50_s": round(statistics.median(llm_alone), 2),
        "llm_with_fast_traffic_p50_s": round(statistics.median(llm_fast), 2),
        "llm_with_batch_scoring_p50_s": round(statistics.median(llm_batch), 2),
        "fast_alone_p50_ms": pct(alone, 50), "fast_alone_p95_ms": pct(alone, 95),
        "fast_under_llm_p50_ms": pct(fast_loaded, 50), "fast_under_llm_p95_ms": pct(fast_loaded, 95),
        "batch32_alone_p50_ms": pct(batch_alone, 50), "batch32_under_llm_p50_ms": pct(batches, 50),
    }))


if __name__ == "__main__":
    main()
