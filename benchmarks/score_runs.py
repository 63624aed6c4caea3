"""Score evaluation runs side by side against the gold file as it is now, overall and on the hard cases.

    python benchmarks/score_runs.py var/gold-half-a.jsonl RUN_DIR [RUN_DIR ...]

A run folder is what ``copilot eval run --out`` wrote. The run's own metrics.json holds the gold as it was when it
ran; this script rescores its predictions.jsonl against the dataset file given (e.g. after gold clauses were added),
so runs of different days compare on the same gold. Hard cases are the rows whose ``hard_kind`` is not ``plain``.
Columns: macro F1 (all rows / hard rows), false-positive rate on clean rows, citation precision and recall on
violating rows, area-level citation precision, abstention rate, p50 latency. Labels are handled as the harness does
(a sub-label implies its parent: 'sexual/minors' counts as 'sexual' too), so hard-case figures are comparable with the
overall macro F1 (session 8's tables used the file's labels as written and read ~0.02 lower).

    python benchmarks/score_runs.py var/gold-half-a.jsonl RUN_DIR ... --breakdown [--offered]

``--breakdown`` also classes every citation on a violating row: the right clause; a sibling prohibition of a gold
clause's area; a prohibition of another area (mostly a label error); an allowance (an exception applied to a violating
case); and precision on suggested vs escalated rows. ``--offered`` adds the retrieval ceiling of the full
path: on how many violating rows a gold clause is among the clauses the prompt offers (loads the runtime).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from copilot.config import get_settings
from copilot.errors import InvalidInput
from copilot.policy.corpus import load_corpus
from eval import metrics as EM
from eval.compare import load_run
from eval.datasets import read_many
from eval.runner import arrays, citation_area


def score(rows: list, preds_by_id: dict[str, dict], corpus) -> dict[str, float | None]:  # type: ignore[no-untyped-def]
    """The figures of one run on the rows it has predictions for (the caller checks coverage)."""
    rows = [r for r in rows if r.id in preds_by_id]
    preds = [preds_by_id[r.id] for r in rows]
    labels = list(corpus.taxonomy.label_names)
    Y, S, P, M, keep = arrays(rows, preds, labels)
    hard = np.array([(r.source_labels or {}).get("hard_kind", "plain") != "plain" for r in rows]) & keep

    gold = [(r.source_labels or {}).get("gold_clauses") if r.labels else None for r in rows]
    cites = [p["citations"] for p in preds]
    exact = EM.citation_metrics(cites, gold)
    by_area = EM.citation_metrics(cites, gold, key=lambda cid: citation_area(corpus, cid))
    return {
        "rows": len(rows),
        "macro_f1": EM.label_metrics(Y[keep], S[keep], P[keep], M[keep], labels, calibration=False)["macro"]["f1"],
        "hard_macro_f1": EM.label_metrics(Y[hard], S[hard], P[hard], M[hard], labels, calibration=False)["macro"]["f1"],
        "fpr_clean": EM.flagged_metrics(Y[keep], S[keep], P[keep], M[keep])["false_positive_rate_on_clean"],
        "cite_p": exact["precision"], "cite_r": exact["recall"], "area_p": by_area["precision"],
        "abstention": round(float(np.mean([p["abstained"] for p in preds])), 3),
        "p50_ms": round(float(np.median([p["latency_ms"] for p in preds])), 1),
    }


def breakdown(rows: list, preds_by_id: dict[str, dict], corpus) -> list[str]:  # type: ignore[no-untyped-def]
    kinds: Counter[str] = Counter()
    right = {True: [0, 0], False: [0, 0]}  # escalated? -> [right, cited]
    n_rows = 0
    for r in rows:
        if not r.labels or r.id not in preds_by_id:
            continue
        n_rows += 1
        p = preds_by_id[r.id]
        gold = set((r.source_labels or {}).get("gold_clauses") or [])
        # the areas of the gold clauses, as the area-level metric counts them (r.labels also holds the parents a
        # sub-label implies, e.g. 'sexual' for 'sexual/minors', whose area has no gold clause)
        gold_areas = {corpus.clauses[g].area for g in gold if g in corpus.clauses}
        for cid in p["citations"]:
            c = corpus.clauses.get(cid)
            right[bool(p["abstained"])][0] += cid in gold
            right[bool(p["abstained"])][1] += 1
            if cid in gold:
                kinds["right clause"] += 1
            elif c is None:
                kinds["invented"] += 1
            elif c.kind != "prohibition":
                kinds["allowance cited on a violating row"] += 1
            elif c.area in gold_areas:
                kinds["sibling prohibition (a gold clause's area)"] += 1
            else:
                kinds["prohibition of another area (mostly label errors)"] += 1
    total = sum(kinds.values())
    out = [f"{total} citations on {n_rows} violating rows ({total / max(n_rows, 1):.2f} per row)"]
    out += [f"  {k}: {v} ({v / max(total, 1):.0%})" for k, v in kinds.most_common()]
    for escalated, (a, n) in sorted(right.items()):
        out.append(f"  precision on {'escalated' if escalated else 'suggested'} rows: {a}/{n} = {a / max(n, 1):.2f}")
    return out


def offered_ceiling(rows: list) -> str:  # type: ignore[type-arg]
    from copilot.llm.chain import offered_clauses
    from copilot.runtime import Runtime
    from copilot.schema import Case
    from copilot.suggest import suggest_fast

    rt = Runtime(get_settings())
    hit = n = offered = 0
    for r in rows:
        if not r.labels:
            continue
        case = Case.from_text(r.text)
        ids = {c.id for c in offered_clauses(rt, case, suggest_fast(rt, case)).clauses}
        n += 1
        offered += len(ids)
        hit += bool(ids & set((r.source_labels or {}).get("gold_clauses") or []))
    return f"a gold clause is among the clauses offered to the LLM on {hit} of {n} violating rows ({hit / max(n, 1):.2f}); {offered / max(n, 1):.1f} offered per row"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="gold JSONL or a folder of them (eval/cases/gold; var/gold-half-a.jsonl from benchmarks/gold_halves.py)")
    ap.add_argument("runs", type=Path, nargs="+", help="folders written by `copilot eval run --out`")
    ap.add_argument("--breakdown", action="store_true", help="class each citation on violating rows (see above)")
    ap.add_argument("--offered", action="store_true",
                    help="the full path's retrieval ceiling with the current settings, index and corpus (not the runs'); loads the runtime")
    args = ap.parse_args()
    corpus = load_corpus(get_settings().corpus_dir)
    files = sorted(args.dataset.glob("*.jsonl")) if args.dataset.is_dir() else [args.dataset]
    rows = read_many(files, corpus.taxonomy)
    cols = ["rows", "macro_f1", "hard_macro_f1", "fpr_clean", "cite_p", "cite_r", "area_p", "abstention", "p50_ms"]
    print("| run | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    ids = {r.id for r in rows}
    try:
        runs = {run: {p["id"]: p for p in load_run(run)[1]} for run in args.runs}
    except InvalidInput as exc:
        raise SystemExit(exc.detail) from None
    for run, preds in runs.items():
        missing, extra = len(ids - preds.keys()), len(preds.keys() - ids)
        if missing == len(ids):
            raise SystemExit(f"{run}: none of its predictions are rows of {args.dataset} (another dataset?)")
        if missing or extra:
            print(f"warning: {run} lacks {missing} of the dataset's rows and has {extra} rows not in it; scored on the rest",
                  file=sys.stderr)
        s = score(rows, preds, corpus)
        cells = [s[c] for c in cols]
        print(f"| {run} | " + " | ".join("-" if v is None else str(round(v, 3)) for v in cells) + " |")
    if args.breakdown:
        for run, preds in runs.items():
            print("", run, *breakdown(rows, preds, corpus), sep="\n")
    if args.offered:
        print("", offered_ceiling(rows), sep="\n")


if __name__ == "__main__":
    main()
