"""`copilot eval ...` commands (registered by copilot_cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

eval_app = typer.Typer(help="Offline evaluation: run datasets and suites, measure retrieval, compare runs.", no_args_is_help=True)


@eval_app.command("retrieval")
def retrieval(out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
              methods: Annotated[str, typer.Option(help="Comma-separated: bm25,dense,hybrid,rerank (rerank needs COPILOT_USE_RERANKER=true and a trained reranker)")] = "bm25,dense,hybrid") -> None:
    """Recall@1, recall@5 and MRR@10 of each retrieval method on eval/retrieval/queries, overall, per area and per kind,
    against the writer's gold clauses; beside the overall figures, the same counting a blind second annotator's
    equally correct clauses too (eval/retrieval/README.md)."""
    from copilot.config import get_settings
    from copilot.runtime import Runtime
    from eval.retrieval_eval import evaluate, load_queries, markdown

    rt = Runtime(get_settings())
    results = evaluate(rt.index, load_queries(), tuple(methods.split(",")))
    print(markdown(results))
    if out:
        out.write_text(json.dumps({"corpus_version": rt.corpus.version, "embedder": rt.embedder.model_id, "results": results}, indent=2))


@eval_app.command("run")
def run_cmd(dataset: Annotated[list[Path], typer.Option("--dataset", help="JSONL(.gz) file or folder of them (repeatable).")],
            out: Annotated[Path, typer.Option("--out", help="Output folder: predictions.jsonl, metrics.json, report.md, report.html.")],
            mode: Annotated[str, typer.Option(help="fast | full | auto")] = "fast",
            labels: Annotated[str | None, typer.Option(help="Comma-separated labels to score (default: all).")] = None,
            limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
            slice_by: Annotated[str | None, typer.Option("--slice", help="Comma-separated source_labels fields to slice by.")] = None,
            allow_overlap: Annotated[bool, typer.Option(help="Run even if dataset texts are in the classifier's training data.")] = False) -> None:
    """Evaluate the suggestion pipeline on a labelled dataset (the JSONL contract of DESIGN.md)."""
    from rich.progress import Progress

    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.errors import CopilotError
    from copilot.runtime import Runtime
    from eval.datasets import dataset_hash, read_many
    from eval.runner import run
    from eval.service import execute, register

    rt = Runtime(get_settings())
    try:
        if len(dataset) == 1:
            run_id, rows = register(rt, dataset[0], mode, "cli")
            from copilot.store import evalruns

            with rt.database.session() as s:
                evalruns.update(s, run_id, out_dir=str(out.resolve()))
        else:
            run_id, rows = None, read_many(dataset, rt.corpus.taxonomy)
        with Progress() as p:
            task = p.add_task("evaluating", total=len(rows[:limit] if limit else rows))

            def progress(d: int, t: int) -> None:
                p.update(task, completed=d)

            if run_id:
                m = execute(rt, run_id, rows, mode, labels.split(",") if labels else None, limit, allow_overlap,
                            slice_by.split(",") if slice_by else None)
            else:
                m = run(rt, rows, out, mode, labels.split(",") if labels else None, limit, allow_overlap,
                        ",".join(str(d) for d in dataset), dataset_hash(rows), slice_by.split(",") if slice_by else None, progress)
    except CopilotError as exc:
        fail(exc)
    if m is None:
        fail("the evaluation failed; see the log")
    print(f"run {run_id or '-'}: macro F1 {m['macro']['f1']}, flagged AUPRC {m['flagged']['auprc']}, FPR clean {m['flagged']['false_positive_rate_on_clean']}, "
          f"citation precision {m['citations_violating']['precision']}, abstention {m['abstention_rate']}; report: {out / 'report.html'}")


@eval_app.command("compare")
def compare_cmd(run_a: Annotated[Path, typer.Argument(help="Baseline run folder (from `copilot eval run --out`).")],
                run_b: Annotated[Path, typer.Argument(help="Candidate run folder on the same dataset.")],
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per-label F1 deltas (B - A) with paired-bootstrap p-values, and the cases whose labels or citations changed."""
    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.errors import CopilotError
    from copilot.taxonomy import load_taxonomy
    from eval.compare import compare, markdown

    try:
        c = compare(run_a, run_b, load_taxonomy(get_settings().corpus_dir / "taxonomy.yaml"))
    except CopilotError as exc:
        fail(exc)
    print(json.dumps(c, indent=2) if as_json else markdown(c))


