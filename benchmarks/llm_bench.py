"""Full-path (LLM chain) speed on gold cases: latency p50/p95 per case, time to the first streamed rationale token,
prompt / cached / completion tokens per case, with and without KV reuse of the fixed instruction prefix.

    python benchmarks/llm_bench.py [--cases 30] [--threads 2] [--model qwen2.5-coder-1.5b-instruct] [--modes reuse,cold]
                                   [--json OUT.json]

Cases: the first --cases of eval/cases/gold/*.jsonl taken round-robin over the area files (so every area is in).
Each case runs the real router pieces: the fast path (classifier + retrieval), then the LLM chain, streamed; latency and
time to first rationale token are counted from the start of the case (fast path included).
"reuse" keeps the KV state of the system prefix (live, or restored from <data_dir>/cache/llm-prefix); "cold" resets
the KV cache before every call. The suggestion cache is cleared before each mode, so no case is served from it.
Timings are wall-clock on this machine: run it on an otherwise idle machine, and say what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def gold_cases(root: Path, n: int) -> list[dict[str, Any]]:
    files = [[json.loads(line) for line in p.read_text().splitlines() if line.strip()] for p in sorted(root.glob("*.jsonl"))]
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n and any(i < len(f) for f in files):
        out += [f[i] for f in files if i < len(f)]
        i += 1
    return out[:n]


def run_mode(rt: Any, cases: list[dict[str, Any]], reuse: bool, speculative: bool = False, lazy: bool = True) -> list[dict[str, Any]]:
    from copilot.llm.chain import stream_suggestion, suggestion_cache
    from copilot.schema import Case
    from copilot.suggest import suggest_fast

    llm = rt.llm
    llm.chat.prefix_reuse = reuse
    llm.chat.speculative = speculative
    llm.chat.lazy_grammar = lazy
    suggestion_cache(rt).clear()
    rows = []
    for i, row in enumerate(cases):
        case = Case.from_text(row["text"])
        t0 = time.perf_counter()
        fast = suggest_fast(rt, case)
        t_fast = time.perf_counter() - t0
        llm.history.clear()
        ttft = None
        t1 = time.perf_counter()
        sug = None
        for kind, value in stream_suggestion(rt, case, fast):
            if kind == "rationale" and ttft is None and value.strip():
                ttft = t_fast + time.perf_counter() - t1  # from the request's start: fast path included
            elif kind == "suggestion":
                sug = value
        t_full = time.perf_counter() - t1
        assert sug is not None
        calls = list(llm.history)
        gold = set(row.get("source_labels", {}).get("gold_clauses", []))
        rows.append({
            "id": row["id"], "path": sug.path, "fallback_reason": sug.fallback_reason, "abstained": sug.abstained,
            "abstain_reason": sug.abstain_reason, "llm_raw": [r.raw for _, r in calls],
            "fast_s": t_fast, "chain_s": t_full, "total_s": t_fast + t_full, "ttft_s": ttft,
            "first_call_ttft_s": calls[0][1].first_token_s if calls else None,
            "llm_calls": len(calls), "repair_calls": sum(1 for purpose, _ in calls if purpose == "suggest-repair"), "prompt_tokens": sug.prompt_tokens, "completion_tokens": sug.completion_tokens,
            "cached_tokens": sum(r.cached_tokens for _, r in calls),
            "passes": sum(r.passes for _, r in calls), "accepted_draft_tokens": sum(r.accepted_draft_tokens for _, r in calls),
            "labels": sug.labels, "gold_labels": row.get("labels") or [],
            "cited": [c.clause_id for c in sug.citations], "gold_clauses": sorted(gold),
        })
        r = rows[-1]
        print(f"  [{('reuse' if reuse else 'cold ') + ('+spec' if speculative else '') + ('' if lazy else '+eager')}] {i + 1:2d}/{len(cases)} {r['id']:<22} {r['path']:<4} total {r['total_s']:5.1f}s "
              f"ttft {r['ttft_s'] if r['ttft_s'] is not None else float('nan'):4.2f}s prompt {r['prompt_tokens']:4d} (cached {r['cached_tokens']:4d}) "
              f"completion {r['completion_tokens']:3d} passes {r['passes']:3d} calls {r['llm_calls']} {('fallback: ' + r['fallback_reason'][:60]) if r['fallback_reason'] else ''}",
              flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = [r["total_s"] for r in rows]
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    full = [r for r in rows if r["path"] == "full"]
    tp = sum(len(set(r["labels"]) & set(r["gold_labels"])) for r in full)
    fp = sum(len(set(r["labels"]) - set(r["gold_labels"])) for r in full)
    fn = sum(len(set(r["gold_labels"]) - set(r["labels"])) for r in full)
    cited = [(c, r["gold_clauses"]) for r in full for c in r["cited"]]
    return {
        "cases": len(rows), "full_path": len(full), "fallbacks": len(rows) - len(full),
        "repairs": sum(1 for r in rows if r["repair_calls"]),  # a two-turn prompt makes 2 calls without any repair
        "abstained": sum(1 for r in rows if r["abstained"]),
        "latency_p50_s": pct(total, 50), "latency_p95_s": pct(total, 95), "latency_mean_s": statistics.fmean(total),
        "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95),
        "prompt_tokens_mean": statistics.fmean(r["prompt_tokens"] for r in rows),
        "cached_tokens_mean": statistics.fmean(r["cached_tokens"] for r in rows),
        "completion_tokens_mean": statistics.fmean(r["completion_tokens"] for r in rows),
        "completion_tokens_p95": pct([r["completion_tokens"] for r in rows], 95),
        "decode_passes_mean": statistics.fmean(r["passes"] for r in rows),
        "full_path_label_micro_f1": (2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else float("nan"),
        "full_path_cited_gold_share": (sum(1 for c, gold in cited if c in gold) / len(cited)) if cited else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (keep <= the cores free for it)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--modes", default="reuse,spec,cold", help="comma-separated: eager (prefix reused, grammar applied to the whole vocabulary every token and no forced opening: the decoding before session 6), spec (prefix reused, schema-drafted speculative "
                    "decoding, COPILOT_LLM_SPECULATIVE=true), reuse (prefix reused, one token per pass: the shipped setting), cold (neither)")
    ap.add_argument("--timeout", type=float, default=None, help="COPILOT_LLM_TIMEOUT_S for the run (default: the setting)")
    ap.add_argument("--json", type=Path, help="write per-case rows and summaries here")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from copilot.config import PROJECT_ROOT, Settings
    from copilot.llm.chain import warm_up
    from copilot.runtime import Runtime

    settings = Settings(llm_backend="llamacpp", llm_model=args.model)
    settings = settings.model_copy(update={"llm_threads": args.threads, "llm_timeout_s": args.timeout or settings.llm_timeout_s})
    rt = Runtime(settings)
    t = time.perf_counter()
    for name in ("corpus", "index", "classifier"):
        getattr(rt, name)
    print(f"components loaded in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    llm = rt.llm
    print(f"LLM {llm.model_id} loaded in {time.perf_counter() - t:.1f}s (threads {args.threads})")
    t = time.perf_counter()
    warm_up(rt)
    print(f"prefix KV state ready in {time.perf_counter() - t:.1f}s (evaluated, or restored from {settings.data_dir / 'cache' / 'llm-prefix'})")
    cases = gold_cases(PROJECT_ROOT / "eval" / "cases" / "gold", args.cases)
    print(f"{len(cases)} gold cases; python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    results: dict[str, Any] = {"model": llm.model_id, "threads": args.threads, "timeout_s": settings.llm_timeout_s, "load_before": os.getloadavg(), "modes": {}}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        rows = run_mode(rt, cases, reuse=mode in ("spec", "reuse", "eager"), speculative=mode == "spec", lazy=mode != "eager")
        summary = summarise(rows)
        results["modes"][mode] = {"summary": summary, "rows": rows}
        print(f"\n== {mode}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()) + "\n", flush=True)
    results["load_after"] = os.getloadavg()
    print("| mode | p50 s | p95 s | TTFT p50 s | TTFT p95 s | prompt tok | cached tok | completion tok | decode passes | fallbacks | repairs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, res in results["modes"].items():
        s = res["summary"]
        print(f"| {mode} | {s['latency_p50_s']:.2f} | {s['latency_p95_s']:.2f} | {s['ttft_p50_s']:.2f} | {s['ttft_p95_s']:.2f} | "
              f"{s['prompt_tokens_mean']:.0f} | {s['cached_tokens_mean']:.0f} | {s['completion_tokens_mean']:.0f} | {s['decode_passes_mean']:.0f} | {s['fallbacks']}/{s['cases']} | {s['repairs']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
