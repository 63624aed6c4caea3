"""`copilot eval ...` commands (registered by copilot_cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

eval_app = typer.Typer(help="Offline evaluation: run datasets and suites, measure retrieval, compare runs.", no_args_is_help=True)


@eval_app.command("retrieval")
def retrieval(out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
              methods: Annotated[str, typer.Option(help="Comma-separated: bm25,dense,hybrid")] = "bm25,dense,hybrid") -> None:
    """Recall@1, recall@5 and MRR@10 of each retrieval method on eval/retrieval/queries, overall, per area and per kind."""
    from copilot.config import get_settings
    from copilot.runtime import Runtime
    from eval.retrieval_eval import evaluate, load_queries, markdown

    rt = Runtime(get_settings())
    results = evaluate(rt.index, load_queries(), tuple(methods.split(",")), rt.settings.rrf_k)
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

    rt = Runtime(get_settings())
    try:
        rows = read_many(dataset, rt.corpus.taxonomy)
        with Progress() as p:
            task = p.add_task("evaluating", total=len(rows[:limit] if limit else rows))
            m = run(rt, rows, out, mode, labels.split(",") if labels else None, limit, allow_overlap,
                    ",".join(str(d) for d in dataset), dataset_hash(rows), slice_by.split(",") if slice_by else None,
                    progress=lambda d, t: p.update(task, completed=d))
    except CopilotError as exc:
        fail(exc)
    print(f"macro F1 {m['macro']['f1']}, flagged AUPRC {m['flagged']['auprc']}, FPR clean {m['flagged']['false_positive_rate_on_clean']}, "
          f"citation precision {m['citations_violating']['precision']}, abstention {m['abstention_rate']}; report: {out / 'report.html'}")