@eval_app.command("tune-thresholds")
def tune_cmd(run: Annotated[Path, typer.Argument(help="A run folder on a dev/tuning dataset (never a test set).")],
             out: Annotated[Path, typer.Option("--out", help="Thresholds file to write (use with COPILOT_THRESHOLDS_FILE).")],
             target_precision: Annotated[float | None, typer.Option(help="Lowest threshold reaching this precision per label.")] = None,
             target_recall: Annotated[float | None, typer.Option(help="Highest threshold keeping this recall per label.")] = None,
             best_f1: Annotated[bool, typer.Option("--best-f1", help="The threshold with the best F1 per label.")] = False) -> None:
    """Write a thresholds file for a precision target, a recall target or best F1 per label, from a tuning run's scores.

    Use it on the dev split's run (copilot export-split, then copilot eval run), never on the set you report.
    """
    import numpy as np

    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.taxonomy import load_taxonomy
    from eval.compare import load_run
    from eval.datasets import read_many
    from eval.runner import arrays

    if sum([target_precision is not None, target_recall is not None, best_f1]) != 1:
        fail("give exactly one of --target-precision, --target-recall or --best-f1", 2)
    tax = load_taxonomy(get_settings().corpus_dir / "taxonomy.yaml")
    m, preds = load_run(run)
    rows = read_many([Path(p) for p in m["run"]["dataset"].split(",")], tax)[: len(preds)]
    labels = list(preds[0]["scores"])
    Y, S, _, M, keep = arrays(rows, preds, labels)
    out_thr, notes = {}, {}
    for k, l in enumerate(labels):
        msk = (M[:, k] > 0) & keep
        y, s = Y[msk, k] > 0, S[msk, k]
        cands = np.unique(s)[::-1]
        chosen = None
        best = 0.0
        for t in cands:  # from high to low threshold
            pred = s >= t
            tp = (pred & y).sum()
            prec = tp / max(pred.sum(), 1)
            rec = tp / max(y.sum(), 1)
            if target_precision is not None and prec >= target_precision:
                chosen = float(t)
            if target_recall is not None and rec >= target_recall:
                chosen = float(t)
                break
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            if best_f1 and f1 > best:
                best, chosen = f1, float(t)
        if chosen is None:
            chosen = m["run"]["thresholds"].get(l) or 0.5
            notes[l] = "target not reachable on this run; kept the shipped threshold"
        else:
            # halfway to the next lower score: same predictions on this run, and a score stored rounded (or recomputed
            # with float noise) does not fall on the wrong side of a threshold equal to it
            lower = cands[cands < chosen]
            chosen = (chosen + float(lower[0])) / 2 if len(lower) else chosen - 1e-6
        out_thr[l] = round(chosen, 6)
    target = ("best F1" if best_f1 else f"precision >= {target_precision}" if target_precision is not None
              else f"recall >= {target_recall}")
    out.write_text(json.dumps({"operating_point": f"{target} per label on {m['run']['dataset']}", "thresholds": out_thr, "notes": notes}, indent=2))
    print(f"wrote {out} ({target}); {len(notes)} label(s) kept the shipped threshold")


@eval_app.command("policy-diff")
def policy_diff_cmd(old: Annotated[Path, typer.Option(help="Corpus folder before the edit (e.g. a git worktree of main).")],
                    new: Annotated[Path, typer.Option(help="Corpus folder after the edit.")],
                    dataset: Annotated[list[Path] | None, typer.Option("--dataset", help="Cases to replay (JSONL, repeatable).")] = None,
                    stored: Annotated[bool, typer.Option(help="Also replay the decided cases in the database.")] = True,
                    limit: Annotated[int | None, typer.Option(help="At most N stored cases.")] = None,
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the cases whose suggested labels or citations change between two corpus versions."""
    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.errors import CopilotError
    from copilot.taxonomy import load_taxonomy
    from eval.datasets import read_many
    from eval.policy_diff import markdown, policy_diff

    s = get_settings()
    try:
        rows = read_many(dataset, load_taxonomy(new / "taxonomy.yaml")) if dataset else []
        d = policy_diff(s, old.resolve(), new.resolve(), [(r.id, r.text) for r in rows], stored, limit)
    except CopilotError as exc:
        fail(exc)
    print(json.dumps(d, indent=2) if as_json else markdown(d))


@eval_app.command("agreement")
def agreement_cmd(since: Annotated[str | None, typer.Option(help="ISO date/time, inclusive.")] = None,
                  until: Annotated[str | None, typer.Option(help="ISO date/time, exclusive.")] = None) -> None:
    """Acceptance / edit / override rates and Cohen's kappa between suggestions and moderators (and between moderators)."""
    from datetime import datetime

    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.store.db import Database
    from copilot.taxonomy import load_taxonomy
    from eval.agreement import agreement

    s = get_settings()
    try:
        a, b = (datetime.fromisoformat(since) if since else None), (datetime.fromisoformat(until) if until else None)
    except ValueError as exc:
        fail(f"bad date: {exc}", 2)
    print(json.dumps(agreement(Database.open(s.db_url), load_taxonomy(s.corpus_dir / "taxonomy.yaml").label_names, a, b), indent=2))


@eval_app.command("suite")
def suite_cmd(suite: Annotated[Path, typer.Argument(help="Suite file, e.g. eval/suites/release.yaml.")],
              out: Annotated[Path, typer.Option("--out", help="Folder; each run writes into a subfolder named after it.")],
              allow_overlap: Annotated[bool, typer.Option(help="Run even if dataset texts are in the training data.")] = False) -> None:
    """Run every evaluation of a suite (dataset, mode, labels, slices per run) and print one line per run."""
    from copilot.cli import fail
    from copilot.config import get_settings
    from copilot.errors import CopilotError
    from copilot.runtime import Runtime
    from eval.suites import load_suite, run_suite

    try:
        s = load_suite(suite)
        results = run_suite(Runtime(get_settings()), s, out, allow_overlap)
    except CopilotError as exc:
        fail(exc)
    for name, r in results.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
